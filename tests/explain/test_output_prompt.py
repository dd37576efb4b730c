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
    assert set(output_context(None).values()) == {""}


STEERING = {
    "method": "steering",
    "promoted": [{"token": " 1984", "p_clean": 0.001, "p_steered": 0.2}],
    "suppressed": [{"token": " it", "p_clean": 0.1, "p_steered": 0.01}],
    "details": {"strength": 120.0, "kl": 1.0, "target_kl": 1.0, "prompts": 8},
}


def test_the_explain_stage_shows_a_stored_steering_effect(settings):
    """A unit with a measured steering effect (stored by an intervention scorer) gets those tokens in
    the output-aware prompt beside its projection; a unit without one gets the projection only."""
    from dataclasses import replace

    from explainer.llm.chat import ChatAnswer, LLMConfig
    from explainer.pipeline.options import LabelOptions
    from explainer.pipeline.stages import _candidates
    from explainer.runtime import get_store

    steered, plain = RECORD, replace(RECORD, unit_id="gpt2/blocks.3.hook_resid_post/4", index=4)
    store = get_store(settings)
    store.save_output_sides({steered.unit_id: SIDE, plain.unit_id: SIDE})
    store.save_output_sides({steered.unit_id: STEERING})
    seen = []

    class Chat:
        endpoint, max_tokens = "fake", 48

        def complete(self, messages):
            seen.append(messages[-1][1])
            return ChatAnswer("the word foo", 10, 3)

    template = load_template("explain_output")
    opts = LabelOptions(explainer=LLMConfig(model="fake"), explain_prompt="explain_output")
    for record in (steered, plain):
        (c,) = _candidates(record, opts, template, settings, True, chat_factory=lambda cfg, key: Chat())
        assert c["text"] == "the word foo"
    with_steering, without = seen
    assert 'the next token is more likely to be: " bar", "\\n"' in with_steering
    assert 'turned up, the next token became more likely: " 1984"' in with_steering
    assert 'and less likely: " it"' in with_steering
    assert 'the next token is more likely to be: " bar"' in without and "turned up" not in without
    assert template.version == "2"  # a changed prompt: its own version, and its own hash in the key
