"""Search queries embedded through the ONNX export of the sentence model: the same vectors as torch."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from explainer.errors import ConfigError
from explainer.settings import load_settings
from store.embedding import LocalEmbedder, OnnxQueryModel

QUERIES = [
    "closing parentheses in Python code",
    "the word 'the' before a capitalised name",
    "médical 日本語 🎉 e-mail",
    "x",
    "numbers inside a dotted version " * 60,  # past the model's 256 tokens: truncated the same way
]


def test_onnx_query_vectors_equal_torch(tmp_path):
    onnx = LocalEmbedder(query_runtime="onnx", cache_dir=tmp_path)
    torch_ = LocalEmbedder(query_runtime="torch")
    for q in QUERIES:
        a, b = np.array(onnx.embed_query(q)), np.array(torch_.embed_query(q))
        assert a.shape == (384,)
        assert np.abs(a - b).max() < 1e-5, q
        assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    # the two runtimes rank stored vectors the same way
    docs = np.array(torch_.embed(["Python function names", "license warranty text", "version numbers like 3.11"]))
    for q in QUERIES[:3]:
        assert list(np.argsort(-(docs @ np.array(onnx.embed_query(q))))) == list(
            np.argsort(-(docs @ np.array(torch_.embed_query(q))))
        )


def test_export_is_cached_and_reused(tmp_path, monkeypatch):
    model = LocalEmbedder()._load()
    path = OnnxQueryModel.export(model, tmp_path)
    assert path.is_file() and path.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    import torch

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert OnnxQueryModel.export(model, tmp_path) == path


def test_missing_onnx_package_is_one_clear_error(tmp_path, monkeypatch):
    model = LocalEmbedder()._load()
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with pytest.raises(RuntimeError, match="needs the onnx package.*EXPLAINER_QUERY_EMBED=torch"):
        OnnxQueryModel.export(model, tmp_path / "empty")


def test_setting_and_constructor_checks(tmp_path):
    assert load_settings({"EXPLAINER_DATA_DIR": str(tmp_path)}).query_embed == "onnx"
    assert load_settings({"EXPLAINER_DATA_DIR": str(tmp_path), "EXPLAINER_QUERY_EMBED": "torch"}).query_embed == "torch"
    with pytest.raises(ConfigError, match="EXPLAINER_QUERY_EMBED must be one of onnx, torch, got 'tf'"):
        load_settings({"EXPLAINER_DATA_DIR": str(tmp_path), "EXPLAINER_QUERY_EMBED": "tf"})
    with pytest.raises(ValueError, match="query_runtime must be one of"):
        LocalEmbedder(query_runtime="tf")
    with pytest.raises(ValueError, match="needs a cache directory"):
        LocalEmbedder(query_runtime="onnx")


def test_search_embeds_queries_with_the_configured_runtime(settings):
    from explainer.runtime import get_index

    embedder = get_index(settings).embedder
    assert embedder.query_runtime == "onnx" and embedder.cache_dir == settings.model_cache


def test_a_damaged_cached_export_is_exported_again(tmp_path):
    model = LocalEmbedder()._load()
    path = OnnxQueryModel.export(model, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])  # a truncated file, as a full disk leaves it
    onnx = OnnxQueryModel.load(model, tmp_path)
    assert path.is_file() and path.stat().st_size > 1000
    expected = np.array(LocalEmbedder().embed(["python code"])[0])
    assert np.abs(np.array(onnx.embed("python code")) - expected).max() < 1e-5


def test_an_unwritable_cache_is_one_clear_error(tmp_path):
    model = LocalEmbedder()._load()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(
        RuntimeError, match="cannot write the ONNX export.*EXPLAINER_MODEL_CACHE.*EXPLAINER_QUERY_EMBED=torch"
    ):
        OnnxQueryModel.export(model, blocker / "cache")


def test_search_queries_go_through_onnx(searchable, monkeypatch):
    from explainer.runtime import get_index
    from explainer.search.hybrid import search

    calls = []
    original = OnnxQueryModel.embed

    def counted(self, text):
        calls.append(text)
        return original(self, text)

    monkeypatch.setattr(OnnxQueryModel, "embed", counted)
    get_index(searchable).embedder.forget_queries()
    hits = search(searchable, "made-up bibliography entries for scholarly articles", limit=3)
    assert calls == ["made-up bibliography entries for scholarly articles"]
    assert hits and hits[0]["semantic_rank"] == 1
