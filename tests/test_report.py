import html
import json
import re
from datetime import UTC, datetime

import jsonschema

from explainer.report.model import ReportCalibration, ReportEntry, ReportExplanation, ReportMeta, ReportScore
from explainer.report.render import schema_path, write_report
from explainer.report.to_html import render_html
from explainer.report.to_json import report_json
from explainer.report.to_markdown import render_markdown
from explainer.report.warnings import report_warnings
from store.records import Explanation, UnitRecord, UnitStats, Window


def validate_report(data: dict) -> None:
    """Validate a JSON report against the published schema (every JSON report the tests make)."""
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(data)


def _win(wid, kind, split, tokens, acts, domain="code"):
    return Window(
        window_id=wid,
        kind=kind,
        split=split,
        doc_id=f"{domain}:doc-{wid}",
        domain=domain,
        tokens=tuple(tokens),
        activations=tuple(acts),
    )


def _record(index, windows):
    return UnitRecord(
        unit_id=f"gpt2/blocks.3.hook_resid_post/{index}",
        model="gpt2",
        hookpoint="blocks.3.hook_resid_post",
        index=index,
        stats=UnitStats(max=4.0, mean=0.25, std=0.5, density=0.125, n_tokens=1000),
        windows=tuple(windows),
    )


def _entry(
    record, text, status="ok", error=None, model="gpt-4o-mini", scores=(), source=None, eid="e1", calibrations=()
):
    """A report entry whose primary explanation (prompt ``explain@1#abcd1234``) has ``scores``."""
    expl = Explanation(
        eid,
        record.unit_id,
        "c1",
        model,
        "explain",
        "1",
        "abcd1234" * 8,
        status,
        text if status == "ok" else None,
        error,
        datetime(2026, 1, 2, tzinfo=UTC),
        settings={"selected": source} if source else {},
    )
    return ReportEntry(record=record, main=ReportExplanation(expl, scores, tuple(calibrations)), collection_id="c1")


def _entries():
    good = _record(
        7,
        [
            _win(
                "top-0",
                "top",
                "explain",
                ["def", " foo", "(", "):", "\n", "    ", "return"],
                [0, 4.0, 1.0, 0, 0, 0, -1.0],
            ),
            _win("top-1", "top", "explain", ["x", " <script>", "&", ' "q"'], [0, 3.0, 2.0, 0]),
            _win("top-2", "top", "explain", ["a", " b"], [2.0, 0]),
            _win("top-3", "top", "heldout", ["def", " bar"], [0, 3.5], domain="docs"),
            _win("quantile-1", "quantile", "heldout", ["class", " Foo"], [0, 1.5]),
            _win("random-0", "random", "heldout", ["the", " cat"], [0, 0], domain="legal"),
        ],
    )
    failed = _record(9, [_win("top-0", "top", "explain", ["z"], [1.0])])
    pending = _record(11, [])
    score = ReportScore(
        scorer="simulation-logits",
        value=0.6123,
        ci_low=0.5,
        ci_high=0.7,
        per_domain={"code": 0.71, "docs": 0.52},
        status="ok",
        discrimination={"auroc": 0.96, "pairs_correct": 0.97, "n_concepts": 24},
    )
    bad_score = ReportScore(
        scorer="simulation-logits",
        value=None,
        ci_low=None,
        ci_high=None,
        per_domain={},
        status="failed",
        error="simulator timed out",
    )
    return [
        _entry(good, "Function names after `def`", scores=(score,)),
        _entry(failed, None, "failed", error="LLM returned <garbage>", scores=(bad_score,)),
        ReportEntry(record=pending),
    ]


def test_html_contains_units_explanations_scores_and_highlights():
    out = render_html(_entries(), ReportMeta(generated_by="explainer 0.1"))
    for e in _entries():
        assert e.record.unit_id in out
    assert "Function names after `def`" in out
    assert "simulation-logits" in out and "0.612" in out
    assert "[0.500, 0.700]" in out
    assert "code 0.710" in out and "docs 0.520" in out
    assert "density 12.50%" in out
    # full-activation token is fully green; raw activation in title
    assert re.search(r'<span class="tok" style="background:rgba\(34,160,60,1\.000\)" title="4"> foo</span>', out)
    assert '<span class="tok" style="background:rgba(34,160,60,0.250)" title="1">(</span>' in out
    # negative activation: no background
    assert '<span class="tok" title="-1">return</span>' in out
    # newline token shown as ↵ followed by a real line break, in a pre-wrap block
    assert "↵\n</span>" in out and "white-space:pre-wrap" in out
    for heading in (
        "Top windows (shown to explainer)",
        "Top windows (held out)",
        "Quantile windows",
        "Random windows (held out)",
    ):
        assert heading in out
    assert "legal:doc-random-0" in out
    assert 'href="#u0-' in out and 'id="u0-' in out
    assert "generated by explainer 0.1" in out


def test_tokens_are_escaped():
    out = render_html(_entries())
    assert "<script>" not in out
    assert " &lt;script&gt;" in out
    assert ">&amp;<" in out
    assert "&quot;q&quot;" in out


def test_failed_explanation_shown_as_failed():
    out = render_html(_entries())
    section = out[out.index('id="u1-') : out.index('id="u2-')]
    assert 'class="failed">failed: LLM returned &lt;garbage&gt;' in section
    assert 'class="expl"' not in section
    assert "failed: simulator timed out" in section
    pending = out[out.index('id="u2-') :]
    assert 'class="pending">pending' in pending and 'class="expl"' not in pending


def test_warning_badges():
    out = render_html(_entries())
    good = out[out.index('id="u0-') : out.index('id="u1-')]
    assert 'class="badge"' not in good  # 3 explain top windows, score 0.61, narrow CI
    failed = out[out.index('id="u1-') : out.index('id="u2-')]
    assert "only 1 top window(s)" in failed
    low = _entry(_entries()[0].record, "x", scores=(ReportScore("simulation-logits", 0.1, -0.3, 0.4, {}, "ok"),))
    out = render_html([low])
    assert "score &lt; 0.2" in out and "interval wider than 0.5" in out
    assert "discrimination never measured" in out and "discrimination not measured" in out


def test_scores_show_their_scorer_discrimination():
    out = render_html(_entries())
    assert "discrimination: AUROC 0.96, 97% of right/wrong pairs ranked correctly on 24 planted concepts" in out
    weak = _entry(
        _entries()[0].record,
        "x",
        source="baseline",
        scores=(
            ReportScore(
                "simulation-logits",
                0.6,
                0.5,
                0.7,
                {},
                "ok",
                discrimination={"auroc": 0.51, "pairs_correct": 0.44, "n_concepts": 8},
            ),
        ),
    )
    out = render_html([weak])
    assert "barely tells right from wrong explanations (AUROC 0.51)" in out
    assert "explanation from the no-LLM baseline" in out and "(source: baseline)" in out
    assert "AUROC 0.51" in render_markdown([weak])


def test_no_external_urls():
    out = render_html(_entries(), ReportMeta(generated_by="test"))
    assert not re.search(r"https?:", out)
    assert "<script" not in out.lower().replace("&lt;script", "")
    assert "<link" not in out and "@import" not in out and "src=" not in out


def test_markdown_and_json_contain_same_units():
    entries = _entries()
    md = render_markdown(entries, title="Report")
    data = report_json(entries)
    json.dumps(data, allow_nan=False)  # plain JSON
    assert data["schema_version"] == "1.0"
    validate_report(data)
    ids = [e.record.unit_id for e in entries]
    assert [u["unit_id"] for u in data["units"]] == ids
    for uid in ids:
        assert uid in md
    assert md.startswith("# Report")
    assert "Function names after \\`def\\`" in md and "failed: LLM returned \\<garbage\\>" in md
    assert data["units"][0]["explanation"] == "Function names after `def`"
    assert data["units"][1]["explanation"] is None
    assert data["units"][1]["explanation_status"] == "failed"
    assert data["units"][0]["explanations"][0]["scores"][0]["value"] == 0.6123


def test_write_html_creates_file(tmp_path):
    path = write_report(_entries(), tmp_path / "nested" / "dir" / "report.html", "html", ReportMeta(title="T"))
    assert path.exists()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>T</title>" in text
    assert _entries()[0].record.unit_id in text


def _scored(per_domain, calibrations=(), windows=None):
    rec = _entries()[0].record if windows is None else _record(7, windows)
    return _entry(
        rec,
        "Function names",
        model="m",
        scores=(
            ReportScore(
                "simulation-embedding",
                0.6,
                0.5,
                0.7,
                per_domain,
                "ok",
                discrimination={"auroc": 0.96, "pairs_correct": 0.97, "n_concepts": 24},
            ),
        ),
        calibrations=calibrations,
    )


def test_domain_drop_says_the_explanation_may_not_transfer():
    codes = dict(report_warnings(_scored({"code": 0.7, "legal": 0.1, "docs": 0.6})))
    assert "in domain 'legal' the score (0.10) drops well below 'code' (0.70)" in codes["domain_drop"]
    assert "may not transfer to 'legal'" in codes["domain_drop"]
    assert "domain_drop" not in dict(report_warnings(_scored({"code": 0.7, "docs": 0.6})))
    assert "may not transfer to 'legal'" in html.unescape(render_html([_scored({"code": 0.7, "legal": 0.1})]))


def test_workflow_domain_is_shown_and_checked_for_a_drop():
    cal = ReportCalibration(
        "support-tickets",
        ReportScore("simulation-embedding", 0.05, -0.1, 0.2, {}, "ok", simulator_model="all-MiniLM-L6-v2"),
        corpus="tickets.txt",
        corpus_hash="ab" * 8,
        collection_id="c2",
    )
    entry = _scored({"code": 0.7}, [cal])
    warnings = dict(report_warnings(entry))
    assert "workflow domain support-tickets" in warnings["domain_drop"]
    assert "may not transfer to support-tickets" in warnings["domain_drop"]
    html = render_html([entry])
    assert "workflow domain support-tickets: score 0.050 (simulation-embedding, 95% CI [-0.100, 0.200])" in html
    assert "workflow domain support-tickets: score 0.050" in render_markdown([entry])
    data = report_json([entry])
    validate_report(data)
    [wd] = data["units"][0]["explanations"][0]["workflow_domains"]
    assert (wd["domain"], wd["value"], wd["corpus"]) == ("support-tickets", 0.05, "tickets.txt")
    failed = ReportCalibration(
        "tickets", ReportScore("simulation-embedding", None, None, None, {}, "failed", error="the unit never fires")
    )
    assert "calibration_failed" in dict(report_warnings(_scored({"code": 0.7}, [failed])))
    close = ReportCalibration("tickets", ReportScore("simulation-embedding", 0.55, 0.4, 0.7, {}, "ok"))
    assert "domain_drop" not in dict(report_warnings(_scored({"code": 0.7}, [close])))


def test_too_few_activating_windows_and_baseline_are_flagged():
    few = [_win(f"top-{i}", "top", "explain", ["a"], [1.0]) for i in range(3)] + [
        _win("random-0", "random", "heldout", ["b"], [2.0])
    ]  # random windows do not count
    codes = dict(report_warnings(_scored({}, windows=few)))
    assert "only 3 activating window(s)" in codes["few_activating_windows"]
    assert "few_top_windows" not in codes


def test_histogram_is_an_inline_svg():
    from dataclasses import replace

    entry = _entries()[0]
    stats = replace(entry.record.stats, histogram=(5, 0, 3, 1), histogram_edges=(1.0, 1.19, 1.41, 1.68, 2.0))
    entry = replace(entry, record=replace(entry.record, stats=stats))
    page = render_html([entry])
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<rect") == 4 and 'height="0.0"' in svg  # one bar per bin
    assert "max activation of each activating sequence" in svg and "http" not in svg
    data = report_json([entry])
    assert data["units"][0]["histogram"]["counts"] == [5, 0, 3, 1]
    validate_report(data)


def test_empty_report_says_so():
    meta = ReportMeta(title="T", note="No units: the query 'zzz' matched no explanation.")
    assert "No units: the query" in render_html([], meta=meta)
    assert "No units: the query" in render_markdown([], meta=meta)
    data = report_json([], meta)
    validate_report(data)
    assert data["units"] == [] and data["note"].startswith("No units")
    assert "No units." in render_html([])


def test_low_score_threshold_follows_the_kind_of_scorer():
    """0.55 is a fair correlation but near chance for balanced accuracy or AUROC (0.5)."""
    from explainer.report.model import ReportScore
    from explainer.report.warnings import _score_warnings

    corr = ReportScore("simulation-embedding", 0.55, 0.5, 0.6, details={"kind": "simulation"})
    window = ReportScore("detection", 0.55, 0.5, 0.6, details={"kind": "window"})
    assert [k for k, _ in _score_warnings(corr)] == []
    assert [k for k, _ in _score_warnings(window)] == ["low_score"]
