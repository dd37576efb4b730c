"""The trained contextual simulator (``simulation-trained``): shipped weights, bad weights files, and a
planted contextual unit it never saw in training."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from explainer.errors import ScoreError
from explainer.score.trained import SPANS, WEIGHTS_FILE, ContextHead, TrainedSimulator, token_span_texts
from store.records import Window


class HashEmbedder:
    """Deterministic unit vectors of the shipped head's size, one per text (no model)."""

    name = "hash-embedder"

    def __init__(self, dim: int):
        self.dim = dim

    def embed(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
            v = rng.standard_normal(self.dim)
            out.append(v / np.linalg.norm(v))
        return out


def _win(tokens):
    return Window("top-0", "top", "heldout", "d", "code", tuple(tokens), tuple(float(t == "f") for t in tokens))


def test_span_texts_read_neighbours_and_skip_whitespace():
    rows = token_span_texts(["def", " f", "(", "\n", "x"])
    assert rows[3] is None
    assert rows[1] == ("f", "def", "(", "def f", "def f(")
    assert rows[0][1] == "" and rows[2][2] == "newline"
    assert all(len(r) == len(SPANS) for r in rows if r)


def test_shipped_weights_load_and_are_recorded_in_the_details():
    from explainer.score.embedding import EmbeddingSimulator

    head = ContextHead()
    assert WEIGHTS_FILE.stat().st_size < 400_000
    sim = TrainedSimulator(vectors=EmbeddingSimulator(HashEmbedder(head.dim)))
    window = _win(["def", " f", "(", "\n", "x", ")"])
    preds = sim.simulate("a name right before an opening parenthesis", [window])[0]
    assert preds[3] == 0.0 and all(0.0 < p < 10.0 for i, p in enumerate(preds) if i != 3)
    result = sim.score("a name right before an opening parenthesis", [window])
    assert result.details["method"] == "simulation-trained"
    assert result.details["weights"] == {"file": WEIGHTS_FILE.name, "version": head.version, "sha256": head.sha256}
    # the same head, the same inputs: the same predictions
    assert sim.simulate("a name right before an opening parenthesis", [window])[0] == preds


def test_an_embedding_of_another_size_is_refused():
    from explainer.score.embedding import EmbeddingSimulator

    sim = TrainedSimulator(vectors=EmbeddingSimulator(HashEmbedder(8)))
    with pytest.raises(ScoreError, match="does not match the trained head"):
        sim.simulate("names", [_win(["f", "("])])


def test_missing_and_corrupt_weights_fail_clearly(tmp_path):
    with pytest.raises(ScoreError, match="weights of the trained scorer not found: .*nothing.npz"):
        ContextHead(tmp_path / "nothing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(WEIGHTS_FILE.read_bytes()[:200])
    with pytest.raises(ScoreError, match="unreadable or corrupt"):
        ContextHead(corrupt)
    other = tmp_path / "other.npz"
    np.savez(other, version=np.array("1"), P=np.zeros((5, 4, 2)))
    with pytest.raises(ScoreError, match="lacks array"):
        ContextHead(other)
    with np.load(WEIGHTS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["W1"] = arrays["W1"][:, :3]
    np.savez(other, **arrays)
    with pytest.raises(ScoreError, match="wrong shape: W1"):
        ContextHead(other)
    with np.load(WEIGHTS_FILE) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["b1"][0] = np.nan
    np.savez(other, **arrays)
    with pytest.raises(ScoreError, match="non-finite"):
        ContextHead(other)


@pytest.mark.slow
def test_right_description_beats_wrong_ones_on_an_unseen_contextual_unit():
    """A public contextual concept (never trained on: the training script drops generated concepts
    that overlap a public one) as the benchmark builds it, scored with the real MiniLM."""
    from transformers import AutoTokenizer

    from explainer.collect.corpus import default_corpus
    from explainer.collect.models import resolve_model
    from explainer.collect.planted import CONTEXT_CONCEPTS, load_concepts, planted_record, tokenize_windows
    from explainer.score.correlation import score_simulation
    from explainer.score.registry import make_scorer

    src = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    windows = tokenize_windows(default_corpus(), tok, window=32)
    concept = next(c for c in load_concepts(CONTEXT_CONCEPTS) if c.name == UNSEEN)
    held = planted_record(concept, windows).windows_for("heldout")
    sim = make_scorer("simulation-trained")
    assert sim.kind == "simulation" and sim.model_name == "all-MiniLM-L6-v2"
    true, domains = [list(w.activations) for w in held], [w.domain for w in held]
    scores = {
        d: score_simulation(true, sim.simulate(d, held), domains, n_boot=10).value  # type: ignore[attr-defined]
        for d in (concept.description, *WRONG)
    }
    assert all(scores[concept.description] > scores[w] for w in WRONG), scores


UNSEEN = "return_value"
WRONG = ("the Python keyword return", "the name of a class being defined, right after the keyword class")
"""The right description ("the first word of the value after return") against its context token
alone — where ``simulation-context`` is fooled — and another contextual concept."""
