"""Model loading: what a first load of the packaged GGUF prints, and the bar filter behind it."""

import sys

import pytest
from tqdm import tqdm

from explainer.collect import models


def test_the_bar_filter_drops_tqdm_redraws_and_passes_other_text_on(capsys):
    with models._no_library_bar():
        for _ in tqdm(range(50), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        print("a warning the library printed", file=sys.stderr)
    err = capsys.readouterr().err
    assert err == "a warning the library printed\n"


def test_the_bar_filter_passes_text_on_when_the_load_fails(capsys):
    with pytest.raises(RuntimeError), models._no_library_bar():
        print("why it failed", file=sys.stderr)
        raise RuntimeError("boom")
    assert capsys.readouterr().err == "why it failed\n"


@pytest.mark.slow
def test_a_first_load_of_the_packaged_gguf_prints_no_bar(capsys, model_cache):
    """The dequantising load (no cache yet) leaves stderr to the one-line notes of the CLI."""
    source = models.resolve_model("smollm2-135m")
    loaded = models._load(source, "cpu")
    assert loaded.model.config.num_hidden_layers == 30
    assert (model_cache / models._gguf_cache_dir(source).name / "config.json").is_file()  # the dequantised copy
    err = capsys.readouterr().err
    assert "%|" not in err and "de-quantizing" not in err, err
