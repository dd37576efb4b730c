"""The JSON rendering of a report, following ``schemas/report.schema.json`` (see the README's
"Audit reports" section for every field). Non-finite floats become ``null``."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from explainer.report.model import (
    DOMAIN_DROP,
    LOW_SCORE,
    MIN_ACTIVATING_WINDOWS,
    MIN_TOP_WINDOWS,
    SCHEMA_VERSION,
    STRONG,
    WIDE_INTERVAL,
    ReportEntry,
    ReportExplanation,
    ReportMeta,
    ReportScore,
)
from explainer.report.text import has_text, histogram_data, strong_tokens, unit_max, window_groups
from explainer.report.warnings import explanation_warnings, report_warnings
from store.records import Window, finite, scale_0_10

__all__ = ["report_json"]


def _jsonable(x: object) -> object:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, datetime):
        return x.isoformat()
    return x


def _score_json(s: ReportScore) -> dict[str, Any]:
    return {
        "scorer": s.scorer,
        "status": s.status,
        "value": finite(s.value),
        "ci95": [finite(s.ci_low), finite(s.ci_high)],
        "per_domain": {d: finite(v) for d, v in sorted(s.per_domain.items())},
        "simulator_model": s.simulator_model,
        "n_tokens": s.n_tokens,
        "heldout_window_ids": list(s.heldout_ids),
        "created_at": s.created_at,
        "error": s.error,
        "discrimination": s.discrimination,
        "details": s.details or {},
    }


def _prompt_json(prompt: str | None, provenance: dict[str, Any] | None) -> dict[str, Any] | None:
    if provenance and provenance.get("prompt"):
        return provenance["prompt"]
    if not prompt:
        return None
    name, _, rest = prompt.partition("@")
    version, _, h = rest.partition("#")
    return {"name": name, "version": version or None, "sha256": h or None}


def _explanation_json(e: ReportExplanation, primary: bool) -> dict[str, Any]:
    return {
        "id": e.explanation_id,
        "primary": primary,
        "status": e.status,
        "text": e.text if has_text(e) else None,
        "error": e.error,
        "source": e.source,
        "imported": e.imported.to_dict() if e.imported else None,
        "explainer_model": e.explainer_model,
        "prompt": _prompt_json(e.prompt, e.provenance),
        "created_at": e.created_at,
        "scores": [_score_json(s) for s in e.scores],
        "workflow_domains": [
            {
                "domain": c.domain,
                "corpus": c.corpus,
                "corpus_hash": c.corpus_hash,
                "collection_id": c.collection_id,
                **_score_json(c.score),
            }
            for c in e.calibrations
        ],
        "warnings": [{"code": c, "message": m} for c, m in explanation_warnings(e)],
        "provenance": e.provenance,
    }


def _window_json(w: Window, umax: float) -> dict[str, Any]:
    return {
        "id": w.window_id,
        "kind": w.kind,
        "split": w.split,
        "domain": w.domain,
        "doc_id": w.doc_id,
        "quantile": w.quantile,
        "max": finite(w.max_activation),
        "tokens": list(w.tokens),
        "activations": [finite(a) for a in w.activations],
        "levels": scale_0_10(w.activations, umax),
        "firing": strong_tokens(w, umax),
    }


def _unit_json(e: ReportEntry) -> dict[str, Any]:
    r, umax = e.record, unit_max(e.record)
    st = r.stats
    return {
        "unit_id": r.unit_id,
        "model": r.model,
        "hookpoint": r.hookpoint,
        "index": r.index,
        "name": r.name,
        "collection_id": e.collection_id,
        "skip_reason": r.skip_reason,
        "output_side": e.output_side,
        "steering_effect": e.steering_effect,
        "stats": {
            "max": finite(st.max),
            "mean": finite(st.mean),
            "std": finite(st.std),
            "density": finite(st.density),
            "n_tokens": st.n_tokens,
            "quantiles": [finite(q) for q in st.quantiles],
        },
        "histogram": histogram_data(r),
        "explanation": e.explanation if has_text(e) else None,
        "explanation_status": e.explanation_status,
        "explanations": [_explanation_json(x, i == 0) for i, x in enumerate(e.explanations())],
        "warnings": [{"code": c, "message": m} for c, m in report_warnings(e)],
        "windows": [_window_json(w, umax) for _, ws in window_groups(r) for w in ws],
    }


def report_json(entries: list[ReportEntry], meta: ReportMeta | None = None) -> dict:
    """The JSON report (``schemas/report.schema.json``); non-finite floats become ``None``."""
    from explainer.provenance import software_version

    meta = meta or ReportMeta()
    units = [_unit_json(e) for e in entries]
    note = meta.note if meta.note is not None else (None if units else "No units.")
    return _jsonable(
        {  # type: ignore[return-value]
            "schema_version": SCHEMA_VERSION,
            "title": meta.title,
            "generated_at": meta.generated_at,
            "generator": {
                "name": "activation-explainer",
                "version": software_version(),
                "via": meta.generated_by or None,
            },
            "selection": meta.selection,
            "note": note,
            "thresholds": {
                "low_score": LOW_SCORE,
                "wide_interval": WIDE_INTERVAL,
                "min_top_windows": MIN_TOP_WINDOWS,
                "min_activating_windows": MIN_ACTIVATING_WINDOWS,
                "domain_drop": DOMAIN_DROP,
                "firing_share_of_max": STRONG,
            },
            "units": units,
        }
    )
