"""Report test data (three entries: explained, failed, pending), the JSON-schema check every JSON report
passes, and PDF page rendering."""

import json
from datetime import UTC, datetime

import jsonschema

from explainer.report.model import ReportEntry, ReportExplanation, ReportScore
from explainer.report.render import schema_path
from store.records import Explanation, UnitRecord, UnitStats, Window


def validate_report(data: dict) -> None:
    """Validate a JSON report against the published schema (every JSON report the tests make)."""
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(data)


def make_window(wid, kind, split, tokens, acts, domain="code"):
    return Window(
        window_id=wid,
        kind=kind,
        split=split,
        doc_id=f"{domain}:doc-{wid}",
        domain=domain,
        tokens=tuple(tokens),
        activations=tuple(acts),
    )


def make_record(index, windows):
    return UnitRecord(
        unit_id=f"gpt2/blocks.3.hook_resid_post/{index}",
        model="gpt2",
        hookpoint="blocks.3.hook_resid_post",
        index=index,
        stats=UnitStats(max=4.0, mean=0.25, std=0.5, density=0.125, n_tokens=1000),
        windows=tuple(windows),
    )


def make_entry(
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


def sample_entries():
    good = make_record(
        7,
        [
            make_window(
                "top-0",
                "top",
                "explain",
                ["def", " foo", "(", "):", "\n", "    ", "return"],
                [0, 4.0, 1.0, 0, 0, 0, -1.0],
            ),
            make_window("top-1", "top", "explain", ["x", " <script>", "&", ' "q"'], [0, 3.0, 2.0, 0]),
            make_window("top-2", "top", "explain", ["a", " b"], [2.0, 0]),
            make_window("top-3", "top", "heldout", ["def", " bar"], [0, 3.5], domain="docs"),
            make_window("quantile-1", "quantile", "heldout", ["class", " Foo"], [0, 1.5]),
            make_window("random-0", "random", "heldout", ["the", " cat"], [0, 0], domain="legal"),
        ],
    )
    failed = make_record(9, [make_window("top-0", "top", "explain", ["z"], [1.0])])
    pending = make_record(11, [])
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
        make_entry(good, "Function names after `def`", scores=(score,)),
        make_entry(failed, None, "failed", error="LLM returned <garbage>", scores=(bad_score,)),
        ReportEntry(record=pending),
    ]


MIN_INK = 0.002
"""Share of non-white pixels below which a page counts as blank."""


def pdf_pages(data: bytes, scale: float = 1.0) -> tuple[list, list[str]]:
    """(page images as PIL images, page texts) of a PDF file's bytes."""
    import pypdfium2 as pdfium

    assert data.startswith(b"%PDF-")
    doc = pdfium.PdfDocument(data)
    images, texts = [], []
    for i in range(len(doc)):
        page = doc[i]
        images.append(page.render(scale=scale).to_pil().convert("L"))
        texts.append(page.get_textpage().get_text_range())
    doc.close()
    return images, texts


def ink(image) -> float:
    """Share of pixels darker than near-white."""
    hist = image.histogram()
    return sum(hist[:235]) / (image.width * image.height)
