"""``explainer steer`` on a stored unit of the tiny LLaMA: side-by-side output, JSON, and every kind of
bad input as one line on stderr with exit status 2."""

from __future__ import annotations

import json

import pytest
from builders.intervene import collect_tiny

from explainer.runtime import get_store
from workers.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


@pytest.fixture
def unit(settings, tiny_model_dir, tmp_path):
    return collect_tiny(settings, tiny_model_dir, tmp_path)[1][0]


def test_steer_prints_clean_and_steered_side_by_side(settings, unit, capsys):
    code, out, err = run(capsys, "steer", unit, "--prompt", "def total(xs):", "--strength", "40", "--new-tokens", "4")
    assert code == 0, err
    assert "clean" in out and "| steered" in out and "KL(clean ‖ steered)" in out
    assert "rose:" in out and "fell:" in out
    code, out, _ = run(
        capsys, "steer", unit, "--prompt", "def total(xs):", "--mode", "clamp", "--strength", "5", "--json"
    )
    r = json.loads(out)
    assert code == 0 and r["mode"] == "clamp" and r["strength"] == 5.0 and r["kl"] >= 0 and r["kind"] == "neuron"
    assert len(r["risen"]) == 10 and isinstance(r["clean"], str)


def test_steer_finds_a_strength_for_a_target_kl(settings, unit, capsys):
    code, out, err = run(capsys, "steer", unit, "--prompt", "def total(xs):", "--target-kl", "0.001", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["bisection_steps"] >= 1 and abs(r["kl"] - 0.001) <= 0.0001


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strength", "nan"], "finite"),
        (["--strength", "inf"], "finite"),
        (["--strength", "1e12"], "out of range"),
        (["--mode", "clamp"], "clamp needs a strength"),
        (["--new-tokens", "0"], "new tokens"),
    ],
)
def test_bad_strengths_and_options(settings, unit, capsys, args, message):
    code, _, err = run(capsys, "steer", unit, "--prompt", "hello", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_unknown_unit_empty_prompt_and_unloadable_model(settings, unit, capsys):
    code, _, err = run(capsys, "steer", "tiny-llama/layers.2.mlp/99999", "--prompt", "hi", "--strength", "1")
    assert code == 2 and "unknown unit id(s): tiny-llama/layers.2.mlp/99999" in err
    code, _, err = run(capsys, "steer", unit, "--prompt", "  ", "--strength", "1")
    assert code == 2 and "prompt is empty" in err
    # the collection's model is not on this machine any more
    from sqlalchemy import update

    from store.schema import collections

    store = get_store(settings)
    with store.engine.begin() as conn:
        conn.execute(update(collections).values(config=json.dumps({"provenance": {"model": {"given": "/gone/tiny"}}})))
    code, _, err = run(capsys, "steer", unit, "--prompt", "hi", "--strength", "1")
    assert code == 2 and "unknown model '/gone/tiny'" in err
