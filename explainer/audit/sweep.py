"""The layer sweep: ``explainer audit --layers 0-29``.

Where in the network does a failure become readable? For every layer of the range, the audit's
statistic (MLP neuron contributions at ``layers.L.mlp``, as ``--layer L``) is taken from one forward
pass per batch of cases that stops at the deepest layer; then, per layer, the pooled L1 probe is
fitted on the training split (the audit's split: stratified by domain and label, same seed) and its
held-out AUROC is given with a bootstrap interval, pooled and per domain, with the number of units
it keeps. Written as ``sweep.json``, ``sweep.md``, ``sweep.html`` (with an SVG plot of AUROC by
layer) and ``sweep.pdf``; the best layer is the one to audit in full.

Per class, too: the classes of ``explainer directions make`` (each label, and ``label@DOMAIN`` for
each usable domain when there are several). At each layer a class's direction is its mean-difference
direction on the training split (the class's mean statistic minus the mean of the other cases of its
group: the whole set, or its domain) and its curve is the one-vs-rest held-out AUROC of the
projection on it, with a bootstrap interval. With two labels a ``pass`` curve is its ``fail`` curve
(the direction and the ranking flip together); the per-domain classes are where curves differ. A
class with fewer than :data:`MIN_HELD_OUT` held-out cases of either side is left out with the reason.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from explainer.audit.cases import MIN_PER_CLASS, Case, CaseSetError, case_set_hash, read_cases, usable_domains

MAX_LAYERS = 256
PDF_CLASS_COLUMNS = 4
MIN_HELD_OUT = 3
"""Fewest held-out cases of a class, and of the rest of its group, for the class to get a curve."""


def parse_layers(text: str, n_layers: int | None = None) -> list[int]:
    """``0-29``, ``3,7,11`` or ``0-11,20`` → sorted distinct layers; a clear error otherwise."""
    layers: set[int] = set()
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d{1,4})(?:-(\d{1,4}))?", part)
        if not m:
            raise CaseSetError(f"--layers {text!r}: expected a range like 0-29 or a list like 3,7,11")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise CaseSetError(f"--layers {text!r}: {lo}-{hi} is an empty range")
        layers.update(range(lo, hi + 1))
    if len(layers) > MAX_LAYERS:
        raise CaseSetError(f"--layers {text!r}: {len(layers)} layers; at most {MAX_LAYERS}")
    if n_layers is not None and max(layers) >= n_layers:
        raise CaseSetError(f"--layers {text!r}: the model has {n_layers} layers (0-{n_layers - 1})")
    return sorted(layers)


def sweep_statistics(lm: Any, layers: list[int], cases: list[Case], batch: int) -> dict[int, np.ndarray]:
    """Per layer, ``[cases, neurons]`` contributions averaged over the answers: one pass per batch."""
    from explainer.audit.stats import answer_means, case_batches, unit_space
    from explainer.collect.hooks import capture_each

    spaces = {layer: unit_space(lm, f"layers.{layer}.mlp") for layer in layers}
    by_name = {s.hookpoint.name: (layer, s) for layer, s in spaces.items()}
    rows: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for ids, mask, positions in case_batches(lm, cases, batch):

        def consume(hp: Any, acts: Any, positions: list[list[int]] = positions) -> None:
            layer, space = by_name[hp.name]
            rows[layer] += answer_means(lm, space, acts, positions)

        capture_each(lm.model, [s.hookpoint for s in spaces.values()], ids, mask, consume)
    return {layer: np.stack(r) for layer, r in rows.items()}


def layer_sweep(
    lm: Any,
    cases_path: str | Path,
    layers_spec: str,
    *,
    test_frac: float = 0.3,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    bootstrap: int = 500,
    batch: int = 8,
) -> dict[str, Any]:
    """The sweep document (see the module docstring)."""
    from explainer.audit.probe import auroc_ci, fit_probe, split
    from explainer.collect.hooks import decoder_layers

    cases = read_cases(cases_path)
    usable, warnings = usable_domains(cases, min_per_class)
    layers = parse_layers(layers_spec, len(decoder_layers(lm.model)))
    y = np.array([int(c.failed) for c in cases])
    dom = np.array([c.domain for c in cases])
    test = split(dom, y, test_frac, seed)
    if len(set(y[~test].tolist())) < 2 or len(set(y[test].tolist())) < 2:
        raise CaseSetError("the held-out split lost a class; give more cases")
    classes, left_out = sweep_classes(cases, usable, test)
    stats = sweep_statistics(lm, layers, cases, batch)
    rows: list[dict[str, Any]] = []
    for layer in layers:
        x = stats[layer]
        probe = fit_probe(x[~test], y[~test], seed=seed)
        z = probe.decision(x)
        rows.append(
            {
                "layer": layer,
                "hookpoint": f"layers.{layer}.mlp",
                "units": int(x.shape[1]),
                "nonzero_units": int(len(probe.nonzero)),
                "C": probe.C,
                "pooled": auroc_ci(y[test], z[test], n=bootstrap, seed=seed),
                "per_domain": {
                    d: auroc_ci(y[test & (dom == d)], z[test & (dom == d)], n=bootstrap, seed=seed) for d in usable
                },
                "classes": {
                    name: class_auroc(x, member, group, test, bootstrap=bootstrap, seed=seed)
                    for name, member, group in classes
                },
            }
        )
    best = max(rows, key=lambda r: (r["pooled"]["auroc"] or 0.0, -r["layer"]))
    class_best = {
        name: max(rows, key=lambda r: (r["classes"][name]["auroc"] or 0.0, -r["layer"]))["layer"]
        for name, _, _ in classes
    }
    return {
        "model": lm.name,
        "statistic": "contribution",
        "cases": len(cases),
        "case_set": str(cases_path),
        "case_set_sha256": case_set_hash(cases),
        "test_frac": test_frac,
        "seed": seed,
        "domains": usable,
        "warnings": warnings,
        "layers": rows,
        "best_layer": best["layer"],
        "classes": [name for name, _, _ in classes],
        "classes_left_out": left_out,
        "class_best_layer": class_best,
    }


def sweep_classes(
    cases: list[Case], usable: list[str], test: np.ndarray
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[dict[str, str]]]:
    """The classes of ``explainer directions make`` as ``(name, member mask, group mask)`` — each
    label over the whole set, then ``label@DOMAIN`` within each usable domain when there are several
    — and those left out (fewer than :data:`MIN_HELD_OUT` held-out cases of either side), with why."""
    labels = np.array([c.label for c in cases])
    dom = np.array([c.domain for c in cases])
    groups: list[tuple[str, np.ndarray]] = [("", np.ones(len(cases), bool))]
    groups += [(f"@{d}", dom == d) for d in usable if len(usable) > 1]
    kept, left_out = [], []
    for suffix, group in groups:
        for lab in sorted(set(labels[group].tolist())):
            name, member = f"{lab}{suffix}", labels == lab
            n_in, n_out = int((test & group & member).sum()), int((test & group & ~member).sum())
            if min(n_in, n_out) < MIN_HELD_OUT:
                left_out.append(
                    {
                        "class": name,
                        "reason": f"{n_in} held-out {name} case(s) against {n_out} other(s) of its group "
                        f"(needs {MIN_HELD_OUT} of each)",
                    }
                )
            else:
                kept.append((name, member, group))
    return kept, left_out


def class_auroc(
    x: np.ndarray, member: np.ndarray, group: np.ndarray, test: np.ndarray, *, bootstrap: int, seed: int
) -> dict[str, Any]:
    """A class's one-vs-rest held-out AUROC (with its bootstrap interval) along its mean-difference
    direction on the training split: the class's mean minus the mean of the rest of its group."""
    from explainer.audit.probe import auroc_ci

    xs = x.astype(np.float64)
    train = group & ~test
    direction = xs[train & member].mean(0) - xs[train & ~member].mean(0)
    held = group & test
    out = auroc_ci(member[held].astype(int), xs[held] @ direction, n=bootstrap, seed=seed)
    return {**out, "held_out": [int((held & member).sum()), int((held & ~member).sum())]}


def _fmt(a: Any) -> str:
    return "–" if a is None else f"{a:.3f}"


def _table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["layer", "held-out AUROC [95%]", *doc["domains"], "units kept"]
    rows = []
    for r in doc["layers"]:
        lo, hi = r["pooled"]["ci"]
        ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
        rows.append(
            [str(r["layer"]), _fmt(r["pooled"]["auroc"]) + ci]
            + [_fmt(r["per_domain"][d]["auroc"]) for d in doc["domains"]]
            + [f"{r['nonzero_units']} of {r['units']}"]
        )
    return header, rows


def to_markdown(doc: dict[str, Any]) -> str:
    header, rows = _table(doc)
    out = [
        f"# Layer sweep: {doc['model']}",
        "",
        f"{doc['cases']} cases ({doc['case_set']}); the pooled L1 probe on MLP neuron contributions per layer, "
        f"held-out AUROC ({doc['test_frac']:.0%} held out). Best layer: **{doc['best_layer']}**.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "```",
        *[
            f"{r['layer']:3d} {'#' * round(40 * (r['pooled']['auroc'] or 0))} {_fmt(r['pooled']['auroc'])}"
            for r in doc["layers"]
        ],
        "```",
    ]
    if doc.get("classes") or doc.get("classes_left_out"):
        header, rows = _class_table(doc)
        out += ["", "## Per class", "", _class_intro(doc), ""]
        if doc["classes"]:
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(r) + " |" for r in rows]
        out += [f"- left out: {c['class']}: {c['reason']}" for c in doc["classes_left_out"]]
    out += ["", "Warnings:", *[f"- {w}" for w in doc["warnings"]]] if doc["warnings"] else []
    return "\n".join(out) + "\n"


def _class_intro(doc: dict[str, Any]) -> str:
    best = ", ".join(f"{c} at layer {layer}" for c, layer in doc["class_best_layer"].items())
    return (
        "Each class's mean-difference direction on the training split (its mean minus the mean of the rest of "
        "its group), one-vs-rest held-out AUROC [95% bootstrap interval] per layer. With two labels a `pass` "
        "curve is its `fail` curve by construction; the per-domain classes are where curves differ."
        + (f" Best layer per class: {best}." if best else "")
    )


def _class_table(doc: dict[str, Any], classes: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    names = doc["classes"] if classes is None else classes
    rows = []
    for r in doc["layers"]:
        cells = [str(r["layer"])]
        for c in names:
            a = r["classes"][c]
            lo, hi = a["ci"]
            cells.append(_fmt(a["auroc"]) + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""))
        rows.append(cells)
    return ["layer", *names], rows


COLOURS = ["#2f9e55", "#b05a2f", "#8a3bb0", "#b0982f", "#2fa6b0", "#b02f6f", "#5a5a5a", "#6fb02f"]


def _svg(doc: dict[str, Any]) -> str:
    series = [("pooled", "#2f6fb0", "", [(r["layer"], r["pooled"]["auroc"]) for r in doc["layers"]])]
    for i, d in enumerate(doc["domains"]):
        pts = [(r["layer"], r["per_domain"][d]["auroc"]) for r in doc["layers"]]
        series.append((d, COLOURS[i % len(COLOURS)], "", pts))
    return _plot(doc, series, "held-out AUROC by layer")


def _class_svg(doc: dict[str, Any]) -> str:
    """One line per class: a colour per group (all cases, each domain: the colours of the pooled and
    per-domain plot), solid for ``fail``, dashed for ``pass`` (drawn over its ``fail`` twin, which it
    equals with two labels), dotted for any other label."""
    colour = {"": "#2f6fb0"} | {d: COLOURS[i % len(COLOURS)] for i, d in enumerate(doc["domains"])}  # as _svg's
    dash = {"fail": "", "pass": "6 4"}
    series = []
    for c in doc["classes"]:
        lab, _, g = c.partition("@")
        pts = [(r["layer"], r["classes"][c]["auroc"]) for r in doc["layers"]]
        series.append((c, colour[g], dash.get(lab, "2 3"), pts))
    return _plot(doc, series, "held-out AUROC of each class's direction by layer")


def _plot(doc: dict[str, Any], series: list[tuple[str, str, str, list[tuple[int, Any]]]], label: str) -> str:
    w, h, pad = 640, 220, 36
    layers = [r["layer"] for r in doc["layers"]]
    lo, hi = min(layers), max(layers)

    def px(layer: int) -> float:
        return pad + (w - 2 * pad) * ((layer - lo) / (hi - lo) if hi > lo else 0.5)

    def py(a: float) -> float:
        return h - pad - (h - 2 * pad) * a

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="{html.escape(label)}">']
    parts.append(f'<line x1="{pad}" y1="{py(0.5)}" x2="{w - pad}" y2="{py(0.5)}" stroke="#bbb" stroke-dasharray="4"/>')
    for name, colour, dash, pts in series:
        path = " ".join(f"{px(x):.1f},{py(a):.1f}" for x, a in pts if a is not None)
        style = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{style} points="{path}">'
            f"<title>{html.escape(name)}</title></polyline>"
        )
    parts.append(f'<text x="{pad}" y="{h - 8}" font-size="11">layer {lo}</text>')
    parts.append(f'<text x="{w - pad}" y="{h - 8}" font-size="11" text-anchor="end">layer {hi}</text>')
    parts.append(
        f'<text x="4" y="{py(1.0) + 4}" font-size="11">1.0</text><text x="4" y="{py(0.5) + 4}" font-size="11">0.5</text>'
    )
    parts.append("</svg>")
    legend = " · ".join(
        f'<svg width="28" height="10"><line x1="0" y1="5" x2="28" y2="5" stroke="{c}" stroke-width="2"'
        + (f' stroke-dasharray="{d}"' if d else "")
        + f"/></svg> {html.escape(n)}"
        for n, c, d, _ in series
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    table = "<table border=1 cellpadding=4><tr>" + "".join(f"<th>{e(x)}</th>" for x in header) + "</tr>"
    return table + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"


def to_html(doc: dict[str, Any]) -> str:
    e = html.escape
    table = _html_table(*_table(doc))
    warn = "".join(f"<li>{e(w)}</li>" for w in doc["warnings"])
    classes = ""
    if doc.get("classes") or doc.get("classes_left_out"):
        classes = f"<h2>Per class</h2><p>{e(_class_intro(doc).replace('`', ''))}</p>"
        if doc["classes"]:
            classes += _class_svg(doc) + _html_table(*_class_table(doc))
        left = "".join(f"<li>{e(c['class'])}: {e(c['reason'])}</li>" for c in doc["classes_left_out"])
        classes += f"<p>Left out:</p><ul>{left}</ul>" if left else ""
    return (
        f"<!doctype html><meta charset=utf-8><title>Layer sweep</title><h1>Layer sweep: {e(doc['model'])}</h1>"
        f"<p>{doc['cases']} cases; held-out AUROC of the pooled probe per layer. Best layer: <b>{doc['best_layer']}</b>.</p>"
        + _svg(doc)
        + table
        + classes
        + (f"<h2>Warnings</h2><ul>{warn}</ul>" if warn else "")
    )


def write_sweep(doc: dict[str, Any], out: str | Path) -> dict[str, str]:
    from explainer.report.document import Document, Para, Table, render_document_pdf

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: folder / f"sweep.{k}" for k in ("json", "md", "html", "pdf")}
    files["json"].write_text(json.dumps(doc, indent=1), encoding="utf-8")
    files["md"].write_text(to_markdown(doc), encoding="utf-8")
    files["html"].write_text(to_html(doc), encoding="utf-8")
    header, rows = _table(doc)
    blocks: list[Any] = [Table(header, rows, title="Held-out AUROC by layer")]
    if doc.get("classes") or doc.get("classes_left_out"):
        blocks.append(Para(_class_intro(doc)))
        names = doc["classes"]
        for start in range(0, len(names), PDF_CLASS_COLUMNS):  # a few classes per table: A4 is narrow
            chunk = names[start : start + PDF_CLASS_COLUMNS]
            blocks.append(
                Table(*_class_table(doc, chunk), title=f"Held-out AUROC by layer, per class: {', '.join(chunk)}")
            )
        blocks += [Para(f"Left out: {c['class']}: {c['reason']}") for c in doc["classes_left_out"]]
    pdf = Document(
        f"Layer sweep: {doc['model']}",
        f"{doc['cases']} cases · best layer {doc['best_layer']}",
        [*blocks, *[Para(w) for w in doc["warnings"]]],
    )
    files["pdf"].write_bytes(render_document_pdf(pdf))
    return {k: str(v) for k, v in files.items()}
