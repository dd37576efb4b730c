"""Search explanations by description: hybrid ranking with filters inside both queries.

Two rankings of the explanations that pass the filters:

- **semantic**: nearest neighbours of the query's all-MiniLM-L6-v2 embedding in the vector
  index: Chroma's query with the filters as its ``where`` clause, or — once :func:`load_scan`
  ran, as the HTTP API does at start-up — an exact in-memory scan over Chroma's vectors with the
  filters as masks (``store/scan.py``; Chroma's filtered query is too slow at 100k entries);
- **keyword**: full-text matches of the query's terms in the SQL store's keyword index (SQLite
  FTS5 with BM25, or PostgreSQL ``ts_rank``), the filters in the same SQL statement — or, once
  :func:`load_scan` ran, FTS5's BM25 over an in-memory copy of the keyword rows with the filters
  as masks (``store/keyword_scan.py``; the SQL query's time grows with the rows a term matches).

They are fused by reciprocal rank fusion (Cormack et al. 2009): ``rrf = Σ 1 / (RRF_K + rank)``
over the rankings that contain the explanation. Each ranking contributes its best
:data:`DEPTH` candidates; pages (``offset``, ``limit``) cut the fused list, so every page of
one query comes from the same candidates. Details are joined from the SQL store (the source of
truth) for the page only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from explainer.collect.corpus import DOMAIN_RE as CORPUS_DOMAIN_RE
from explainer.errors import InputError
from explainer.runtime import get_index, get_store
from explainer.score.registry import SUBJECT_MODEL_SCORERS
from explainer.settings import Settings
from store.keyword import SOURCES
from store.records import finite as _finite
from store.records import highlight

__all__ = [
    "SearchFilters",
    "Ranked",
    "search",
    "search_page",
    "rank",
    "rrf_fuse",
    "load_scan",
    "refresh_scan",
    "MAX_QUERY_CHARS",
    "MAX_LIMIT",
    "DEPTH",
    "RRF_K",
]

MAX_QUERY_CHARS = 500
"""Longest accepted query."""
MAX_LIMIT = 50
"""Largest page."""
DEPTH = 100
"""Candidates taken from each ranking; ``offset + limit`` may not exceed it."""
RRF_K = 60
"""Reciprocal-rank-fusion constant: larger values flatten the difference between ranks."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,199}$")
DOMAIN_RE = CORPUS_DOMAIN_RE
"""A corpus domain as the corpus accepts it (``collect.corpus``): any text of up to 200 characters
without a comma or a control character ("legal docs", "médical")."""


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied inside both rankings. ``None`` means no restriction."""

    model: str | None = None
    """Subject model name as in unit ids, e.g. ``smollm2-135m``."""
    layer: int | None = None
    """Block index of the hookpoint (``layers.L…``)."""
    source: str | None = None
    """Kind of unit (``store.keyword.SOURCES``): ``mlp`` (MLP neurons), ``resid`` (residual stream),
    ``sae`` (SAE/transcoder features), ``directions``, or ``mlp_in``/``mlp_out``/``attn_out``."""
    min_score: float | None = None
    """Lowest simulation score (correlation, −1…1); unscored explanations never pass."""
    domain: str | None = None
    """Corpus domain that must appear among the unit's top-activating windows, e.g. ``legal``."""
    min_intervention: float | None = None
    """Lowest score of the intervention scorer ``intervention_scorer`` (output side: KL-normalised
    gain of the explanation on steered text); explanations without an ok one never pass. Applied to
    the fused ranking from the SQL scores, not inside the indexes."""
    intervention_scorer: str | None = None
    """Which intervention scorer ``min_intervention`` reads and hits show (one of
    :data:`INTERVENTION_SCORERS`; ``None``: the filter reads ``intervention`` and each hit shows the
    first of them it has). One named scorer, never a maximum over all: their scales differ
    (log-probability for ``intervention`` and ``intervention-endpoint``, cosine for
    ``intervention-embedding``)."""

    def validate(self) -> SearchFilters:
        """Raise :class:`InputError` for values no unit can have; returns ``self``."""
        if self.model is not None and not NAME_RE.match(self.model):
            raise InputError(f"invalid model filter {self.model!r}")
        if self.layer is not None and not 0 <= self.layer <= 10_000:
            raise InputError(f"layer must be between 0 and 10000, got {self.layer}")
        if self.source is not None and self.source not in SOURCES:
            raise InputError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InputError(f"min-score must be between -1 and 1, got {self.min_score}")
        if self.domain is not None and not DOMAIN_RE.match(self.domain):
            raise InputError(f"invalid domain filter {self.domain!r}")
        if self.min_intervention is not None and not math.isfinite(self.min_intervention):
            raise InputError(f"min-intervention must be a finite number, got {self.min_intervention}")
        if self.intervention_scorer is not None and self.intervention_scorer not in INTERVENTION_SCORERS:
            raise InputError(
                f"intervention-scorer must be one of {', '.join(INTERVENTION_SCORERS)}, got {self.intervention_scorer!r}"
            )
        return self

    def where(self) -> dict[str, Any] | None:
        """The filters as a Chroma ``where`` clause (metadata written by ``explainer.search.index.index_metadata``)."""
        from store.vectors import chroma_where

        return chroma_where(**self.sql())

    def sql(self) -> dict[str, Any]:
        """The filters as keyword arguments of ``SQLStore.keyword_search`` and ``VectorIndex.query_vector``."""
        out = asdict(self)
        out.pop("min_intervention")
        out.pop("intervention_scorer")
        return out


@dataclass(frozen=True)
class Ranked:
    """One explanation in the fused ranking."""

    explanation_id: str
    rrf: float
    """Reciprocal-rank-fusion score; higher is better."""
    semantic_rank: int | None
    """1-based rank in the semantic ranking, ``None`` if not among its candidates."""
    keyword_rank: int | None
    """1-based rank in the keyword ranking, ``None`` if no query term matched."""
    similarity: float | None
    """Cosine similarity of query and explanation, when the semantic ranking saw it."""


def rrf_fuse(rankings: list[list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of best-first id lists; ties go to the id seen first in the
    earlier ranking."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for r, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + r)
    order = {item: i for i, item in enumerate(dict.fromkeys(x for ranking in rankings for x in ranking))}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def check_query(query: str) -> str:
    """The query, stripped, NUL bytes read as spaces (no SQL store can hold one); :class:`InputError`
    if it is empty or longer than allowed."""
    q = query.replace("\x00", " ").strip()
    if not q:
        raise InputError("the search query is empty")
    if len(q) > MAX_QUERY_CHARS:
        raise InputError(f"the search query is longer than {MAX_QUERY_CHARS} characters")
    return q


def rank(settings: Settings, query: str, filters: SearchFilters = SearchFilters(), depth: int = DEPTH) -> list[Ranked]:
    """The fused ranking of up to ``2 * depth`` explanations that pass ``filters``."""
    q = check_query(query)
    filters.validate()
    index, store = get_index(settings), get_store(settings)
    if index.scan is not None:
        refresh_scan(settings)
    with ThreadPoolExecutor(1) as pool:  # the keyword query runs while the query is embedded
        pending = pool.submit(store.keyword_search, q, limit=depth, **filters.sql())
        vector = index.embedder.embed_query(q)
        semantic = index.query_vector(vector, n=depth, **filters.sql())
        keyword = pending.result()
    sem_rank = {eid: r for r, (eid, _, _) in enumerate(semantic, 1)}
    kw_rank = {eid: r for r, (eid, _) in enumerate(keyword, 1)}
    sim = {eid: round(1.0 - dist, 4) for eid, dist, _ in semantic}
    fused = rrf_fuse([[e for e, _, _ in semantic], [e for e, _ in keyword]])
    if filters.min_intervention is not None:
        causal = intervention_scores(
            settings, [eid for eid, _ in fused], filters.intervention_scorer or INTERVENTION_SCORER
        )
        fused = [(e, f) for e, f in fused if _at_least(causal.get(e), filters.min_intervention)]
    return [Ranked(eid, round(score, 6), sem_rank.get(eid), kw_rank.get(eid), sim.get(eid)) for eid, score in fused]


def refresh_scan(settings: Settings) -> None:
    """Bring the in-memory vector scan (when loaded) up to date with what other processes indexed:
    the SQL store's latest ``indexed_at`` says whether anything changed and which ids to re-read."""
    index, store = get_index(settings), get_store(settings)
    scan = index.scan
    if scan is None:
        return
    token = store.index_token()
    if token is not None and token != scan.token:
        index.refresh_scan(store.indexed_since(scan.token))
        scan.token = token


def load_scan(settings: Settings) -> int:
    """Load the vector index into the in-memory exact scan and the keyword rows into the in-memory BM25
    ranking (the HTTP API does this at start-up); returns the vector scan's size. Until then semantic
    ranking uses Chroma's own filtered query, and keyword ranking the SQL full-text index."""
    index, store = get_index(settings), get_store(settings)
    token = store.index_token()  # read first: what is indexed later is re-read by refresh_scan
    scan = index.scan
    if scan is None:
        store.load_keyword_scan()
        scan = index.load_scan()
        scan.token = token
    return len(scan)


def search_page(
    settings: Settings, query: str, filters: SearchFilters = SearchFilters(), limit: int = 10, offset: int = 0
) -> dict[str, Any]:
    """One page of hits, best first: ``{"hits": [...], "offset", "limit", "next_offset"}``;
    ``next_offset`` is ``None`` on the last page."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0 or offset + limit > DEPTH:
        raise InputError(f"offset + limit must be between 1 and {DEPTH}, got {offset} + {limit}")
    ranked = rank(settings, query, filters)
    page = ranked[offset : offset + limit]
    hits = _hits(settings, page, first_rank=offset + 1, intervention_scorer=filters.intervention_scorer)
    more = len(ranked) > offset + limit and offset + limit < DEPTH
    return {"hits": hits, "offset": offset, "limit": limit, "next_offset": offset + limit if more else None}


def search(
    settings: Settings, query: str, filters: SearchFilters = SearchFilters(), limit: int = 10, offset: int = 0
) -> list[dict[str, Any]]:
    """Hits ranked by the fused semantic and keyword rankings, best first."""
    return search_page(settings, query, filters, limit, offset)["hits"]


INTERVENTION_SCORER = "intervention"
"""The intervention scorer the ``min_intervention`` filter reads unless told another."""
INTERVENTION_SCORERS: tuple[str, ...] = tuple(
    sorted(SUBJECT_MODEL_SCORERS, key=lambda n: (n != INTERVENTION_SCORER, n))
)
"""The intervention scorers, ``intervention`` first: the order in which a hit shows the first it has."""


def _at_least(value: float | None, floor: float) -> bool:
    return value is not None and value >= floor


def intervention_scores(
    settings: Settings, explanation_ids: list[str], scorer: str = INTERVENTION_SCORER
) -> dict[str, float | None]:
    """explanation id → its ok score (output side) from the intervention scorer ``scorer``, where it has one."""
    return {
        s.explanation_id or "": _finite(s.value)
        for s in get_store(settings).scores_for(explanation_ids)
        if s.scorer == scorer and s.status == "ok"
    }


def _shown_intervention(scores: Iterable[Any], scorer: str | None) -> tuple[float | None, str | None]:
    """(value, scorer) of the intervention score a hit shows: ``scorer``'s, or with none named the
    first ok one in :data:`INTERVENTION_SCORERS` order; ``(None, None)`` when there is none."""
    ok = {x.scorer: _finite(x.value) for x in scores if x.scorer in INTERVENTION_SCORERS and x.status == "ok"}
    for name in (scorer,) if scorer else INTERVENTION_SCORERS:
        if ok.get(name) is not None:
            return ok[name], name
    return None, None


GOOD_MATCH_SIMILARITY = 0.3
"""A hit whose explanation shares no keyword with the query and whose embedding is less similar than
this (cosine, all-MiniLM-L6-v2) is a ``weak`` match: the closest there is, not an answer."""


def _hits(
    settings: Settings, page: list[Ranked], first_rank: int = 1, intervention_scorer: str | None = None
) -> list[dict[str, Any]]:
    """Hit views of ranked explanations, joined from the SQL store; each shows the intervention score
    of ``intervention_scorer`` (with none named, the first it has) and which scorer that was."""
    from explainer.score.meaning import discrimination_words, score_kind, score_meaning
    from explainer.score.registry import measured_discrimination
    from store.keyword import SEARCH_SCORER, hookpoint_fields
    from store.records import parse_unit_id

    details = get_store(settings).explanation_details([r.explanation_id for r in page])
    discrimination = measured_discrimination()
    out = []
    for i, r in enumerate(page):
        d = details.get(r.explanation_id)
        if d is None or d.explanation.status != "ok":
            continue  # the index lags behind SQL; `explainer check` reports it
        e = d.explanation
        model, hookpoint, _ = parse_unit_id(e.unit_id)
        layer, source = hookpoint_fields(hookpoint)
        s = max(d.scores, key=lambda x: (x.status == "ok", x.scorer == SEARCH_SCORER), default=None)
        rec = d.record
        causal, causal_scorer = _shown_intervention(d.scores, intervention_scorer)
        top = rec.windows_for("explain", "top") if rec is not None else []
        unit_max = rec.stats.max if rec is not None else 0.0
        out.append(
            {
                "rank": first_rank + i,
                "unit_id": e.unit_id,
                "unit_name": rec.name if rec is not None else None,
                "explanation_id": r.explanation_id,
                "explanation": e.text,
                "explainer_model": e.explainer_model,
                "collection_id": e.collection_id,
                "model": model,
                "hookpoint": hookpoint,
                "layer": layer,
                "source": source,
                "score": None
                if s is None or s.status != "ok" or _finite(s.value) is None
                else {
                    "scorer": s.scorer,
                    "value": _finite(s.value),
                    "ci95": [_finite(s.ci_low), _finite(s.ci_high)],
                    "per_domain": {k: _finite(v) for k, v in s.per_domain.items()},
                    "meaning": score_meaning(s.value, s.ci_low, s.ci_high, kind=score_kind(s.details))["words"],
                    "scorer_discrimination": discrimination_words(discrimination.get(s.scorer)),
                },
                "intervention_score": causal,
                "intervention_scorer": causal_scorer,
                "explanation_source": "baseline" if (e.settings or {}).get("selected") == "baseline" else "llm",
                "match": "good"
                if r.keyword_rank is not None or (r.similarity or 0.0) >= GOOD_MATCH_SIMILARITY
                else "weak",
                "similarity": r.similarity,
                "semantic_rank": r.semantic_rank,
                "keyword_rank": r.keyword_rank,
                "rrf": r.rrf,
                "stats": None
                if rec is None
                else {
                    "max": _finite(rec.stats.max),
                    "mean": _finite(rec.stats.mean),
                    "density": _finite(rec.stats.density),
                },
                "top_example": highlight(top[0], unit_max) if top else None,
                "top_example_tokens": token_levels(top[0], unit_max) if top else None,
            }
        )
    return out


def token_levels(window: Any, unit_max: float) -> list[dict[str, Any]]:
    """Tokens of a window with their activation on the 0–10 scale of the unit's maximum."""
    from store.records import scale_0_10

    return [{"text": t, "level": lv} for t, lv in zip(window.tokens, scale_0_10(window.activations, unit_max))]
