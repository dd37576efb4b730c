"""The token-embedding simulator, planted units, the baseline explainer and the scorer registry."""

from __future__ import annotations

import math

import pytest

from explainer.collect.planted import TokenizedWindow, concept_activations, load_concepts, planted_record
from explainer.errors import ConfigError
from explainer.explain.baseline import baseline_explanation
from explainer.score.correlation import score_simulation
from explainer.score.embedding import EmbeddingSimulator
from explainer.score.registry import make_scorer, register, scorer_names
from store.records import UnitRecord, UnitStats, Window


class FakeEmbedder:
    """Unit vectors chosen per text; counts how many texts it was asked to embed."""

    name = "fake-embedder"

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def embed(self, texts):
        self.calls += len(texts)
        out = []
        for t in texts:
            v = self.table.get(t, (0.0, 0.0, 1.0))
            n = math.sqrt(sum(x * x for x in v))
            out.append([x / n for x in v])
        return out


def _win(tokens, acts, wid="top-0", split="heldout", kind="top", domain="code"):
    return Window(wid, kind, split, "d", domain, tuple(tokens), tuple(acts))


def test_token_only_predictions_are_cosines_and_whitespace_is_zero():
    emb = FakeEmbedder({"return": (1, 0, 0), "x": (0, 1, 0), "the word return": (1, 0, 0)})
    sim = EmbeddingSimulator(emb)
    pred = sim.simulate("the word return", [_win([" return", " x", "\n", "  "], [1, 0, 0, 0])])
    assert pred == [[pytest.approx(1.0), pytest.approx(0.0), 0.0, 0.0]]


def test_context_mixes_token_and_context_similarity():
    emb = FakeEmbedder({"q": (1, 0, 0), "a": (0, 1, 0), "a b": (0, 1, 0), "b": (1, 0, 0)})
    sim = EmbeddingSimulator(emb, context_tokens=1, context_weight=0.25)
    # token "b": cos(q, b) = 1; its context "a b": cos(q, a b) = 0 -> 0.75 * 1 + 0.25 * 0
    assert sim.simulate("q", [_win(["a", " b"], [0, 1])])[0][1] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        EmbeddingSimulator(emb, context_tokens=1, context_weight=1.5)


def test_token_embeddings_are_cached_across_calls():
    emb = FakeEmbedder({})
    sim = EmbeddingSimulator(emb)
    windows = [_win(["a", "b", "a"], [0, 0, 0]), _win(["b", "c"], [0, 0], wid="top-1")]
    sim.simulate("one", windows)
    first = emb.calls  # "a", "b", "c" once + the explanation
    assert first == 4
    sim.simulate("two", windows)
    assert emb.calls == first + 1  # only the new explanation


@pytest.mark.slow
def test_real_minilm_scores_the_right_explanation_higher():
    sim = make_scorer("simulation-embedding")
    assert sim.model_name == "all-MiniLM-L6-v2"
    windows = [
        _win(["def", " f", "(x", "):", "\n", "    ", "return", " x"], [0, 0, 0, 0, 0, 0, 1, 0]),
        _win(["if", " ok", ":", " return", " None"], [0, 0, 0, 1, 0], wid="top-1"),
        _win(["The", " soup", " was", " hot"], [0, 0, 0, 0], wid="random-0", kind="random", domain="docs"),
    ]
    true = [list(w.activations) for w in windows]
    domains = [w.domain for w in windows]
    right = score_simulation(true, sim.simulate("the Python keyword return", windows), domains).value
    wrong = score_simulation(true, sim.simulate("words about cooking and food", windows), domains).value
    assert right > 0.8 and right > wrong + 0.5


def test_concepts_file_validation(tmp_path):
    concepts = load_concepts()
    assert len(concepts) >= 20 and len({c.name for c in concepts}) == len(concepts)
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("- {name: a, description: x}\n", "needs name, description and match"),
        ("- {name: a, description: x, match: {regex: '('}}\n", "invalid regex"),
        ("- {name: a, description: x, match: {words: []}}\n", "match needs"),
        (
            "- {name: a, description: x, match: {regex: a}}\n- {name: a, description: y, match: {regex: b}}\n",
            "duplicate",
        ),
        ("{}\n", "non-empty YAML list"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_concepts(bad)


def test_concept_activations_follow_character_spans(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "- {name: years, description: years, match: {regex: '\\b(?:19|20)\\d\\d\\b'}}\n"
        "- {name: neg, description: negations, match: {words: [not]}}\n"
    )
    years, neg = load_concepts(f)
    text = "in 2019 it was not"
    tokens = ["in", " ", "2", "0", "1", "9", " it", " was", " not"]
    spans, pos = [], 0
    for t in tokens:
        spans.append((pos, pos + len(t)))
        pos += len(t)
    win = TokenizedWindow("d", "docs", tuple(tokens), tuple(spans), text)
    assert concept_activations(years, win) == (0, 0, 1, 1, 1, 1, 0, 0, 0)
    assert concept_activations(neg, win) == (0, 0, 0, 0, 0, 0, 0, 0, 1)
    rec = planted_record(neg, [win] * 3, top_k=2, n_random=1)
    assert [w.window_id for w in rec.windows] == ["top-0", "top-1", "random-0"]
    assert [w.split for w in rec.windows] == ["explain", "heldout", "heldout"]
    assert rec.unit_id == "planted/planted/neg" and rec.stats.max == 1.0


def test_baseline_names_the_most_frequent_strong_tokens():
    stats = UnitStats(max=10.0, mean=0.1, std=1.0, density=0.1, n_tokens=100)
    windows = (
        _win(["x", " =", " not", " y"], [0, 0, 10, 1], split="explain"),
        _win(["if", " not", " z"], [0, 9, 0], wid="top-2", split="explain"),
        _win(["a", " =", " None"], [0, 0, 6], wid="top-4", split="explain"),
        _win(["held", " not"], [0, 10], wid="top-1"),
    )
    rec = UnitRecord("m/h/1", "m", "h", 1, stats, windows)
    assert baseline_explanation(rec) == 'the tokens "not", "None" (often after "=")'
    quiet = UnitRecord("m/h/2", "m", "h", 2, stats, (_win(["a"], [1.0], split="explain"),))
    assert baseline_explanation(quiet) is None


def test_scorer_registry_rejects_unknown_and_duplicate_names():
    assert {"simulation-embedding", "simulation-logits"} <= set(scorer_names())
    with pytest.raises(
        ConfigError,
        match="unknown scorer 'nope'; known scorers: detection, embedding, intervention, intervention-embedding, "
        "intervention-endpoint, simulation-context, simulation-embedding, simulation-endpoint, simulation-logits, "
        "simulation-trained$",
    ):
        make_scorer("nope")
    with pytest.raises(ConfigError, match="registered twice"):
        register("simulation-logits")(lambda **_: None)
