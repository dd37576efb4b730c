"""Audit reports of labeled units: the report model, its warnings, JSON and Markdown.

A report holds, per unit, its explanation(s) with every score (scorer, simulator, 95% interval,
per-domain split), workflow-domain calibrations, the top and random windows, the activation
histogram, the provenance of each explanation and the warnings a reader needs. Four renderings
read the same entries: HTML (:mod:`explainer.report_html`, self-contained: nothing is fetched),
Markdown and JSON (here; JSON follows ``schemas/report.schema.json``) and PDF
(:mod:`explainer.report_pdf`). Entries are assembled from the store by
:func:`explainer.views.unit_entries`, their provenance through :mod:`explainer.provenance`
(secret-named settings dropped, URL credentials removed); :func:`render_report` also replaces
the values of secret environment variables wherever they might have been stored.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .records import UnitRecord, Window

__all__ = ["SCHEMA_VERSION", "FORMATS", "ReportScore", "ReportCalibration", "ReportExplanation", "ReportEntry",
           "ReportMeta", "warnings_for", "report_warnings", "histogram_data", "render_html", "write_html",
           "render_markdown", "report_json", "render_report", "write_report", "schema_path", "select_report"]

SCHEMA_VERSION = "1.0"
"""Version of ``schemas/report.schema.json`` that :func:`report_json` follows."""
FORMATS = ("html", "md", "json", "pdf")
LOW_SCORE = 0.2
"""A correlation (simulation scorers) below this explains little of the unit's behaviour."""
LOW_WINDOW_SCORE = 0.6
"""The same for window-level scorers (balanced accuracy, AUROC), where 0.5 is chance."""
WIDE_INTERVAL = 0.5
"""A 95% interval wider than this means too little held-out evidence."""
MIN_TOP_WINDOWS = 3
"""Fewer top windows shown to the explainer than this: the explanation rests on too few examples."""
MIN_ACTIVATING_WINDOWS = 5
"""Fewer windows where the unit fires (max > 0) than this: too little evidence overall."""
DOMAIN_DROP = 0.25
"""A domain (or workflow domain) whose score is this much below the best other one is flagged."""
STRONG = 0.4
"""Tokens at or above this share of the unit's max are marked as firing in text renderings."""


@dataclass(frozen=True)
class ReportScore:
    scorer: str
    """The scoring method, e.g. ``simulation-embedding``."""
    value: float | None
    """The scorer's figure: pooled Pearson correlation over the held-out tokens for simulation
    scorers, balanced accuracy or AUROC for window-level ones; ``None`` if scoring failed."""
    ci_low: float | None
    """Lower end of the bootstrap 95% interval."""
    ci_high: float | None
    """Upper end of the bootstrap 95% interval."""
    per_domain: dict[str, float] = field(default_factory=dict)
    """The same correlation restricted to held-out windows of one corpus domain."""
    status: str = "ok"
    """``ok`` or ``failed``."""
    error: str | None = None
    discrimination: dict[str, float] | None = None
    """This scorer's measured discrimination (``make bench-discrimination``): ``auroc``,
    ``pairs_correct``, ``n_concepts``; ``None`` when it was never measured."""
    simulator_model: str | None = None
    """The model that predicted activations (an LLM, or the embedding model)."""
    n_tokens: int | None = None
    """Held-out tokens scored."""
    heldout_ids: tuple[str, ...] = ()
    """Ids of the held-out windows scored."""
    created_at: str | None = None
    """ISO 8601 time the score was stored."""
    details: dict[str, Any] = field(default_factory=dict)
    """How the score was computed, as the scorer recorded it."""


@dataclass(frozen=True)
class ReportCalibration:
    """An explanation re-scored on a user's own corpus (``explainer calibrate``)."""

    domain: str
    """Workflow domain name, shown as ``workflow domain NAME``."""
    score: ReportScore
    corpus: str | None = None
    corpus_hash: str | None = None
    collection_id: str | None = None


@dataclass(frozen=True)
class ReportExplanation:
    """One explanation of a unit with its scores, calibrations and provenance."""

    explanation_id: str | None
    status: str
    """``ok`` | ``failed`` | ``pending``."""
    text: str | None
    error: str | None
    explainer_model: str | None
    prompt: str | None
    """``name@version#hash8``."""
    source: str | None = None
    """Which candidate was kept: ``llm-0``… or ``baseline`` (the no-LLM explainer)."""
    scores: tuple[ReportScore, ...] = ()
    calibrations: tuple[ReportCalibration, ...] = ()
    provenance: dict[str, Any] | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class ReportEntry:
    """One unit: its record and its primary explanation (the latest ok one), plus the others."""

    record: UnitRecord
    explanation: str | None
    """``None`` when explaining failed (or has not happened yet)."""
    explanation_status: str
    """``ok`` | ``failed`` | ``pending``."""
    explanation_error: str | None
    explainer_model: str | None
    prompt: str | None
    """``name@version#hash8``."""
    scores: tuple[ReportScore, ...] = ()
    explanation_source: str | None = None
    """Which candidate was kept: ``llm-0``… or ``baseline`` (the no-LLM explainer)."""
    explanation_id: str | None = None
    calibrations: tuple[ReportCalibration, ...] = ()
    provenance: dict[str, Any] | None = None
    """Where the primary explanation came from (see the JSON schema's ``provenance``)."""
    others: tuple[ReportExplanation, ...] = ()
    """The unit's other explanations in the same collection (other explainers or prompts)."""
    collection_id: str | None = None
    created_at: str | None = None

    def primary(self) -> ReportExplanation:
        return ReportExplanation(self.explanation_id, self.explanation_status, self.explanation,
                                 self.explanation_error, self.explainer_model, self.prompt, self.explanation_source,
                                 self.scores, self.calibrations, self.provenance, self.created_at)

    def explanations(self) -> list[ReportExplanation]:
        """The primary explanation first, then the others."""
        return [self.primary(), *self.others]


@dataclass(frozen=True)
class ReportMeta:
    """What a report is about: its title, how its units were chosen, and an optional note."""

    title: str = "Activation explanations"
    generated_by: str = ""
    """E.g. ``explainer report`` or ``explainer HTTP API``."""
    selection: dict[str, Any] = field(default_factory=lambda: {"kind": "all"})
    """``kind`` ``units`` | ``query`` | ``run`` | ``all`` with ``unit_ids``, ``query`` and ``filters``, ``run``."""
    note: str | None = None
    """Shown above the units, e.g. why the report is empty."""
    generated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


# ----------------------------------------------------------------------------- helpers

def finite(x: float | None) -> float | None:
    return float(x) if x is not None and isinstance(x, (int, float)) and math.isfinite(x) else None


def fmt(x: float | None) -> str:
    return "—" if finite(x) is None else f"{x:.3f}"


def interval(s: ReportScore) -> str:
    if finite(s.ci_low) is None or finite(s.ci_high) is None:
        return "95% CI —"
    return f"95% CI [{s.ci_low:.3f}, {s.ci_high:.3f}]"


def score_ok(s: ReportScore) -> bool:
    return s.status == "ok" and finite(s.value) is not None


def has_text(e: ReportExplanation | ReportEntry) -> bool:
    status = e.status if isinstance(e, ReportExplanation) else e.explanation_status
    text = e.text if isinstance(e, ReportExplanation) else e.explanation
    return status == "ok" and text is not None


def unit_max(record: UnitRecord) -> float:
    if finite(record.stats.max) is not None and record.stats.max > 0:
        return record.stats.max
    return max((w.max_activation for w in record.windows), default=0.0)


def discrimination_text(s: ReportScore) -> str:
    d = s.discrimination
    if not d:
        return "discrimination not measured"
    return (f"discrimination: AUROC {d['auroc']:.2f}, {d['pairs_correct']:.0%} of right/wrong pairs ranked "
            f"correctly on {int(d.get('n_concepts', 0))} planted concepts")


def score_line(s: ReportScore) -> str:
    """``scorer (simulator): value, 95% CI [lo, hi]; per domain …`` as plain text."""
    sim = f" (simulator {s.simulator_model})" if s.simulator_model else ""
    if not score_ok(s):
        return f"{s.scorer}{sim}: failed: {s.error or 'unknown error'}"
    dom = ", ".join(f"{d} {fmt(v)}" for d, v in sorted(s.per_domain.items()))
    return f"{s.scorer}{sim}: {fmt(s.value)}, {interval(s)}" + (f"; per domain: {dom}" if dom else "")


def calibration_line(c: ReportCalibration) -> str:
    s = c.score
    if not score_ok(s):
        return f"workflow domain {c.domain} ({s.scorer}): failed: {s.error or 'unknown error'}"
    return f"workflow domain {c.domain}: score {fmt(s.value)} ({s.scorer}, {interval(s)})"


def strong_tokens(w: Window, umax: float) -> list[bool]:
    return [umax > 0 and finite(a) is not None and a >= STRONG * umax and bool(t.strip())
            for t, a in zip(w.tokens, w.activations)]


def window_groups(record: UnitRecord) -> list[tuple[str, list[Window]]]:
    """Headings and windows in report order: shown top, held-out top, quantile, random."""
    groups = [("Top windows (shown to explainer)", record.windows_for("explain", "top")),
              ("Top windows (held out)", record.windows_for("heldout", "top")),
              ("Quantile windows", [w for w in record.windows if w.kind == "quantile"]),
              ("Random windows (held out)", record.windows_for("heldout", "random"))]
    return [(h, ws) for h, ws in groups if ws]


def histogram_data(record: UnitRecord, bins: int = 20) -> dict[str, Any]:
    """The unit's activation histogram: the collector's histogram of activating sequences' maxima
    when recorded, else the activations of every token in the kept windows."""
    st = record.stats
    if st.histogram and len(st.histogram_edges) == len(st.histogram) + 1:
        return {"of": "max activation of each activating sequence", "counts": [int(c) for c in st.histogram],
                "edges": [float(e) for e in st.histogram_edges]}
    acts = [a for w in record.windows for a in w.activations if finite(a) is not None]
    if not acts:
        return {"of": "token activations in the kept windows", "counts": [], "edges": []}
    lo, hi = min(acts + [0.0]), max(acts)
    hi = hi if hi > lo else lo + 1.0
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for a in acts:
        counts[min(bins - 1, int((a - lo) / (hi - lo) * bins))] += 1
    return {"of": "token activations in the kept windows", "counts": counts, "edges": edges}


def histogram_axis_label(h: dict[str, Any]) -> str:
    """X-axis caption of a :func:`histogram_data` plot."""
    if h["of"].startswith("max activation"):
        return "activation (raw units; each octave split into four bins)"
    return "activation (raw units)"


# ----------------------------------------------------------------------------- warnings

def _score_warnings(s: ReportScore, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not score_ok(s):
        return [("scoring_failed", f"{prefix}{s.scorer}: scoring failed")]
    low = LOW_WINDOW_SCORE if (s.details or {}).get("kind") == "window" else LOW_SCORE
    if s.value < low:
        out.append(("low_score", f"{prefix}{s.scorer}: score < {low}"))
    lo, hi = finite(s.ci_low), finite(s.ci_high)
    if lo is not None and hi is not None and hi - lo > WIDE_INTERVAL:
        out.append(("wide_interval", f"{prefix}{s.scorer}: interval wider than {WIDE_INTERVAL}"))
    doms = {d: v for d, v in s.per_domain.items() if finite(v) is not None}
    for d, v in sorted(doms.items()):
        others = {o: x for o, x in doms.items() if o != d}
        if not others:
            continue
        best = max(others, key=lambda o: others[o])
        if others[best] - v > DOMAIN_DROP:
            out.append(("domain_drop", f"{prefix}{s.scorer}: in domain '{d}' the score ({v:.2f}) drops well below "
                                       f"'{best}' ({others[best]:.2f}); the explanation may not transfer to '{d}'"))
    return out


def _calibration_warnings(c: ReportCalibration, scores: tuple[ReportScore, ...]) -> list[tuple[str, str]]:
    s = c.score
    if not score_ok(s):
        return [("calibration_failed", f"workflow domain {c.domain} ({s.scorer}): not scored: {s.error or 'failed'}")]
    ref = next((o for o in scores if o.scorer == s.scorer and score_ok(o)), None)
    if ref is None:
        return []
    best = max([ref.value, *[v for v in ref.per_domain.values() if finite(v) is not None]])
    if best - s.value > DOMAIN_DROP:
        return [("domain_drop", f"workflow domain {c.domain}: score {s.value:.2f} ({s.scorer}) drops well below "
                                f"{best:.2f} on the collection corpus; the explanation may not transfer to {c.domain}")]
    return []


def explanation_warnings(e: ReportExplanation) -> list[tuple[str, str]]:
    """(code, message) reasons to distrust one explanation's scores."""
    if not has_text(e):
        return []
    out = [w for s in e.scores for w in _score_warnings(s)]
    for c in e.calibrations:
        out += _calibration_warnings(c, e.scores)
    if e.source == "baseline":
        out.append(("baseline_explanation", "explanation from the no-LLM baseline (most frequent top tokens)"))
    for s in e.scores:
        d = s.discrimination
        if d is None:
            out.append(("discrimination_unmeasured", f"{s.scorer}: discrimination never measured"))
        elif d.get("auroc", 0) < 0.7:
            out.append(("weak_discrimination",
                        f"{s.scorer}: barely tells right from wrong explanations (AUROC {d['auroc']:.2f})"))
    return out


def unit_warnings(record: UnitRecord) -> list[tuple[str, str]]:
    """(code, message) reasons to distrust anything said about the unit: too little evidence."""
    out = []
    n_top = len(record.windows_for("explain", "top"))
    if n_top < MIN_TOP_WINDOWS:
        out.append(("few_top_windows", f"only {n_top} top window(s) shown to explainer"))
    n_act = sum(1 for w in record.windows if w.kind != "random" and w.max_activation > 0)
    if n_act < MIN_ACTIVATING_WINDOWS:
        out.append(("few_activating_windows", f"only {n_act} activating window(s) collected (fewer than "
                                              f"{MIN_ACTIVATING_WINDOWS}): too little evidence"))
    if record.skip_reason:
        out.append(("skipped_unit", f"unit skipped by labeling: {record.skip_reason}"))
    return out


def report_warnings(entry: ReportEntry) -> list[tuple[str, str]]:
    """(code, message) warnings of a unit and its primary explanation, primary's first."""
    scoring = [w for w in explanation_warnings(entry.primary())]
    if has_text(entry) and not entry.scores:
        scoring.append(("unscored", "explanation not scored"))
    return scoring + unit_warnings(entry.record)


def warnings_for(entry: ReportEntry) -> list[str]:
    """Messages of :func:`report_warnings`."""
    return [m for _, m in report_warnings(entry)]


# ----------------------------------------------------------------------------- renderings

def report_json(entries: list[ReportEntry], meta: ReportMeta | None = None) -> dict:
    """The JSON report (``schemas/report.schema.json``); see :mod:`explainer.report_json`."""
    from .report_json import report_json as _report_json

    return _report_json(entries, meta)


def schema_path() -> pathlib.Path:
    """The JSON Schema of :func:`report_json` (shipped as package data)."""
    return pathlib.Path(__file__).resolve().parent / "schemas" / "report.schema.json"


def render_markdown(entries: list[ReportEntry], title: str | None = None, meta: ReportMeta | None = None) -> str:
    """The Markdown report; see :mod:`explainer.report_md`."""
    from .report_md import render_markdown as _render

    return _render(entries, title, meta)


def select_report(settings: Any, **kwargs: Any) -> tuple[list[ReportEntry], ReportMeta]:
    """Entries and metadata of a report; see :func:`explainer.report_select.select_report`."""
    from .report_select import select_report as _select

    return _select(settings, **kwargs)


# ----------------------------------------------------------------------------- dispatch

def render_html(entries: list[ReportEntry], title: str = "Activation explanations", generated_by: str = "",
                meta: ReportMeta | None = None) -> str:
    """One self-contained HTML page (see :mod:`explainer.report_html`)."""
    from .report_html import render_html as _render

    return _render(entries, meta or ReportMeta(title=title, generated_by=generated_by))


def write_html(entries: list[ReportEntry], path: str | pathlib.Path, title: str = "Activation explanations",
               generated_by: str = "") -> pathlib.Path:
    """Render and write the HTML report (UTF-8), creating parent directories."""
    return write_report(entries, path, "html", ReportMeta(title=title, generated_by=generated_by))


def _scrub_score(s: ReportScore, secrets: list[str]) -> ReportScore:
    from .provenance import scrub

    return replace(s, error=scrub(s.error, secrets), details=scrub(s.details, secrets))


def _scrub_explanation(x: Any, secrets: list[str]) -> Any:
    """A copy of a :class:`ReportExplanation` or :class:`ReportEntry` with secrets scrubbed from
    every free text that came from an LLM, an error or a settings mapping."""
    from .provenance import scrub

    common = dict(scores=tuple(_scrub_score(s, secrets) for s in x.scores),
                  calibrations=tuple(replace(c, score=_scrub_score(c.score, secrets)) for c in x.calibrations),
                  provenance=scrub(x.provenance, secrets))
    if isinstance(x, ReportEntry):
        return replace(x, explanation=scrub(x.explanation, secrets), explanation_error=scrub(x.explanation_error, secrets),
                       others=tuple(_scrub_explanation(o, secrets) for o in x.others), **common)
    return replace(x, text=scrub(x.text, secrets), error=scrub(x.error, secrets), **common)


def scrub_report(entries: list[ReportEntry], meta: ReportMeta) -> tuple[list[ReportEntry], ReportMeta]:
    """Entries and metadata with the values of secret environment variables (API keys, tokens,
    passwords) and URL credentials replaced by ``[redacted]``, wherever they might have been
    stored (an LLM error message, a settings mapping, a query)."""
    from .provenance import scrub, secret_values

    secrets = secret_values()
    return ([_scrub_explanation(e, secrets) for e in entries],
            replace(meta, note=scrub(meta.note, secrets), selection=scrub(meta.selection, secrets),
                    title=scrub(meta.title, secrets)))


def render_report(entries: list[ReportEntry], fmt_: str, meta: ReportMeta | None = None) -> bytes:
    """The report in one of :data:`FORMATS`, as bytes (UTF-8 text, or a PDF file); secrets are
    scrubbed first (:func:`scrub_report`)."""
    entries, meta = scrub_report(list(entries), meta or ReportMeta())
    if fmt_ == "html":
        return render_html(entries, meta=meta).encode("utf-8")
    if fmt_ == "md":
        return render_markdown(entries, meta=meta).encode("utf-8")
    if fmt_ == "json":
        return (json.dumps(report_json(entries, meta), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode()
    if fmt_ == "pdf":
        from .report_pdf import render_pdf

        return render_pdf(entries, meta)
    from .errors import InputError

    raise InputError(f"unknown report format {fmt_!r}; choose one of {', '.join(FORMATS)}")


def write_report(entries: list[ReportEntry], path: str | pathlib.Path, fmt_: str,
                 meta: ReportMeta | None = None) -> pathlib.Path:
    """Render and write a report, creating parent directories."""
    data = render_report(entries, fmt_, meta)
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p
