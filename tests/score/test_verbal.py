"""The verbalised context (explainer/score/verbal.py) on token strings as SmolLM2's tokenizer cuts them."""

from __future__ import annotations

from explainer.score.verbal import render_contexts


def test_sub_word_pieces_are_described_through_their_whole_word():
    said = render_contexts([" saf", "ere", "pr", "(", "object", ")", " is"])
    assert said[0] == said[1] == said[2] == "the word saferepr, right before an opening parenthesis"
    assert said[3] == "an opening parenthesis"
    assert said[4] == "the word object, right after an opening parenthesis, right before a closing parenthesis"


def test_line_positions_and_punctuation_that_ends_a_line():
    tokens = [" hue", " <", " TW", "O", "_", "TH", "IR", "D", ":", "\n       ", " return", " m", "1"]
    said = render_contexts(tokens)
    assert said[2] == (
        "the upper-case word TWO_THIRD, right after a less-than sign, right before a colon at the end of a line"
    )
    assert said[8] == "a colon" and said[9] is None
    assert said[10] == "the word return, at the start of a line, right before the word m1"


def test_full_stop_is_told_from_a_dot_and_capitals_are_named():
    said = render_contexts(["8", ".", " Lim", "itation", " of", " the", " Be", "Open", ".", "com"])
    assert said[0] == "the number 8, right before a full stop"
    assert said[2] == "the capitalised word Limitation, right after a full stop, right before the word of"
    assert said[5] == "the word the, right after the word of, right before the capitalised word BeOpen"
    assert said[7].endswith("right before a dot") and said[8] == "a dot"


def test_numbers_of_a_dotted_version_and_operators():
    said = render_contexts([" version", " ", "3", ".", "1", "1", " ==", " x"])
    assert said[2] == "the number 3, right after the word version, right before a dot"
    assert said[4] == said[5] == "the number 11, right after a dot, right before a double equals sign"
    assert said[6] == "a double equals sign" and said[1] is None


def test_window_edges_say_nothing_they_cannot_know():
    # the window may start or stop mid-line: no line position is claimed at either edge
    assert render_contexts(["foo", "(", "x"]) == [
        "the word foo, right before an opening parenthesis",
        "an opening parenthesis",
        "the word x, right after an opening parenthesis",
    ]


def test_real_tokenizer_output_gets_one_sentence_per_token():
    from transformers import AutoTokenizer

    from explainer.collect.models import resolve_model

    src = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    text = "def parse_version(text):\n    return text.split('.')  # e.g. 3.11\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tokens = [tok.decode([i]) for i in ids]
    assert "".join(tokens) == text
    said = render_contexts(tokens)
    assert len(said) == len(tokens)
    for t, s in zip(tokens, said):
        assert (s is None) == (not t.strip()), (t, s)
    # every token that overlaps "parse_version" (characters 4 to 17), however the tokenizer cut it
    ends = [sum(len(t) for t in tokens[: i + 1]) for i in range(len(tokens))]
    name = [s for i, s in enumerate(said) if ends[i] > 4 and ends[i] - len(tokens[i]) < 17 and tokens[i].strip("( ")]
    assert name and set(name) == {
        "the word parse_version, right after the word def, right before an opening parenthesis"
    }
