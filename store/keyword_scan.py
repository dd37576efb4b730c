"""An in-memory keyword ranking (BM25) over the SQL store's keyword rows, with the search filters inside it.

Why: the SQL full-text query (SQLite FTS5 ``bm25``, PostgreSQL ``ts_rank``) scores every row that
holds a query term before it can sort them. A query with a common term touches a good share of the
rows, so its time grows with the index: 14 ms at 100,000 explanations on this project's 2-core
machine, and about ten times that at a million. Here each term's postings (the rows holding it and
how often) are numpy arrays: a query adds each of its terms' BM25 weights into one array, zeroes the
rows the filters reject (the masks of :class:`store.scan.FilterColumns`, shared with the vector scan)
and selects the best rows with ``argpartition``.

The ranking is FTS5's: the same BM25 (``k1`` 1.2, ``b`` 0.75, ``idf = ln((N − n + 0.5) / (n + 0.5))``
floored at 1e-6, document length in tokens) over the same terms. ASCII text is split as FTS5's
``unicode61`` tokenizer splits it (runs of letters and digits, lower-cased) and stemmed by the Porter
algorithm (PyStemmer's ``porter``, the C Snowball implementation: the maintained library for it, and
fast enough to stem a million explanations at load), words of fewer than 3 or more than 64 letters
left as they are, as FTS5's ``porter`` leaves them. Other text — where ``unicode61``'s own Unicode
tables decide which marks fold and which characters are letters — is tokenized by SQLite itself, in
an in-memory FTS5 table read back through ``fts5vocab``. Ties are broken by explanation id, as the
SQL query breaks them. ``tests/store/test_keyword_scan.py`` checks the tokens (4,000 words of this
repository and words of nine scripts) and the rankings against FTS5's.

On PostgreSQL the SQL ranking is ``ts_rank`` over the English text-search configuration; this scan
ranks by the BM25 above whatever the database, so a PostgreSQL deployment's search ranks its keyword
candidates by BM25 once the scan is loaded (``explainer serve`` loads it at start-up).

Rows are append-only: a rewritten explanation gets a new row and its old one dies (the masks skip
dead rows, and document frequencies count live rows only); the postings are compacted when dead rows
reach a fifth of them. The scan is a cache of the SQL keyword rows, which stay the source of truth:
triggers log every insert, update and delete of a keyword row (``keyword_changes``), and each query
first re-reads the rows logged since the last (``SQLStore.refresh_keyword_scan``), so what any process
writes is ranked by the next search.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from store.scan import FilterColumns

__all__ = ["KeywordScan", "tokens", "stem"]

K1 = 1.2
B = 0.75
MIN_STEM = 3
"""Words shorter than this are not stemmed (as FTS5's ``porter`` tokenizer leaves them)."""
MAX_STEM = 64
"""Nor are words longer than this."""

_WORD_RE = re.compile(r"[^\W_]+")
_stemmer_lock = threading.Lock()
_stemmer: Any = None
_stems: dict[str, str] = {}


def stem(word: str) -> str:
    """The Porter stem of one lower-case, diacritic-free word (cached: vocabularies are small)."""
    global _stemmer
    hit = _stems.get(word)
    if hit is not None:
        return hit
    if not MIN_STEM <= len(word) <= MAX_STEM:
        return word
    with _stemmer_lock:
        if _stemmer is None:
            import Stemmer

            _stemmer = Stemmer.Stemmer("porter")
        out = str(_stemmer.stemWord(word))
    if len(_stems) < 1_000_000:
        _stems[word] = out
    return out


def tokens(text: str) -> list[str]:
    """The terms of ``text`` as FTS5's ``porter unicode61`` tokenizer makes them: ASCII text here (runs of
    letters and digits, lower-cased, Porter-stemmed), any other text by SQLite's own tokenizer, whose
    Unicode rules (which marks it folds, which characters are letters, lengths in bytes) are its own."""
    if text.isascii():
        return [stem(w) for w in _WORD_RE.findall(text.lower())]
    return _sqlite_tokens(text)


_local = threading.local()


def _sqlite_tokens(text: str) -> list[str]:
    """FTS5's tokens of ``text``, read back from an in-memory FTS5 table (one per thread) through
    ``fts5vocab``; the row is rolled back, so the table stays empty."""
    con = getattr(_local, "fts5", None)
    if con is None:
        import sqlite3

        con = sqlite3.connect(":memory:", isolation_level=None)
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61')")
        con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        _local.fts5 = con
    con.execute("BEGIN")
    try:
        con.execute("INSERT INTO t(rowid, x) VALUES (1, ?)", (text,))
        return [term for (term,) in con.execute("SELECT term FROM v ORDER BY offset")]
    finally:
        con.execute("ROLLBACK")


class KeywordScan(FilterColumns):
    """BM25 over the keyword rows' text, the search filters as masks."""

    COMPACT_AT = 0.2
    """Compact the postings when dead rows reach this share of all rows."""

    def __init__(self) -> None:
        super().__init__()
        self.length = np.zeros(0, np.float64)
        """Tokens per row (BM25's document length)."""
        self.total_length = 0.0
        """Tokens over the live rows."""
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        """Per term: (rows holding it, how often), compacted."""
        self._pending: dict[str, tuple[list[int], list[int]]] = {}
        """Per term: postings of rows added since a query last merged them into ``postings``."""
        self.n_dead = 0
        self._lock = threading.Lock()
        self.seq = 0
        """The last number of the SQL change log (``keyword_changes``) applied here."""
        self.seen: set[int] = set()
        """Numbers applied within the re-read window behind ``seq`` (PostgreSQL commits out of order)."""

    def _resize(self, new: int) -> None:
        super()._resize(new)
        self.length = self._grown(self.length, new)

    def put(self, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Insert or replace rows of (explanation id, text, filter metadata as :class:`FilterColumns` reads it)."""
        with self._lock:
            for eid, text, meta in rows:
                old = self.row.get(eid)
                if old is not None and self.alive[old]:
                    self.alive[old] = False
                    self.total_length -= float(self.length[old])
                    self.n_dead += 1
                r = self.row[eid] = len(self.ids)
                self._grow(r + 1)
                self.ids.append(eid)
                self._set(r, meta)
                terms = tokens(text)
                self.length[r] = len(terms)
                self.total_length += len(terms)
                counts: dict[str, int] = {}
                for t in terms:
                    counts[t] = counts.get(t, 0) + 1
                for t, c in counts.items():
                    rows_, tfs = self._pending.setdefault(t, ([], []))
                    rows_.append(r)
                    tfs.append(c)
            if self.n_dead > self.COMPACT_AT * max(1, len(self.ids)):
                self._compact()

    def remove(self, ids: list[str]) -> None:
        with self._lock:
            for eid in ids:
                r = self.row.pop(eid, None)
                if r is not None and self.alive[r]:
                    self.alive[r] = False
                    self.total_length -= float(self.length[r])
                    self.n_dead += 1
            if self.n_dead > self.COMPACT_AT * max(1, len(self.ids)):
                self._compact()

    def _merge_pending(self) -> None:
        for t, (rows, tfs) in self._pending.items():
            new = (np.asarray(rows, np.int32), np.asarray(tfs, np.float32))
            have = self.postings.get(t)
            self.postings[t] = (
                new if have is None else (np.concatenate([have[0], new[0]]), np.concatenate([have[1], new[1]]))
            )
        self._pending = {}

    def _compact(self) -> None:
        """Drop dead rows: renumber the live ones and rewrite every posting."""
        self._merge_pending()
        n = len(self.ids)
        live = np.flatnonzero(self.alive[:n])
        remap = np.full(max(n, 1), -1, np.int64)
        remap[live] = np.arange(live.size)
        for t, (rows, tfs) in list(self.postings.items()):
            keep = self.alive[rows]
            if not keep.any():
                del self.postings[t]
                continue
            self.postings[t] = (remap[rows[keep]].astype(np.int32), tfs[keep])
        ids = [self.ids[i] for i in live]
        cols = [self.alive, self.model, self.layer, self.source, self.score, self.length, *self.domains.values()]
        packed = [c[live] for c in cols]
        self.alive, self.model, self.layer, self.source, self.score, self.length = packed[:6]
        self.domains = dict(zip(self.domains.keys(), packed[6:]))
        self.ids = ids
        self.row = {eid: i for i, eid in enumerate(ids)}
        self.n_dead = 0

    def top(self, query_terms: list[str], n: int, **filters: Any) -> list[tuple[str, float]]:
        """(explanation id, BM25 relevance) of the ``n`` best rows holding any of ``query_terms`` (free-text
        terms, stemmed here) among those that pass ``filters`` (the keyword arguments of :meth:`mask`),
        best first; ties by explanation id."""
        terms = [t for w in query_terms for t in tokens(w)]  # "running" and "runs" count twice, as in FTS5
        with self._lock:
            if self._pending:
                self._merge_pending()
            n_rows = len(self.ids)
            live_rows = n_rows - self.n_dead
            if n <= 0 or not terms or live_rows <= 0:
                return []
            m = self.mask(**filters)
            avg = self.total_length / live_rows
            acc = np.zeros(n_rows, np.float64)
            for t in terms:
                post = self.postings.get(t)
                if post is None:
                    continue
                rows, tf32 = post
                df = int(np.count_nonzero(self.alive[rows]))  # live rows holding the term, filtered or not
                if df == 0:
                    continue
                idf = max(math.log((live_rows - df + 0.5) / (df + 0.5)), 1e-6)
                keep = m[rows]  # the filters (and liveness) before any arithmetic
                rows = rows[keep]
                tf = tf32[keep].astype(np.float64)  # BM25 in double precision, as FTS5 computes it
                norm = K1 * (1.0 - B + B * self.length[rows] / avg)
                acc[rows] += idf * tf * (K1 + 1.0) / (tf + norm)
            hits = np.flatnonzero(acc)
            if hits.size > n:
                kth = np.partition(acc[hits], hits.size - n)[hits.size - n]
                hits = hits[acc[hits] >= kth]  # every row tied with the n-th, so ties break by id below
            best = sorted((-float(acc[r]), self.ids[r]) for r in hits)[:n]
            return [(eid, -neg) for neg, eid in best]
