"""An exact, filter-aware nearest-neighbour scan over a copy of the vector index, held in memory.

Why: Chroma evaluates a ``where`` filter against its metadata store before searching, and at
100,000 explanations that took 120–740 ms per filtered query on a busy 2-core machine (unfiltered
HNSW queries took ~14 ms). Here each filter is a boolean mask over a numpy column, applied to
the similarities before the top-k selection (so the filter is part of the query, never applied
to its results), and the scan over 100k × 384 float32 vectors took 17–24 ms at p50 on the same busy machine.

The scan is a cache of the Chroma collection (ids, embeddings, filter metadata); Chroma stays
the store. :class:`store.vectors.VectorIndex` fills it, patches it on its own writes and
refreshes it from Chroma for ids that others wrote.

At scale (:data:`ANN_MIN_ROWS` rows and more) an approximate index serves the queries whose
filters let many rows through: a FAISS inverted-file index (``IndexIVFFlat``, inner product,
about √n lists), searched with the filter mask as its ID selector, so the filter is applied
inside the search, never to its results. How many lists a query visits grows as its filter gets
more selective (16 / √fraction). Queries whose filters pass at most :data:`EXACT_BELOW` rows,
rows written after the index was built, and rows rewritten since, are scanned exactly and merged.
The index is rebuilt when those rows reach a fifth of it. FAISS was chosen over a hand-written
IVF: it is the field's maintained library for this (wheels for CPU on PyPI), with filtered search
built in. Measured by ``make bench-search`` (recall@10 against this exact scan).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from store.keyword import SOURCES as _SOURCES

SOURCES: dict[str, int] = {name: i for i, name in enumerate(_SOURCES)}

ANN_MIN_ROWS = 50_000
"""Below this many rows the exact scan answers every query (a few ms)."""
EXACT_BELOW = 20_000
"""A query whose filters pass at most this many rows is scanned exactly, whatever the size."""
BASE_PROBES = 16
"""Lists an unfiltered query visits; a filter passing a fraction f of rows visits 16 / √f."""


class FilterColumns:
    """Rows of (id, metadata) with a numpy column per search filter, and :meth:`mask` over them: what
    the in-memory vector scan and the in-memory keyword ranking (``store/keyword_scan.py``) share.
    Metadata is the vector index's (``model``, ``layer``, ``source``, ``score``, ``domains``)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.row: dict[str, int] = {}
        self.alive = np.zeros(0, bool)
        self.model = np.zeros(0, np.int32)
        self.layer = np.zeros(0, np.int32)
        self.source = np.zeros(0, np.int8)
        self.score = np.zeros(0, np.float32)
        self.models: dict[str, int] = {}
        self.domains: dict[str, np.ndarray] = {}
        self.token: Any = None
        """What the owner last synchronised to (e.g. the SQL store's latest ``indexed_at``)."""

    def __len__(self) -> int:
        return int(self.alive[: len(self.ids)].sum())

    @property
    def capacity(self) -> int:
        return int(self.alive.shape[0])

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        self._resize(max(need, 2 * self.capacity, 1024))

    @staticmethod
    def _grown(a: np.ndarray, new: int) -> np.ndarray:
        b = np.zeros((new,) + a.shape[1:], a.dtype)
        b[: a.shape[0]] = a
        return b

    def _resize(self, new: int) -> None:
        """Grow every per-row column to ``new`` rows (subclasses grow theirs too)."""
        self.alive, self.model = self._grown(self.alive, new), self._grown(self.model, new)
        self.layer, self.source = self._grown(self.layer, new), self._grown(self.source, new)
        self.score = self._grown(self.score, new)
        self.domains = {d: self._grown(col, new) for d, col in self.domains.items()}

    def _set(self, r: int, meta: dict[str, Any]) -> None:
        """Row ``r`` alive, with ``meta``'s filter values."""
        self.alive[r] = True
        self.model[r] = self.models.setdefault(str(meta.get("model")), len(self.models))
        self.layer[r] = int(meta.get("layer", -1))
        self.source[r] = SOURCES.get(str(meta.get("source")), -1)
        self.score[r] = float(meta.get("score", -2.0))
        mine = set(meta.get("domains") or ())
        for d in mine - self.domains.keys():
            self.domains[d] = np.zeros(self.capacity, bool)
        for d, col in self.domains.items():
            col[r] = d in mine

    def remove(self, ids: list[str]) -> None:
        for eid in ids:
            r = self.row.get(eid)
            if r is not None:
                self.alive[r] = False

    def mask(
        self,
        model: str | None = None,
        layer: int | None = None,
        source: str | None = None,
        min_score: float | None = None,
        domain: str | None = None,
    ) -> np.ndarray:
        """Rows that pass every given filter."""
        n = len(self.ids)
        m = self.alive[:n].copy()
        if model is not None:
            code = self.models.get(model)
            m &= self.model[:n] == code if code is not None else False
        if layer is not None:
            m &= self.layer[:n] == layer
        if source is not None:
            m &= self.source[:n] == SOURCES.get(source, -2)
        if min_score is not None:
            m &= self.score[:n] >= min_score
        if domain is not None:
            col = self.domains.get(domain)
            m &= col[:n] if col is not None else False
        return m


class VectorScan(FilterColumns):
    """Rows of (id, unit vector, metadata) with numpy columns for the search filters."""

    def __init__(self, dim: int = 384):
        super().__init__()
        self.metas: list[dict[str, Any]] = []
        """Each row's metadata, as a query returns it."""
        self.dim = dim
        self.mat = np.zeros((0, dim), np.float32)
        self.ann_state: tuple[Any, int] | None = None
        """(FAISS inverted-file index, rows it covers: ``[0, rows)``), once :meth:`build_ann` made it;
        one attribute, so a query never sees the index of one build with the row count of another."""
        self.stale = np.zeros(0, bool)
        """Rows under ``ann_rows`` rewritten since the index was built (scanned exactly)."""
        self.n_stale = 0
        self._building = threading.Lock()

    @property
    def ann(self) -> Any:
        """The approximate index, if any."""
        return None if self.ann_state is None else self.ann_state[0]

    @property
    def ann_rows(self) -> int:
        """Rows the approximate index covers."""
        return 0 if self.ann_state is None else self.ann_state[1]

    def _resize(self, new: int) -> None:
        super()._resize(new)
        self.mat, self.stale = self._grown(self.mat, new), self._grown(self.stale, new)

    def put(self, ids: list[str], vectors: Any, metadatas: list[dict[str, Any]]) -> None:
        """Insert or replace rows."""
        vecs = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._grow(len(self.ids) + len(ids))
        for i, eid in enumerate(ids):
            r = self.row.get(eid)
            if r is None:
                r = self.row[eid] = len(self.ids)
                self.ids.append(eid)
                self.metas.append({})
            elif r < self.ann_rows and not self.stale[r]:
                self.stale[r] = True  # the approximate index holds its old vector
                self.n_stale += 1
            self.mat[r] = vecs[i]
            self.metas[r] = metadatas[i] or {}
            self._set(r, self.metas[r])

    def top(self, vector: Any, n: int, **filters: Any) -> list[tuple[str, float, dict[str, Any]]]:
        """(id, cosine distance, metadata) of the ``n`` rows nearest to ``vector`` among those that
        pass ``filters`` (the keyword arguments of :meth:`mask`), nearest first."""
        m = self.mask(**filters)
        v = np.asarray(vector, dtype=np.float32)
        if self.ann is not None and n > 0:
            if len(self.ids) - self.ann_rows + self.n_stale > self.ann_rows // 5 and self._building.acquire(False):
                try:  # one query pays for it; queries meanwhile use the old index and the exact scan
                    self.build_ann()
                finally:
                    self._building.release()
            if self.ann is not None and int(np.count_nonzero(m)) > EXACT_BELOW:
                hits = self._top_ann(v, n, m)
                if hits is not None:
                    return hits
        return self._top_exact(v, n, m)

    def _top_exact(self, v: np.ndarray, n: int, m: np.ndarray) -> list[tuple[str, float, dict[str, Any]]]:
        rows = np.flatnonzero(m)
        if n <= 0 or rows.size == 0:
            return []
        if rows.size * 4 < len(self.ids):  # selective filter: score only the rows that pass
            sims = self.mat[rows] @ v
        else:
            sims = (self.mat[: len(self.ids)] @ v)[rows]
        k = min(n, rows.size)
        part = np.argpartition(-sims, k - 1)[:k] if k < rows.size else np.arange(rows.size)
        order = part[np.argsort(-sims[part], kind="stable")]
        return [(self.ids[rows[i]], float(1.0 - sims[i]), self.metas[rows[i]]) for i in order]

    def _top_ann(self, v: np.ndarray, n: int, m: np.ndarray) -> list[tuple[str, float, dict[str, Any]]] | None:
        """The approximate search inside the filter, merged with the exact scan of the rows the index
        does not hold as they are now; ``None`` when it found fewer rows than the filter passes and
        ``n`` asks for (the caller scans exactly then)."""
        import faiss

        if self.ann_state is None:
            return None
        ann, covered = self.ann_state
        inside = m[:covered] & ~self.stale[:covered]
        frac = max(float(np.count_nonzero(inside)) / max(1, covered), 1e-6)
        nlist = int(ann.nlist)
        bitmap = np.packbits(inside, bitorder="little")
        selector = faiss.IDSelectorBitmap(covered, faiss.swig_ptr(bitmap))  # both kept alive through the search
        params = faiss.SearchParametersIVF()
        params.sel = selector
        params.nprobe = min(nlist, max(BASE_PROBES, int(BASE_PROBES / math.sqrt(frac))))
        sims, rows = ann.search(v[None], n, params=params)
        found = {int(r): float(s) for r, s in zip(rows[0], sims[0]) if r >= 0}
        outside = np.flatnonzero(m[covered:]) + covered
        rewritten = np.flatnonzero(m[:covered] & self.stale[:covered])
        extra = np.concatenate([outside, rewritten])
        if extra.size:
            for r, s in zip(extra, self.mat[extra] @ v):
                found[int(r)] = float(s)
        if len(found) < min(n, int(np.count_nonzero(m))):
            return None
        best = sorted(found.items(), key=lambda rs: (-rs[1], rs[0]))[:n]
        return [(self.ids[r], 1.0 - s, self.metas[r]) for r, s in best]

    def build_ann(self, nlist: int | None = None, min_rows: int = ANN_MIN_ROWS) -> bool:
        """(Re)build the approximate index over every row when there are at least ``min_rows``;
        returns whether one was built. Training takes about 12 s at 1M rows on 2 cores."""
        import faiss

        n = len(self.ids)
        if n < max(min_rows, 1):
            self.ann_state = None
            return False
        lists = nlist or max(16, min(4096, int(math.sqrt(n))))
        rng = np.random.default_rng(0)
        sample = self.mat[np.sort(rng.choice(n, size=min(n, 40 * lists), replace=False))]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.add(self.mat[:n])
        self.ann_state = (index, n)
        self.stale[:] = False
        self.n_stale = 0
        return True
