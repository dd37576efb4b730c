"""The audit report: ``audit.json`` (everything), ``audit.md``, ``audit.html`` and ``audit.pdf`` (for people) —
the per-domain table, the transfer matrix (a heat map in HTML), the selected units, the
intervention curves, the warnings and the provenance."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(ci: Any) -> str:
    if not ci or ci[0] is None:
        return ""
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def _tables(r: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by Markdown and HTML."""
    dom_rows = []
    for d, v in r["domains"].items():
        own = v.get("own_probe") or {}
        pooled = v["pooled_probe"]
        dom_rows.append(
            [
                d,
                str(v["cases"]["fail"]),
                str(v["cases"]["pass"]),
                "yes" if v["usable"] else "no (too few)",
                _f(own.get("auroc")) + _ci(own.get("ci")),
                _f(pooled.get("auroc")) + _ci(pooled.get("ci")),
            ]
        )
    tables = [
        (
            "Per domain (held-out AUROC, 95% bootstrap interval)",
            ["domain", "fail", "pass", "own probe", "own-probe AUROC", "pooled-probe AUROC"],
            dom_rows,
        ),
    ]
    t = r["transfer"]
    if t["domains"]:
        rows = [[f"fit on {d}"] + [_f(v) for v in row] for d, row in zip(t["domains"], t["matrix"], strict=True)]
        tables.append(
            ("Transfer matrix (fit on row, test on column)", [""] + [f"test {d}" for d in t["domains"]], rows)
        )
    s = r["selected_units"]
    explained = s.get("explained") or {}
    if explained:  # `audit --label`: each unit with its explanation, score and strongest evidence
        rows = []
        for u, w in zip(s["ids"][:50], s["weights"][:50], strict=True):
            e = explained.get(u) or {}
            score = e.get("score") or {}
            rows.append(
                [
                    u,
                    f"{w:+.4f}",
                    str(e.get("explanation") or e.get("status") or "not collected"),
                    (f"{score['scorer']} {score['value']:+.3f}: {score['meaning']}" if score else "–"),
                    str(e.get("top_example") or "–"),
                ]
            )
        tables.append(
            (
                f"Selected units ({s['count']} of {s['of']}, share {s['share']:.4%}) with their explanations",
                ["unit", "weight", "explanation", "score", "top example"],
                rows,
            )
        )
    else:
        tables.append(
            (
                f"Selected units ({s['count']} of {s['of']}, share {s['share']:.4%})",
                ["unit", "weight"],
                [[u, f"{w:+.4f}"] for u, w in zip(s["ids"][:50], s["weights"][:50], strict=True)],
            )
        )
    causal = r.get("causal") or {}
    if "selected" in causal:
        rows = []
        control = causal["random"]["curve"] or [None] * len(causal["selected"]["curve"])  # no other unit
        for a, b in zip(causal["selected"]["curve"], control, strict=True):
            rows.append(
                [
                    f"{a['alpha']:g}",
                    _f(a["failure_rate"], 2) + _ci(a["failure_ci"]),
                    _f(b["failure_rate"], 2) + _ci(b["failure_ci"]) if b else "—",
                    _f(a["logp_right"], 2) + _ci(a["logp_ci"]),
                    _f(b["logp_right"], 2) + _ci(b["logp_ci"]) if b else "—",
                ]
            )
        tables.append(
            (
                f"Scaling the units by α on {causal['questions']} held-out questions",
                [
                    "α",
                    "failure rate (selected)",
                    "failure rate (random)",
                    "log P(right) (selected)",
                    "log P(right) (random)",
                ],
                rows,
            )
        )
    return tables


def to_markdown(r: dict[str, Any]) -> str:
    p = r["provenance"]
    lines = [
        "# Failure-mode audit",
        "",
        f"Model `{p['model']}`, hookpoint `{p['unit_space']['hookpoint']}` ({p['unit_space']['statistic']}, "
        f"{p['unit_space']['units']} units); {r['cases']} cases ({r['train']} train, {r['test']} held out).",
        "",
        f"Pooled probe: held-out AUROC {_f(r['pooled']['test']['auroc'])}{_ci(r['pooled']['test']['ci'])}, "
        f"C = {r['pooled']['C']:g}, {r['pooled']['nonzero_units']} units with a non-zero weight.",
        "",
    ]
    rnd = r["random_units"]
    lines += [
        f"Probe on the {rnd['units']} selected units: AUROC {_f(rnd['selected_auroc'])}; on as many random units: "
        f"mean {_f(rnd['random_auroc_mean'])} over {rnd['random_draws']} draws, range {rnd['random_auroc_range']}.",
        "",
    ]
    for title, header, rows in _tables(r):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += inspected_lines(r)
    lines += ["## Warnings", ""] + ([f"- {w}" for w in r["warnings"]] or ["- none"]) + [""]
    lines += ["## Provenance", "", "```json", json.dumps(p, indent=1), "```", ""]
    return "\n".join(lines)


def inspected_lines(r: dict[str, Any]) -> list[str]:
    """Markdown of the most confident held-out failures, each answer token with the explained units
    most active there (``audit --label``)."""
    if not r.get("inspected"):
        return []
    out = ["## The most confident failures, read through the explained units", ""]
    for case in r["inspected"]:
        prompt, response = " ".join(case["prompt"].split()), " ".join(case["response"].split())
        out += [f"**{case['domain']}** (probe logit {case['logit']:+.2f}): {prompt} → {response}", ""]
        for t in case["tokens"]:
            units = (
                "; ".join(f"{u['unit_id']} ({u['level']}/10): {u['explanation']}" for u in t["units"])
                or "no explained unit active"
            )
            out.append(f"- `{t['token']}` — {units}")
        out.append("")
    return out


def _cell(v: str) -> str:
    try:
        x = float(v.split()[0])
    except (ValueError, IndexError):
        return f"<td>{html.escape(v)}</td>"
    if not 0 <= x <= 1:
        return f"<td>{html.escape(v)}</td>"
    red, green = int(255 * (1 - x)), int(255 * x)
    return f'<td style="background: rgba({red},{green},80,0.35)">{html.escape(v)}</td>'


def to_html(r: dict[str, Any]) -> str:
    parts = ["<!doctype html><meta charset=utf-8><title>Failure-mode audit</title>", "<h1>Failure-mode audit</h1>"]
    for title, header, rows in _tables(r):
        heat = title.startswith("Transfer")
        parts.append(f"<h2>{html.escape(title)}</h2><table border=1 cellpadding=4>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            cells = [f"<th>{html.escape(row[0])}</th>"] + [
                _cell(c) if heat else f"<td>{html.escape(c)}</td>" for c in row[1:]
            ]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    if r.get("inspected"):
        parts.append("<h2>The most confident failures, read through the explained units</h2>")
    for case in r.get("inspected") or []:
        parts.append(
            f"<h3>{html.escape(case['domain'])} (probe logit {case['logit']:+.2f})</h3><p>"
            f"{html.escape(case['prompt'].strip())} → <b>{html.escape(case['response'].strip())}</b></p><ul>"
        )
        for t in case["tokens"]:
            units = "; ".join(f"{u['unit_id']} ({u['level']}/10): {u['explanation']}" for u in t["units"])
            parts.append(
                f"<li><code>{html.escape(t['token'])}</code> — {html.escape(units or 'no explained unit active')}</li>"
            )
        parts.append("</ul>")
    parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in r["warnings"]) + "</ul>")
    parts.append(f"<h2>Provenance</h2><pre>{html.escape(json.dumps(r['provenance'], indent=1))}</pre>")
    return "\n".join(parts)


def to_document(r: dict[str, Any]) -> Any:
    """The Markdown report's content as a :class:`explainer.report.document.Document` (for the PDF)."""
    from explainer.report.document import Document, Heading, Para, Pre, Table

    md = to_markdown(r).split("\n")
    intro = [line for line in md[1 : md.index(next(x for x in md if x.startswith("## ")))] if line.strip()]
    blocks: list[Any] = [Para(line.replace("`", "")) for line in intro]
    blocks += [Table(header, rows, title=title) for title, header, rows in _tables(r)]
    for line in inspected_lines(r):
        if line.startswith("## "):
            blocks.append(Heading(line[3:]))
        elif line.strip():
            blocks.append(Para(line.replace("**", "").replace("`", "")))
    blocks += [Heading("Warnings"), *[Para(w) for w in r["warnings"] or ["none"]]]
    blocks += [Heading("Provenance"), Pre(json.dumps(r["provenance"], indent=1))]
    return Document("Failure-mode audit", f"model {r['provenance']['model']}", blocks)


def write_report(r: dict[str, Any], out: Path) -> dict[str, str]:
    from explainer.report.document import render_document_pdf

    files = {
        "json": out / "audit.json",
        "markdown": out / "audit.md",
        "html": out / "audit.html",
        "pdf": out / "audit.pdf",
    }
    files["json"].write_text(json.dumps(r, indent=1, default=str), encoding="utf-8")
    files["markdown"].write_text(to_markdown(r), encoding="utf-8")
    files["html"].write_text(to_html(r), encoding="utf-8")
    files["pdf"].write_bytes(render_document_pdf(to_document(r)))
    return {k: str(v) for k, v in files.items()}
