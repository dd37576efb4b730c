"""Render a report in one of its four formats (secrets scrubbed first) and write it."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from dataclasses import replace

from explainer.errors import InputError
from explainer.provenance import scrub
from explainer.report.model import FORMATS, ReportEntry, ReportExplanation, ReportMeta, ReportScore
from explainer.report.to_html import render_html
from explainer.report.to_json import report_json
from explainer.report.to_markdown import render_markdown
from explainer.report.to_pdf import render_pdf


def schema_path() -> pathlib.Path:
    """The JSON Schema of :func:`explainer.report.to_json.report_json` (shipped as package data)."""
    return pathlib.Path(__file__).resolve().parent / "schemas" / "report.schema.json"


def _scrub_score(s: ReportScore, secrets: Sequence[str]) -> ReportScore:
    return replace(s, error=scrub(s.error, secrets), details=scrub(s.details, secrets))


def _scrub_explanation(x: ReportExplanation, secrets: Sequence[str]) -> ReportExplanation:
    """A copy of a :class:`ReportExplanation` with secrets scrubbed from every free text that came
    from an LLM, an error or a settings mapping."""
    e = x.explanation
    return replace(
        x,
        explanation=None if e is None else replace(e, text=scrub(e.text, secrets), error=scrub(e.error, secrets)),
        scores=tuple(_scrub_score(s, secrets) for s in x.scores),
        calibrations=tuple(replace(c, score=_scrub_score(c.score, secrets)) for c in x.calibrations),
        provenance=scrub(x.provenance, secrets),
    )


def _scrub_entry(x: ReportEntry, secrets: Sequence[str]) -> ReportEntry:
    return replace(
        x, main=_scrub_explanation(x.main, secrets), others=tuple(_scrub_explanation(o, secrets) for o in x.others)
    )


def scrub_report(
    entries: list[ReportEntry], meta: ReportMeta, secrets: Sequence[str]
) -> tuple[list[ReportEntry], ReportMeta]:
    """Entries and metadata with ``secrets`` (the values of secret environment variables: API keys,
    tokens, passwords, :attr:`explainer.settings.Settings.secrets`) and URL credentials replaced by
    ``[redacted]``, wherever they might have been stored (an LLM error message, a settings mapping, a query)."""
    return (
        [_scrub_entry(e, secrets) for e in entries],
        replace(
            meta,
            note=scrub(meta.note, secrets),
            selection=scrub(meta.selection, secrets),
            title=scrub(meta.title, secrets),
        ),
    )


def render_report(
    entries: list[ReportEntry], fmt_: str, meta: ReportMeta | None = None, *, secrets: Sequence[str]
) -> bytes:
    """The report in one of :data:`FORMATS`, as bytes (UTF-8 text, or a PDF file); ``secrets`` are
    scrubbed first (:func:`scrub_report`)."""
    entries, meta = scrub_report(list(entries), meta or ReportMeta(), secrets)
    if fmt_ == "html":
        return render_html(entries, meta).encode("utf-8")
    if fmt_ == "md":
        return render_markdown(entries, meta=meta).encode("utf-8")
    if fmt_ == "json":
        return (json.dumps(report_json(entries, meta), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode()
    if fmt_ == "pdf":
        return render_pdf(entries, meta)
    raise InputError(f"unknown report format {fmt_!r}; choose one of {', '.join(FORMATS)}")


def write_report(
    entries: list[ReportEntry],
    path: str | pathlib.Path,
    fmt_: str,
    meta: ReportMeta | None = None,
    *,
    secrets: Sequence[str],
) -> pathlib.Path:
    """Render and write a report (``secrets`` scrubbed), creating parent directories."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory: give -o a file name, e.g. {p / ('report.' + fmt_)}")
    data = render_report(entries, fmt_, meta, secrets=secrets)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write the report to {p}: {exc.strerror or exc}") from exc
    return p


def output_format(output: str | None, fmt_: str | None) -> str:
    """The format of a report written to ``output``: ``fmt_`` when given, else the file's suffix,
    else ``html``. A suffix that names no format, or another format than ``fmt_``, is refused rather
    than written under a misleading name (``-o x.docx`` would be HTML)."""
    suffix = pathlib.Path(output).suffix.lstrip(".").lower() if output else ""
    aliases = {"htm": "html", "markdown": "md"}
    suffix = aliases.get(suffix, suffix)
    if fmt_ is not None and fmt_ not in FORMATS:
        raise InputError(f"unknown report format {fmt_!r}; choose one of {', '.join(FORMATS)}")
    if suffix and suffix not in FORMATS:
        raise InputError(
            f"-o {output}: reports are written as {', '.join(FORMATS)}; '.{suffix}' is none of them "
            "(name the file .html, .md, .json or .pdf)"
        )
    if fmt_ and suffix and suffix != fmt_:
        raise InputError(f"-o {output} says .{suffix} but --format says {fmt_}: make them agree")
    return fmt_ or suffix or "html"
