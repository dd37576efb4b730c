"""The drift report of a re-test, in JSON (the retest document itself), Markdown, HTML or PDF.

Units come sorted by the largest drops; for units that did not hold, the old and new top windows
are shown side by side (strong tokens in «guillemets»); both models are named with their weight
files' sha256.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explainer.errors import InputError

FORMATS = ("json", "md", "html", "pdf")


def _num(x: Any, fmt: str = "+.3f") -> str:
    return "–" if x is None else format(x, fmt)


def _fig(f: dict[str, Any] | None) -> str:
    if not f:
        return "–"
    lo, hi = f["ci95"]
    ci = f" [{_num(lo, '+.2f')}, {_num(hi, '+.2f')}]" if lo is not None and hi is not None else ""
    return f"{_num(f['value'])}{ci}"


def _model_lines(models: dict[str, Any]) -> list[str]:
    lines = []
    for side in ("old", "new"):
        m = models[side]
        files = ", ".join(f"{f['name']} sha256:{f['sha256']}" for f in m.get("files") or []) or "no files recorded"
        lines.append(f"- {side} model: {m.get('name')} ({m.get('given') or 'path not recorded'}) — {files}")
    return lines


def _drift(u: dict[str, Any]) -> str:
    d = u.get("drift")
    if not d:
        return "–"
    return (
        f"max {d['max']['old']:.3g}→{d['max']['new']:.3g}, density {d['density']['old']:.3f}→{d['density']['new']:.3f}"
    )


def _auroc(side: dict[str, Any]) -> str:
    lo, hi = side["ci"]
    return f"{_num(side['auroc'], '.3f')}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")


def _rate(side: dict[str, Any]) -> str:
    return f"TPR {_num(side['tpr'], '.2f')}, FPR {_num(side['fpr'], '.2f')}"


def probe_table(probe: dict[str, Any]) -> tuple[str, list[str], list[str], list[list[str]]]:
    """(title, intro lines, header, rows) of the re-tested probe, shared by every format."""
    s, r = probe["summary"], probe["rules"]
    intro = [
        f"Probe {probe['file']} ({probe['units']} units at {probe['hookpoint']}) on the case set {probe['cases']}"
        + ("" if probe["same_cases_as_audit"] else " — not the case set the audit was fitted on")
        + f": {s['holds']} domain(s) hold, {s['weakened']} weakened, {s['broken']} broken.",
        f"Pooled AUROC {_auroc(probe['pooled']['old'])} on the old model, {_auroc(probe['pooled']['new'])} on the new.",
        f"A domain holds when its AUROC drops by at most {r['auroc_drop']} and the true- and false-positive rates at "
        f"its stored threshold move by at most {r['rate_shift']}; it is broken when the new AUROC's interval reaches "
        "0.5.",
    ]
    header = ["domain", "cases (fail)", "old AUROC", "new AUROC", "old at threshold", "new at threshold", "verdict"]
    rows = [
        [
            d + ("" if v["calibrated_on"] else " (pooled threshold)"),
            f"{v['n']} ({v['fails']})",
            _auroc(v["old"]),
            _auroc(v["new"]),
            _rate(v["old"]),
            _rate(v["new"]) + ("" if v["threshold_calibrated"] else " — moved"),
            v["verdict"],
        ]
        for d, v in probe["domains"].items()
    ]
    return "Failure-mode probe", intro, header, rows


def hookpoint_table(doc: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """Title, header and rows of the whole hookpoint's move per domain (``hookpoint_by_domain``)."""
    rows = [
        [dom, str(d["units"]), _num(d["mean_shift"], ".3f"), _num(d["median_shift"], ".3f"), str(d["dead_now"])]
        for dom, d in (doc.get("hookpoint_by_domain") or {}).items()
    ]
    title = "Every unit of the hookpoint, by the domain of its old top windows (shift: |log2(new max / old max)|)"
    return title, ["domain", "units", "mean shift", "median shift", "dead now"], rows


def render_markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    out = [
        f"# Re-test of {doc['from']} on {doc['models']['new'].get('name')}",
        "",
        f"Hookpoint `{doc['hookpoint']}`, corpus `{doc['corpus']['spec']}`"
        + ("" if doc["corpus"]["same_as_old"] else " (not the old collection's text: old scores recomputed on it)")
        + ".",
        "",
        *_model_lines(doc["models"]),
        "",
        f"**{s['units']} units: {s['holds']} hold, {s['weakened']} weakened, {s['broken']} broken, "
        f"{s['dead']} dead now** (broken share {s['broken_share']:.1%}).",
        "",
    ]
    if doc.get("gate"):
        g = doc["gate"]
        out += [
            f"Gate {', '.join(g['rules'])}: {'FAILED (' + ', '.join(g['failed']) + ')' if g['failed'] else 'passed'}.",
            "",
        ]
    out += ["| domain | units | mean drop | mean shift | broken | dead |", "|---|---|---|---|---|---|"]
    for dom, d in doc["by_domain"].items():
        out.append(
            f"| {dom} | {d['units']} | {_num(d['mean_drop'])} | {_num(d['mean_shift'], '.3f')} | "
            f"{d['broken_share']:.0%} | {d['dead_share']:.0%} |"
        )
    title, header, rows = hookpoint_table(doc)
    if rows:
        out += ["", f"{title}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", "| unit | verdict | scorer | old | new | drop | activations |", "|---|---|---|---|---|---|---|"]
    for u in doc["units"]:
        out.append(
            f"| `{u['unit_id']}` | {u['verdict']} | {u['scorer']} | {_fig(u['old'])} | {_fig(u['new'])} | "
            f"{_num(u['drop'])} | {_drift(u)} |"
        )
    if doc.get("probe"):
        title, intro, header, rows = probe_table(doc["probe"])
        out += ["", f"## {title}", "", *intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    for u in doc["units"]:
        if "evidence" not in u:
            continue
        text = u["explanations"][0]["text"] if u["explanations"] else ""
        out += ["", f"## `{u['unit_id']}` — {u['verdict']}", "", f"Explanation: {text}", ""]
        for side in ("old", "new"):
            out.append(f"{side.capitalize()} model, top windows:")
            out += [f"- ({w['domain']}, max {w['max']:.3g}) {w['text']}" for w in u["evidence"][side]] or ["- none"]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_html(doc: dict[str, Any]) -> str:
    """A self-contained page: the Markdown report's content as HTML tables."""
    e = html.escape
    s = doc["summary"]
    rows = "".join(
        f"<tr class='{e(str(u['verdict']))}'><td><code>{e(u['unit_id'])}</code></td><td>{e(str(u['verdict']))}</td>"
        f"<td>{e(str(u['scorer']))}</td><td>{e(_fig(u['old']))}</td><td>{e(_fig(u['new']))}</td>"
        f"<td>{e(_num(u['drop']))}</td><td>{e(_drift(u))}</td></tr>"
        for u in doc["units"]
    )
    evidence = ""
    for u in doc["units"]:
        if "evidence" not in u:
            continue
        cols = "".join(
            f"<td><b>{side} model</b><ul>"
            + "".join(f"<li>({e(w['domain'])}, max {w['max']:.3g}) {e(w['text'])}</li>" for w in u["evidence"][side])
            + "</ul></td>"
            for side in ("old", "new")
        )
        text = u["explanations"][0]["text"] if u["explanations"] else ""
        evidence += f"<h2><code>{e(u['unit_id'])}</code> — {e(str(u['verdict']))}</h2><p>{e(str(text))}</p>"
        evidence += f"<table><tr>{cols}</tr></table>"
    if doc.get("probe"):
        title, intro, header, prows = probe_table(doc["probe"])
        evidence = (
            f"<h2>{e(title)}</h2>"
            + "".join(f"<p>{e(line)}</p>" for line in intro)
            + "<table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in header)
            + "</tr>"
            + "".join(
                f"<tr class='{e(row[-1])}'>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in prows
            )
            + "</table>"
            + evidence
        )
    title, header, hrows = hookpoint_table(doc)
    hookpoint = (
        f"<h2>{e(title)}</h2><table><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in header)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in hrows)
        + "</table>"
        if hrows
        else ""
    )
    models = "".join(f"<li>{e(line[2:])}</li>" for line in _model_lines(doc["models"]))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Re-test</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
        "table{border-collapse:collapse}.broken,.dead{background:#fde2e2}.weakened{background:#fff4d6}"
        "</style></head><body>"
        f"<h1>Re-test of {e(doc['from'])} on {e(str(doc['models']['new'].get('name')))}</h1>"
        f"<p>Hookpoint <code>{e(doc['hookpoint'])}</code>, corpus <code>{e(doc['corpus']['spec'])}</code>.</p>"
        f"<ul>{models}</ul><p><b>{s['units']} units: {s['holds']} hold, {s['weakened']} weakened, "
        f"{s['broken']} broken, {s['dead']} dead now</b> (broken share {s['broken_share']:.1%}).</p>"
        "<table><tr><th>unit</th><th>verdict</th><th>scorer</th><th>old</th><th>new</th><th>drop</th>"
        f"<th>activations</th></tr>{rows}</table>{hookpoint}{evidence}</body></html>\n"
    )


def drift_document(doc: dict[str, Any]) -> Any:
    """The Markdown report's content as a :class:`explainer.report.document.Document` (for the PDF)."""
    from explainer.report.document import Document, Heading, Para, Table

    s = doc["summary"]
    blocks: list[Any] = [
        Para(
            f"Hookpoint {doc['hookpoint']}, corpus {doc['corpus']['spec']}"
            + ("" if doc["corpus"]["same_as_old"] else " (not the old collection's text: old scores recomputed on it)")
        ),
        *[Para(line[2:]) for line in _model_lines(doc["models"])],
        Para(
            f"{s['units']} units: {s['holds']} hold, {s['weakened']} weakened, {s['broken']} broken, "
            f"{s['dead']} dead now (broken share {s['broken_share']:.1%}).",
            bold=True,
        ),
    ]
    if doc.get("gate"):
        g = doc["gate"]
        failed = "FAILED (" + ", ".join(g["failed"]) + ")" if g["failed"] else "passed"
        blocks.append(Para(f"Gate {', '.join(g['rules'])}: {failed}.", bold=True))
    blocks.append(
        Table(
            ["domain", "units", "mean drop", "mean shift", "broken", "dead"],
            [
                [dom, str(d["units"]), _num(d["mean_drop"]), _num(d["mean_shift"], ".3f")]
                + [f"{d['broken_share']:.0%}", f"{d['dead_share']:.0%}"]
                for dom, d in doc["by_domain"].items()
            ],
            title="By domain",
        )
    )
    title, header, hrows = hookpoint_table(doc)
    if hrows:
        blocks.append(Table(header, hrows, title=title))
    colours = {"broken": "#fde2e2", "dead": "#fde2e2", "weakened": "#fff4d6"}
    blocks.append(
        Table(
            ["unit", "verdict", "scorer", "old", "new", "drop", "activations"],
            [
                [u["unit_id"], str(u["verdict"]), str(u["scorer"]), _fig(u["old"]), _fig(u["new"])]
                + [_num(u["drop"]), _drift(u)]
                for u in doc["units"]
            ],
            title="Units, largest drops first",
            shade={i: colours[u["verdict"]] for i, u in enumerate(doc["units"]) if u["verdict"] in colours},
        )
    )
    if doc.get("probe"):
        title, intro, header, prows = probe_table(doc["probe"])
        blocks += [Heading(title), *[Para(line) for line in intro]]
        blocks.append(Table(header, prows, shade={i: colours[r[-1]] for i, r in enumerate(prows) if r[-1] in colours}))
    for u in doc["units"]:
        if "evidence" not in u:
            continue
        text = u["explanations"][0]["text"] if u["explanations"] else ""
        blocks += [Heading(f"{u['unit_id']} — {u['verdict']}"), Para(f"Explanation: {text}")]
        blocks.append(
            Table(
                ["old model, top windows", "new model, top windows"],
                [
                    [
                        "\n".join(f"({w['domain']}, max {w['max']:.3g}) {w['text']}" for w in u["evidence"][side])
                        or "none"
                        for side in ("old", "new")
                    ]
                ],
            )
        )
    return Document(f"Re-test of {doc['from']} on {doc['models']['new'].get('name')}", "drift report", blocks)


def write_drift_report(doc: dict[str, Any], path: str | Path, fmt: str | None = None, *, secrets: Sequence[str]) -> str:
    """Write ``doc`` to ``path`` as ``fmt`` (default: from the suffix), ``secrets`` scrubbed; returns the format."""
    from explainer.provenance import scrub

    doc = scrub(doc, secrets)
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise InputError(f"drift report format {fmt!r}: use one of {', '.join(FORMATS)} (from -o's suffix)")
    if fmt == "pdf":
        from explainer.report.document import render_document_pdf

        data = render_document_pdf(drift_document(doc))
    elif fmt == "json":
        data = json.dumps(doc, indent=2, default=str).encode("utf-8")
    else:
        data = (render_markdown(doc) if fmt == "md" else render_html(doc)).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return fmt
