"""Prompt templates, explainer prompts (golden files), answer parsing and explain_unit.

Golden files live in ``tests/llm/golden/``. After an intended prompt change, rewrite them with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/llm/test_prompts_explain.py`` and review the diff.
"""

import difflib
import hashlib
import os
import re
from pathlib import Path

import pytest
from builders.llm import ScriptedChat

from explainer.errors import ConfigError, ParseError
from explainer.explain.explainer import ExplainResult, build_messages, explain_unit, format_window, parse_explanation
from explainer.llm.prompts import PROMPTS_DIR, load_template
from explainer.score.logits import LogitSimulator, display_token
from store.records import UnitRecord, UnitStats, Window

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing; create it with UPDATE_GOLDEN=1 and review it")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), f"golden/{name}", "actual")
        )
        pytest.fail(f"output differs from golden/{name} (rerun with UPDATE_GOLDEN=1 if intended):\n{diff}")


def _win(wid, kind, split, tokens, acts, domain="code"):
    return Window(wid, kind, split, f"{domain}:{wid}.txt", domain, tuple(tokens), tuple(acts))


RECORD = UnitRecord(
    unit_id="tiny/layers.1.mlp/3",
    model="tiny",
    hookpoint="layers.1.mlp",
    index=3,
    stats=UnitStats(max=4.0, mean=0.1, std=0.2, density=0.1, n_tokens=100),
    windows=(
        _win(
            "top-0",
            "top",
            "explain",
            ["def", " foo", "(", "x", "):", "\n", "    ", " return", " x"],
            [0, 4.0, 0.5, 0, 0, 0, 0, 2.0, 1.0],
        ),
        _win("top-1", "top", "heldout", ["def", " bar", "():"], [0, 3.9, 0]),
        _win(
            "top-2",
            "top",
            "explain",
            ["The", " function", " foo", " returns", " 1", "."],
            [0, 0.2, 3.0, -1.0, 0, 0],
            domain="docs",
        ),
        _win("random-0", "random", "heldout", ["hello", " world"], [0.1, 0]),
    ),
)


# -- templates ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, version", [("explain", "2"), ("simulate", "3"), ("detect", "1")])
def test_load_template_identity(name, version):
    t = load_template(name)
    assert t.name == name
    assert t.version == version
    assert re.fullmatch(r"[0-9a-f]{64}", t.sha256)
    assert t.sha256 == hashlib.sha256((PROMPTS_DIR / f"{name}.yaml").read_bytes()).hexdigest()
    assert t.key == f"{name}@{version}#{t.sha256[:8]}"


def test_template_hash_changes_with_any_edit(tmp_path):
    src = (PROMPTS_DIR / "explain.yaml").read_bytes()
    (tmp_path / "explain.yaml").write_bytes(src + b"\n# a comment\n")
    edited = load_template("explain", directory=tmp_path)
    original = load_template("explain")
    assert (edited.name, edited.version) == (original.name, original.version)
    assert edited.sha256 != original.sha256


def test_unknown_template_lists_known_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown prompt template 'nope'; known templates: detect, explain, explain_output, neutral_prompts, simulate",
    ):
        load_template("nope")


def test_invalid_yaml_is_a_config_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: explain\nversion: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_template("bad", directory=tmp_path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_template(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    "text, field", [("name: x\n", "version"), ("version: 1\n", "name"), ("- a\n- b\n", "name"), ("", "name")]
)
def test_template_without_name_or_version_is_a_config_error(tmp_path, text, field):
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ConfigError, match=f"lacks the field '{field}'"):
        load_template("t", directory=tmp_path)


# -- golden prompts -----------------------------------------------------------------------


def _render_messages(messages):
    return "".join(f"===== {role} =====\n{content}\n" for role, content in messages)


def test_explain_messages_golden():
    messages, window_ids = build_messages(load_template("explain"), RECORD)
    assert window_ids == ("top-0", "top-2")  # only explain-split top windows are shown
    roles = [r for r, _ in messages]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
    last = messages[-1][1]
    assert "def [[foo]](x):\n     [[return]] x" in last
    assert 'Activations: " foo" 10, " return" 5, " x" 2, "(" 1' in last
    assert "The function [[foo]] returns 1." in last
    assert "bar" not in last and "hello" not in last  # held-out windows never reach the explainer
    check_golden("explain_messages.txt", _render_messages(messages))


def test_simulate_prompt_golden(smol_tokenizer):
    sim = LogitSimulator(load_template("simulate"))
    prefix = sim._prefix("the word return")
    assert prefix.endswith("Neuron 2\nExplanation: the word return\nActivations:\n<start>\n")
    assert "\n return\t10\n x\t1\n" in prefix  # the worked example, one token per line
    window = RECORD.windows[0]
    ids, reads = sim.build_inputs("the word return", window, smol_tokenizer)
    decoded = smol_tokenizer.decode(ids)
    assert decoded == prefix + "".join(f"{display_token(t)}\tunknown\n" for t in window.tokens)
    listing = "".join(
        f"{i}\t{tid}\t{smol_tokenizer.decode([tid])!r}" + ("\tREAD\n" if i in reads else "\n")
        for i, tid in enumerate(ids)
    )
    check_golden("simulate_prefix.txt", prefix)
    check_golden("simulate_inputs.txt", f"{decoded}\n----- tokens (index, id, piece) -----\n{listing}")


def test_build_inputs_read_positions(smol_tokenizer):
    sim = LogitSimulator(load_template("simulate"))
    window = _win("random-0", "random", "heldout", ["x", "\n", "\t", " tab\there", "\\", "", " 10", "é"], [0] * 8)
    ids, reads = sim.build_inputs("anything", window, smol_tokenizer)
    assert len(reads) == len(window.tokens)
    assert reads == sorted(set(reads)) and reads[-1] < len(ids)
    for r in reads:
        assert smol_tokenizer.decode([ids[r]]).endswith("\t")
    # each read position is followed by the placeholder line
    placeholder = smol_tokenizer("unknown\n", add_special_tokens=False)["input_ids"]
    for r in reads:
        assert ids[r + 1 : r + 1 + len(placeholder)] == placeholder
    # special characters are escaped so that every token stays on one line
    decoded = smol_tokenizer.decode(ids)
    assert decoded.endswith(
        "x\tunknown\n\\n\tunknown\n\\t\tunknown\n tab\\there\tunknown\n"
        "\\\\\tunknown\n\\0\tunknown\n 10\tunknown\né\tunknown\n"
    )


# -- format_window ------------------------------------------------------------------------


def test_format_window_marks_tokens_at_or_above_threshold():
    w = _win("top-0", "top", "explain", ["a", " b", " c", " d", " "], [1.0, 2.0, 3.9, 4.0, 4.0])
    # scaled to a max of 4: [2, 5, 10, 10, 10]; the whitespace-only token is never marked or listed
    out = format_window(w, 4.0, 5, 400)
    assert out == {"text": "a [[b]] [[c]] [[d]]", "top_tokens": '" c" 10, " d" 10, " b" 5, "a" 2'}
    out = format_window(w, 4.0, 10, 400)
    assert out["text"] == "a b [[c]] [[d]]"
    out = format_window(w, 4.0, 11, 400)
    assert out["text"] == "a b c d"


def test_format_window_without_activation_lists_none():
    w = _win("random-0", "random", "heldout", ["a", " b"], [0.0, -3.0])
    assert format_window(w, 4.0, 4, 400) == {"text": "a b", "top_tokens": "none"}


def test_format_window_lists_at_most_six_tokens_and_truncates_around_the_first_mark():
    toks = [f" w{i}" for i in range(100)]
    acts = [0.0] * 100
    acts[80] = 10.0
    for i in range(10):
        acts[i] = 1.0 + i * 0.1
    out = format_window(_win("top-0", "top", "explain", toks, acts), 10.0, 5, 60)
    assert len(out["text"]) == 60
    assert "[[w80]]" in out["text"]
    assert out["top_tokens"].count('"') == 12  # six quoted tokens
    assert out["top_tokens"].startswith('" w80" 10, ')


# -- parse_explanation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("the word if", "the word if"),
        ("Explanation: years like 1999.", "years like 1999"),
        ("  closing brackets  ", "closing brackets"),
        ("Python keywords\nThese mark the start of a block.\nMore text", "Python keywords"),
        ("\n\nfour-digit years\n", "four-digit years"),
        ("The neuron fires on: commas in lists", "commas in lists"),
        ("This neuron detects dates. It also fires on times.", "dates"),
        ("Answer: **numbers**", "numbers"),
        ('the word "if" or "elif".', 'the word "if" or "elif"'),
        ('the word "if"', 'the word "if"'),  # a closing quote that belongs to the phrase is kept
        ('four-digit years like "2019"', 'four-digit years like "2019"'),
    ],
)
def test_parse_explanation_good_answers(raw, expected):
    assert parse_explanation(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('"if" or "elif"', '"if" or "elif"'),
        ("`import` statements", "`import` statements"),
    ],
)
def test_parse_explanation_keeps_balanced_quotes(raw, expected):
    assert parse_explanation(raw) == expected


def test_parse_explanation_strips_quotes_around_the_whole_answer():
    assert parse_explanation('"closing brackets"') == "closing brackets"


@pytest.mark.parametrize("raw", ["answers to quiz questions", "Explanations of code", "neurons and synapses"])
def test_parse_explanation_prefix_needs_a_word_boundary(raw):
    assert parse_explanation(raw) == raw


def test_parse_explanation_keeps_eg_abbreviation():
    assert parse_explanation('Python keywords, e.g. "if" and "for"') == 'Python keywords, e.g. "if" and "for"'


@pytest.mark.parametrize(
    "raw, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("!!!", "no words"),
        ("1 2 3", "no words"),
        ("x" * 300, "too long"),
        ("tokens " * 40, "too long"),
        ("the token [[x]]", "echoed"),
        ('Activations: "if" 10, " x" 2', "echoed"),
        ("Excerpt 1: def [[foo]]", "echoed"),
        ('the word "#" 10, "list" 10', "echoed"),
        ("I'm sorry, but I cannot help with that", "refused"),
        ("Unfortunately the excerpts are unclear", "refused"),
    ],
)
def test_parse_explanation_rejects_malformed_answers(raw, message):
    with pytest.raises(ParseError, match=message):
        parse_explanation(raw)


def test_parse_explanation_length_limit_is_200_chars():
    assert parse_explanation("a" * 200) == "a" * 200
    with pytest.raises(ParseError, match=r"too long \(201 chars\)"):
        parse_explanation("a" * 201)


# -- explain_unit -------------------------------------------------------------------------


def _fake(*answers):
    return ScriptedChat(*answers)


def test_explain_unit_good_answer():
    result = explain_unit(RECORD, _fake("Explanation: the identifier foo."), load_template("explain"))
    assert result == ExplainResult(
        text="the identifier foo",
        window_ids=("top-0", "top-2"),
        prompt_tokens=None,
        completion_tokens=None,
        raw="Explanation: the identifier foo.",
        attempts=1,
        rejected_raw=None,
        windows_available=2,
    )


def test_explain_unit_rejects_an_unparseable_answer():
    with pytest.raises(ParseError, match="no words.*after a stricter retry.*no words"):
        explain_unit(RECORD, _fake("???", "!!!"), load_template("explain"))


def test_explain_unit_rejects_a_copied_few_shot_answer():
    template = load_template("explain")
    with pytest.raises(ParseError, match="copied a few-shot example"):
        explain_unit(
            RECORD, _fake('The word "if" or "elif" at the start of a condition', 'the word "without"'), template
        )


@pytest.mark.parametrize(
    "answer",
    [
        'the word "without"',
        'Four-digit years like "2019".',
        'Explanation: the word "if" or "elif" at the start of a condition',
    ],
)
def test_explain_unit_rejects_every_few_shot_answer(answer):
    with pytest.raises(ParseError, match="copied a few-shot example"):
        explain_unit(RECORD, _fake(answer, answer), load_template("explain"))


def test_explain_unit_without_explain_windows():
    heldout_only = UnitRecord(
        RECORD.unit_id,
        RECORD.model,
        RECORD.hookpoint,
        RECORD.index,
        RECORD.stats,
        tuple(w for w in RECORD.windows if w.split == "heldout"),
    )
    chat = _fake("should not be asked")
    with pytest.raises(ParseError, match="no activating windows"):
        explain_unit(heldout_only, chat, load_template("explain"))
    dead = UnitRecord(RECORD.unit_id, RECORD.model, RECORD.hookpoint, RECORD.index, RECORD.stats, ())
    with pytest.raises(ParseError, match="no activating windows"):
        explain_unit(dead, chat, load_template("explain"))
    # the chat model was never called: its first answer is still there
    assert chat.seen == [] and chat.complete([("user", "hi")]).text == "should not be asked"


def test_build_messages_limits_the_number_of_windows():
    many = tuple(_win(f"top-{2 * i}", "top", "explain", ["a", " b"], [0, 4.0]) for i in range(9))
    rec = UnitRecord("m/h/0", "m", "h", 0, RECORD.stats, many)
    template = load_template("explain")
    _, ids = build_messages(template, rec)
    assert ids == tuple(f"top-{2 * i}" for i in range(6))  # max_windows: 6 in explain.yaml
    messages, ids = build_messages(template, rec, max_windows=2)
    assert ids == ("top-0", "top-2")
    assert messages[-1][1].count("Excerpt ") == 2


# -- retry with a stricter instruction, shrinking the prompt to fit ------------------------


def _scripted(*answers):
    return ScriptedChat(*answers)  # keeps the messages it was sent in .seen


@pytest.mark.parametrize(
    "first",
    ["", "   ", "I'm sorry, but I cannot help with that.", "As an AI language model, I do not know.", "word " * 60],
)
def test_an_unusable_answer_is_retried_once_with_a_stricter_instruction(first):
    template = load_template("explain")
    chat = _scripted(first, "closing brackets")
    result = explain_unit(RECORD, chat, template)
    assert (result.text, result.attempts, result.rejected_raw) == ("closing brackets", 2, first)
    assert len(chat.seen) == 2
    assert chat.seen[1][:-1] == chat.seen[0][:-1]
    assert chat.seen[1][-1] == chat.seen[0][-1] + "\n\n" + template["retry_instruction"]


def test_two_unusable_answers_are_rejected_with_both_raw_texts():
    from explainer.explain.explainer import RejectedAnswer

    with pytest.raises(RejectedAnswer, match="refused.*after a stricter retry.*empty") as info:
        explain_unit(RECORD, _scripted("Sorry, I can't do that.", ""), load_template("explain"))
    assert info.value.raw_answers == ["Sorry, I can't do that.", ""]


def test_a_good_first_answer_is_not_retried():
    chat = _scripted("closing brackets", "never asked")
    assert explain_unit(RECORD, chat, load_template("explain")).attempts == 1
    assert len(chat.seen) == 1


def _many_windows(n=6, length=60):
    return UnitRecord(
        "m/h/0",
        "m",
        "h",
        0,
        RECORD.stats,
        tuple(
            _win(f"top-{2 * i}", "top", "explain", [f" w{i}_{j}" for j in range(length)], [4.0] + [0.0] * (length - 1))
            for i in range(n)
        ),
    )


def test_fit_messages_drops_windows_then_truncates_then_gives_up():
    from explainer.errors import PromptTooLongError
    from explainer.explain.explainer import fit_messages

    template, rec = load_template("explain"), _many_windows()
    chars = lambda msgs: sum(len(c) for _, c in msgs)  # noqa: E731
    full, ids = fit_messages(template, rec, chars, 10**6)
    assert len(ids) == 6
    limit = chars(full) - 300  # a little short: one window less is enough
    msgs, ids = fit_messages(template, rec, chars, limit)
    assert len(ids) == 5 and chars(msgs) <= limit and ids == tuple(f"top-{2 * i}" for i in range(5))
    base = chars(build_messages(template, rec, max_windows=1)[0])
    msgs, ids = fit_messages(template, rec, chars, base - 100)  # one window, truncated
    assert ids == ("top-0",) and chars(msgs) <= base - 100
    with pytest.raises(PromptTooLongError, match="allows 100"):
        fit_messages(template, rec, chars, 100)


def test_explain_unit_shrinks_an_endpoint_prompt_to_the_configured_context():
    template, rec = load_template("explain"), _many_windows(length=120)
    chat = _scripted("closing brackets", "closing brackets")
    wide = explain_unit(rec, chat, template, context_tokens=100_000)
    narrow = explain_unit(rec, chat, template, context_tokens=1500)
    assert len(wide.window_ids) == 6 and 1 <= len(narrow.window_ids) < 6
    assert narrow.windows_available == 6
    # the estimate is characters / 3 plus 8 tokens per message, with the answer budget kept free
    from explainer.explain.explainer import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS

    sent = chat.seen[1]
    assert sum(len(c) / CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS for c in sent) <= 1500 - 256


@pytest.mark.slow
def test_explain_unit_fits_the_local_model_with_its_own_tokenizer():
    """The real SmolLM2 tokenizer counts the prompt; a context cut to 700 tokens drops windows."""
    from explainer.collect.models import load_model
    from explainer.explain.explainer import fit_messages, prompt_meter
    from explainer.llm.chat import LocalChatModel

    chat = LocalChatModel()
    count, limit = prompt_meter(chat)
    assert limit == load_model("smollm2-135m").model.config.max_position_embeddings - chat.max_new_tokens
    template, rec = load_template("explain"), _many_windows(length=120)
    msgs, ids = fit_messages(template, rec, count, 10**6)
    full = count(msgs)
    assert len(ids) == 6 and full > 700
    msgs, ids = fit_messages(template, rec, count, 700)
    assert 1 <= len(ids) < 6 and count(msgs) <= 700
