"""Scoring parity with OpenAI's neuron-explainer (the PyPI package ``neuron-explainer==0.0.1``, its own
code): the pooled correlation, the digit reading, and the cases where this project deliberately differs
(a NaN is a failed score with its reason; a constant side is 0.0, not NaN)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

# neuron-explainer's api_client asserts that OPENAI_API_KEY is set when it is imported; nothing here
# calls OpenAI, a dummy value is enough.
os.environ.setdefault("OPENAI_API_KEY", "test-dummy-key")

from neuron_explainer.activations.activations import ActivationRecord  # noqa: E402
from neuron_explainer.explanations.explanations import SequenceSimulation  # noqa: E402
from neuron_explainer.explanations.scoring import correlation_score, score_from_simulation  # noqa: E402
from neuron_explainer.explanations.simulator import compute_predicted_activation_stats_for_token  # noqa: E402

from explainer.errors import ScoreError  # noqa: E402
from explainer.pipeline.options import LabelOptions  # noqa: E402
from explainer.pipeline.stages import score_stage  # noqa: E402
from explainer.runtime import get_store  # noqa: E402
from explainer.score.base import simulation_result  # noqa: E402
from explainer.score.correlation import pearson, score_simulation  # noqa: E402
from explainer.score.endpoint import _exact_digit_probs, expected_value, read_echo  # noqa: E402
from explainer.score.registry import register, scorer_names  # noqa: E402


def _theirs(tokens: list[str], true: list[float], pred: list[float]) -> float:
    record = ActivationRecord(tokens=tokens, activations=true)
    sim = SequenceSimulation(
        tokens=tokens,
        expected_activations=pred,
        activation_scale=None,
        distribution_values=[],
        distribution_probabilities=[],
    )
    return float(score_from_simulation(record, sim, correlation_score))


@pytest.mark.parametrize("seed", range(8))
def test_correlation_equals_neuron_explainers_score_from_simulation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    true = (rng.exponential(1.0, n) * (rng.random(n) < 0.3)).tolist()
    true[0] = 3.0  # never constant
    pred = (np.asarray(true) * rng.uniform(-1, 3) + rng.normal(0, 1.5, n)).tolist()
    tokens = [f"t{i}" for i in range(n)]
    theirs = _theirs(tokens, true, pred)
    assert pearson(true, pred) == pytest.approx(theirs, abs=1e-9)
    # pooled over windows exactly as neuron-explainer's ev_correlation_score pools its sequences
    cut = n // 2
    ours = score_simulation([true[:cut], true[cut:]], [pred[:cut], pred[cut:]], ["a", "b"], n_boot=0).value
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_constant_side_is_zero_here_and_nan_there():
    true, pred = [0.0, 1.0, 2.0], [4.0, 4.0, 4.0]
    with np.errstate(invalid="ignore", divide="ignore"):
        assert math.isnan(_theirs(["a", "b", "c"], true, pred))
    assert pearson(true, pred) == 0.0


@pytest.mark.parametrize("where", ["true", "simulated"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_activation_raises_score_error_never_one(where, bad):
    true, pred = [[0.0, 1.0, 2.0], [3.0, 0.0]], [[0.0, 1.0, 2.0], [3.0, 0.5]]
    (true if where == "true" else pred)[1][1] = bad
    with pytest.raises(ScoreError, match=rf"held-out window 1: 1 of 2 {where} activations are not finite"):
        score_simulation(true, pred, ["a", "b"])
    with pytest.raises(ScoreError, match="not finite"):
        pearson([a for w in true for a in w], [p for w in pred for p in w])


# -- digit reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_echo_digit_reading_equals_neuron_explainers(seed):
    rng = np.random.default_rng(seed)
    candidates = [str(v) for v in range(11)] + [" 3", "3\n", "07", "11", "x", "\n", " 10"]
    picks = rng.choice(len(candidates), size=8, replace=False)
    tops = {candidates[i]: float(np.log(rng.uniform(0.01, 1.0))) for i in picks}
    tops.setdefault("2", -1.0)  # at least one valid token
    _, theirs = compute_predicted_activation_stats_for_token(tops)
    assert expected_value(_exact_digit_probs(tops)) == pytest.approx(float(theirs), abs=1e-12)


def test_echo_response_is_read_with_exact_digit_tokens():
    # " 3" would have counted as 3 before; neuron-explainer (and now the echo reading) ignore it
    response = {
        "choices": [
            {
                "logprobs": {
                    "tokens": ["a", "\t", "0", "\n"],
                    "text_offset": [0, 1, 2, 3],
                    "top_logprobs": [
                        None,
                        {"\t": 0.0},
                        {"0": math.log(0.5), " 3": math.log(0.3), "8": math.log(0.2)},
                        {"\n": 0.0},
                    ],
                }
            }
        ]
    }
    values, _ = read_echo(response, [2])
    assert values[0] == pytest.approx((0 * 0.5 + 8 * 0.2) / 0.7, abs=1e-12)


def test_reading_ten_as_one_changes_the_correlation_not_only_the_scale():
    """A tokenizer that splits "10" gives no probability for 10: a token the simulator would rate
    10 is read as 1. Over four tokens the correlation falls from 1.0 to about 0.37, so the docstrings
    no longer claim it changes only the scale."""
    true = [0.0, 0.0, 5.0, 10.0]
    full = [expected_value(_exact_digit_probs({str(v): 0.0})) for v in (0, 0, 5, 10)]
    split = [expected_value(_exact_digit_probs({str(v): 0.0})) for v in (0, 0, 5, 1)]  # "10" seen as "1"
    assert pearson(true, full) == pytest.approx(1.0, abs=1e-12)
    assert pearson(true, split) == pytest.approx(0.3656362, abs=1e-6)
    assert pearson(true, split) == pytest.approx(_theirs(["a", "b", "c", "d"], true, split), abs=1e-9)


# -- the pipeline stores a NaN as a failed score with its reason -------------------------------------


class _NaNSimulator:
    method, model_name, kind = "test-nan-sim", "nan-model", "simulation"

    def simulate(self, explanation, windows):
        return [[math.nan if i == 0 else 1.0 for i in range(len(w.tokens))] for w in windows]

    def score(self, explanation, windows):
        return simulation_result(self, self.simulate(explanation, windows), windows)


def test_nan_prediction_is_stored_as_failed_score_with_reason(settings):
    from builders.search import UNITS, write_units

    if "test-nan-sim" not in scorer_names():
        register("test-nan-sim")(lambda *_: _NaNSimulator())
    ids = write_units(settings, UNITS[:1], index=False)
    eid = ids[UNITS[0].unit_id]
    score_stage(settings, eid, LabelOptions(scorers=("test-nan-sim",)))
    row = get_store(settings).get_score(eid, "test-nan-sim")
    assert row is not None and row.status == "failed" and row.value is None
    assert (
        row.error.startswith("ScoreError: held-out window 0:") and "simulated activations are not finite" in row.error
    )


def test_local_simulator_reads_digits_as_neuron_explainer_does(tiny_model_dir):
    """The local simulator's expected values equal neuron-explainer's reading of the full
    next-token distribution (every vocabulary entry as a "top logprob"), on the tiny model."""
    import torch

    from explainer.collect.models import load_model
    from explainer.llm.prompts import load_template
    from explainer.score.logits import LogitSimulator
    from store.records import Window

    sim = LogitSimulator(load_template("simulate"), model_path=str(tiny_model_dir))
    windows = [
        Window("w0", "top", "heldout", "d", "docs", ("The", " cat", " sat", " 10"), (0.0, 2.0, 0.5, 1.0)),
        Window("w1", "random", "heldout", "d", "code", ("def", " f", "(x)"), (1.0, 0.0, 3.0)),
    ]
    ours = sim.simulate("cats and animals", windows)
    lm = load_model(str(tiny_model_dir))
    tok = lm.tokenizer
    vocab = [tok.decode([i]) for i in range(lm.model.config.vocab_size)]
    for w, got in zip(windows, ours):
        ids, reads = sim.build_inputs("cats and animals", w, tok)
        with torch.no_grad():
            logprobs = lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        for r, value in zip(reads, got):
            row = logprobs[r].tolist()
            top = {}
            for i, s in enumerate(vocab):  # the whole vocabulary, as an API's top logprobs would list it
                top.setdefault(s, row[i])
            _, theirs = compute_predicted_activation_stats_for_token(top)
            assert value == pytest.approx(float(theirs), abs=1e-5)
