"""The contextual simulator (``simulation-context``): spans on both sides of a token, the verbalised
context, planted contextual units."""

from __future__ import annotations

import math

import pytest

from explainer.collect.planted import CONTEXT_CONCEPTS, load_concepts, planted_record, tokenize_windows
from explainer.score.contextual import ContextualSimulator, span_text
from explainer.score.correlation import score_simulation
from store.records import Window


class FakeEmbedder:
    """Texts ending in "(" (a name followed by a parenthesis) embed as (1, 0), anything else as
    (0, 1); the explanation "call" as (1, 0). Counts the texts it embeds."""

    name = "fake-embedder"

    def __init__(self):
        self.calls = 0

    def embed(self, texts):
        self.calls += len(texts)
        return [[1.0, 0.0] if t == "call" or t.endswith("(") else [0.0, 1.0] for t in texts]


def _win(tokens, acts, wid="top-0"):
    return Window(wid, "top", "heldout", "d", "code", tuple(tokens), tuple(acts))


def test_span_text_reads_both_sides_and_collapses_whitespace():
    tokens = ["def", " f", "(", "x", ")", ":"]
    assert span_text(tokens, 1, 0, 1) == "f("
    assert span_text(tokens, 1, 4, 0) == "def f"
    assert span_text(tokens, 4, 2, 2) == "(x):"


def test_prediction_follows_the_context_after_the_token():
    sim = ContextualSimulator(FakeEmbedder(), spans=((0, 1, 1.0),), verbal_weight=0.0)
    # the same "f" fires before "(" only: the token-only view could not tell them apart
    window = _win(["f", "(", " x", " f", " y"], [1, 0, 0, 0, 0])
    assert sim.simulate("call", [window]) == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    right, wrong = sim.score("call", [window]), sim.score("names", [window])
    assert right.value == pytest.approx(1.0) and wrong.value < 0
    assert right.details["method"] == "simulation-context"
    assert right.details["spans"] == [{"before": 0, "after": 1, "weight": 1.0}]


def test_spans_are_mixed_by_normalised_weight_and_whitespace_predicts_zero():
    sim = ContextualSimulator(FakeEmbedder(), spans=((0, 0, 1.0), (0, 1, 3.0)), verbal_weight=0.0)
    # "f": token "f" → 0, span "f(" → 1: (1·0 + 3·1) / 4; "(" ends in "(" either way; "\n" is blank
    assert sim.simulate("call", [_win(["f", "(", "\n"], [1, 0, 0])]) == [[0.75, 1.0, 0.0]]
    for bad in [(), ((0, 0, 0.0),), ((-1, 0, 1.0),)]:
        with pytest.raises(ValueError, match="spans need"):
            ContextualSimulator(FakeEmbedder(), spans=bad, verbal_weight=0.0)
    with pytest.raises(ValueError, match="spans need"):
        ContextualSimulator(FakeEmbedder(), verbal_weight=-1.0)


def test_span_embeddings_are_cached_across_explanations():
    emb = FakeEmbedder()
    sim = ContextualSimulator(emb, spans=((0, 1, 1.0),), verbal_weight=0.0)
    windows = [_win(["a", "(", "b"], [1, 0, 0]), _win(["a", "(", "b"], [1, 0, 0], wid="top-1")]
    sim.simulate("one", windows)
    first = emb.calls  # "a(", "(b", "b" once + the explanation
    assert first == 4
    sim.simulate("two", windows)
    assert emb.calls == first + 1


class WordsEmbedder:
    """Texts that say "before an opening parenthesis" embed as (1, 0), anything else as (0, 1); the
    explanation "call" as (1, 0)."""

    name = "words-embedder"

    def embed(self, texts):
        return [[1.0, 0.0] if t == "call" or "before an opening parenthesis" in t else [0.0, 1.0] for t in texts]


def test_verbalised_context_gives_every_piece_of_a_word_its_context():
    # SmolLM2 cuts "saferepr" into three pieces; only the last touches the "(", the verbalised
    # context of all three says the word stands right before it
    tokens = [" saf", "ere", "pr", "(", "object", ")", " is", " readable"]
    sim = ContextualSimulator(WordsEmbedder(), spans=(), verbal_weight=1.0)
    assert sim.simulate("call", [_win(tokens, [1, 1, 1, 0, 0, 0, 0, 0])]) == [[1.0, 1.0, 1.0, 0, 0, 0, 0, 0]]
    assert sim.settings["verbal"] == {"weight": 1.0, "version": "1"} and sim.settings["spans"] == []
    mixed = ContextualSimulator(WordsEmbedder(), spans=((0, 0, 1.0),), verbal_weight=3.0)
    assert mixed.simulate("call", [_win(tokens, [0] * 8)])[0][:3] == [0.75, 0.75, 0.75]


def test_contextual_concepts_file_names_its_context():
    concepts = load_concepts(CONTEXT_CONCEPTS)
    assert len(concepts) >= 20 and len({c.name for c in concepts}) == len(concepts)
    assert all("(?=" in c.pattern.pattern or "(?<=" in c.pattern.pattern for c in concepts)


@pytest.mark.slow
def test_real_minilm_reads_the_context_of_planted_contextual_units():
    """Planted units of the public contextual set over the default corpus (as the benchmark builds
    them): each one's true description scores above the other units' descriptions."""
    from transformers import AutoTokenizer

    from explainer.collect.corpus import default_corpus
    from explainer.collect.models import resolve_model
    from explainer.score.registry import make_scorer

    src = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    windows = tokenize_windows(default_corpus(), tok, window=32)
    wanted = ("imported_module", "if_condition", "version_parts")
    concepts = {c.name: c for c in load_concepts(CONTEXT_CONCEPTS) if c.name in wanted}
    sim = make_scorer("simulation-context")
    assert sim.kind == "simulation" and sim.model_name == "all-MiniLM-L6-v2"
    settings = sim.settings
    assert math.isclose(sum(s["weight"] for s in settings["spans"]) + settings["verbal"]["weight"], 1.0, abs_tol=1e-3)
    for name, concept in concepts.items():
        held = planted_record(concept, windows).windows_for("heldout")
        true, domains = [list(w.activations) for w in held], [w.domain for w in held]
        scores = {
            other: score_simulation(true, sim.simulate(c.description, held), domains, n_boot=10).value
            for other, c in concepts.items()
        }
        assert max(scores, key=scores.__getitem__) == name, (name, scores)


@pytest.mark.slow
def test_verbalised_context_tells_contextual_units_apart_through_real_minilm():
    """Units whose context is punctuation (a colon ending the line, a full stop, an equals sign): the
    default simulator ranks each one's true description above the other two, on the held-out
    windows the benchmark uses."""
    from transformers import AutoTokenizer

    from explainer.collect.corpus import default_corpus
    from explainer.collect.models import resolve_model

    src = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    windows = tokenize_windows(default_corpus(), tok, window=32)
    wanted = ("colon_line_end", "sentence_end", "keyword_argument")
    concepts = {c.name: c for c in load_concepts(CONTEXT_CONCEPTS) if c.name in wanted}
    sim = ContextualSimulator()
    for name, concept in concepts.items():
        held = planted_record(concept, windows).windows_for("heldout")
        true, domains = [list(w.activations) for w in held], [w.domain for w in held]
        scores = {
            other: score_simulation(true, sim.simulate(c.description, held), domains, n_boot=0).value
            for other, c in concepts.items()
        }
        assert max(scores, key=scores.__getitem__) == name, (name, scores)
