"""The output-aware explainer prompt (prompts/explain_output.yaml) shows a unit's promoted and
suppressed tokens when it has them, and leaves the sentence out when it has none; the default
prompt never shows them."""

from __future__ import annotations

from builders.report import make_record, make_window

from explainer.explain.explainer import build_messages, output_context
from explainer.llm.prompts import load_template

RECORD = make_record(3, [make_window("top-0", "top", "explain", ["a", " foo", " b"], [0.0, 4.0, 0.1])])
SIDE = {
    "method": "vocab-projection",
    "promoted": [{"token": " bar", "logit": 2.0}, {"token": "\n", "logit": 1.5}],
    "suppressed": [{"token": " the", "logit": -1.0}],
}


def test_the_output_prompt_shows_the_output_side():
    messages, ids = build_messages(load_template("explain_output"), RECORD, output=SIDE)
    last = messages[-1][1]
    assert ids == ("top-0",) and "[[foo]]" in last
    assert 'the next token is more likely to be: " bar", "\\n"' in last and 'less likely to be: " the"' in last
    shots = [c for role, c in messages[1:-1] if role == "user"]
    assert shots and all("more likely to be" in c for c in shots)  # its few-shot examples show theirs


def test_without_an_output_side_the_sentence_is_left_out():
    messages, _ = build_messages(load_template("explain_output"), RECORD, output=None)
    assert "more likely" not in messages[-1][1]
    default, _ = build_messages(load_template("explain"), RECORD, output=SIDE)
    assert all("more likely" not in c for _, c in default)
    assert output_context(None) == {"promoted": "", "suppressed": ""}
