"""Scores say what they mean: search hits and `show` put each score in words (against chance and
fixed bands) with the scorer's measured discrimination, mark no-LLM baseline explanations, and a
search with no good match says so."""

from __future__ import annotations

import json

import pytest
from builders.search import SCORER, unit

from explainer.runtime import get_store
from explainer.score.meaning import discrimination_words, score_kind, score_meaning
from workers.cli import main


@pytest.mark.parametrize(
    "value, lo, kind, level",
    [
        (0.004, -0.24, "simulation", "none"),
        (0.15, 0.05, "simulation", "weak"),
        (0.31, 0.2, "simulation", "partial"),
        (0.62, 0.52, "simulation", "good"),
        (0.55, 0.52, "window", "weak"),
        (0.55, 0.45, "window", "none"),
        (0.8, 0.7, "window", "good"),
        (None, None, "simulation", "none"),
        (0.06, 0.01, "intervention", "positive"),
        (0.55, 0.45, "intervention", "positive"),  # chance is 0, not the window scorers' 0.5
        (0.06, -0.01, "intervention", "none"),
        (0.06, None, "intervention", "positive"),
        (None, None, "intervention", "none"),
    ],
)
def test_score_meaning_bands(value, lo, kind, level):
    m = score_meaning(value, lo, None, kind=kind)
    assert m["level"] == level and m["words"].startswith({"none": "no evidence"}.get(level, level))


def test_intervention_scores_say_what_steering_does_not_when_the_unit_fires():
    yes = score_meaning(0.057, 0.012, 0.1, kind="intervention")["words"]
    assert yes == (
        "positive: the text steered by this unit matches the explanation better than the clean text "
        "(+0.057 per nat of KL)"
    )
    assert "fires" not in yes
    none = score_meaning(0.2, -0.1, 0.5, kind="intervention")["words"]
    assert none.startswith("no evidence: steering this unit does not") and "interval includes 0" in none
    against = score_meaning(-0.3, -0.5, -0.1, kind="intervention")["words"]
    assert against.startswith("no evidence: the text steered by this unit matches the explanation worse") and (
        "-0.300 per nat of KL" in against
    )
    assert score_kind({"kind": "intervention"}) == "intervention" and score_kind(None) == "simulation"
    assert score_kind({"kind": "window"}) == "window" and score_kind({}) == "simulation"


def test_every_view_words_an_intervention_score_as_one(searchable, tmp_path, capsys):
    """show, search (CLI and HTTP), the unit page and the reports word a stored intervention score
    by what steering does, not by when the unit fires."""
    from fastapi.testclient import TestClient

    from explainer.api.app import ApiConfig, create_app

    store = get_store(searchable)
    uid = "tiny/layers.1.mlp/9"  # explained, no other score
    (e,) = store.explanations_for([uid])
    store.save_score(
        explanation_id=e.id,
        scorer="intervention-embedding",
        simulator_model="all-MiniLM-L6-v2",
        status="ok",
        value=0.08,
        ci_low=0.02,
        ci_high=0.14,
        details={"kind": "intervention", "method": "intervention-embedding"},
    )
    steered = "positive: the text steered by this unit matches the explanation better than the clean text"
    assert main(["show", uid]) == 0
    out = capsys.readouterr().out
    assert f"score: intervention-embedding +0.080 [+0.02, +0.14]: {steered} (+0.080 per nat of KL)" in out
    assert main(["search", "negation words such as not", "--limit", "3", "--json"]) == 0
    hit = next(h for h in json.loads(capsys.readouterr().out) if h["unit_id"] == uid)
    assert hit["score"]["meaning"].startswith(steered) and hit["intervention_scorer"] == "intervention-embedding"
    with TestClient(create_app(searchable, ApiConfig(read_keys=("k",)))) as client:
        page = client.get(f"/api/v1/units/{uid}", headers={"X-API-Key": "k"}).json()
        (score,) = page["explanations"][0]["scores"]
        assert score["meaning"]["level"] == "positive" and score["meaning"]["words"].startswith(steered)
        found = client.get("/api/v1/search", params={"q": "negation words such as not"}, headers={"X-API-Key": "k"})
        assert next(h for h in found.json()["hits"] if h["unit_id"] == uid)["score"]["meaning"].startswith(steered)
    assert main(["report", "--units", uid, "-o", str(tmp_path / "r.md")]) == 0
    capsys.readouterr()
    assert steered in (tmp_path / "r.md").read_text()


def test_discrimination_words():
    assert "AUROC 0.81 on 24 planted concepts" in discrimination_words({"auroc": 0.81, "n_concepts": 24})
    assert "never measured" in discrimination_words(None)
    # the intervention scorers were measured on planted steering units, not on input-side concepts
    from explainer.score.registry import measured_discrimination

    causal = discrimination_words(measured_discrimination()["intervention"])
    assert causal.endswith("on 6 planted causal (steering) units") and "concepts" not in causal


def test_search_and_show_put_scores_in_words(searchable, capsys):
    assert main(["search", "fabricated citations", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert f"score: good: the explanation predicts well when this unit fires ({SCORER};" in out
    assert "no good match" not in out
    assert main(["search", "fabricated citations", "--limit", "1", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)[0]
    assert hit["match"] == "good" and hit["explanation_source"] == "llm"
    assert hit["score"]["meaning"].startswith("good:") and "AUROC" in hit["score"]["scorer_discrimination"]

    assert main(["show", unit(5).unit_id]) == 0  # score 0.12 with interval [0.02, 0.22]
    out = capsys.readouterr().out
    assert f"score: {SCORER} +0.120 [+0.02, +0.22]: weak: the explanation predicts little" in out
    assert "stats: max 4.000" in out and '{"' not in out  # no raw JSON dicts


def test_baseline_explanations_are_marked(searchable, capsys):
    store = get_store(searchable)
    e = store.explanations_for([unit(0).unit_id])[0]
    with store.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text("update explanations set settings = :s where id = :i"),
            {"s": json.dumps({"selected": "baseline"}), "i": e.id},
        )
    assert main(["show", unit(0).unit_id]) == 0
    assert "[no-LLM baseline]" in capsys.readouterr().out
    assert main(["search", "fabricated citations", "--limit", "1"]) == 0
    assert "[no-LLM baseline]" in capsys.readouterr().out


def test_a_search_without_a_good_match_says_so(searchable, capsys):
    assert main(["search", "zqxv wobbly pterodactyl", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no good match:")


def _hit(rank, match, value=0.62, low=0.52):
    return {
        "rank": rank,
        "unit_id": f"tiny/layers.1.mlp/{rank}",
        "explanation": f"explanation {rank}",
        "match": match,
        "similarity": 0.5,
        "semantic_rank": rank,
        "keyword_rank": None,
        "score": {
            "value": value,
            "ci95": [low, value + 0.1],
            "scorer": SCORER,
            "meaning": score_meaning(value, low)["words"],
            "scorer_discrimination": "d",
        },
    }


def test_search_marks_weak_hits_and_lists_few_when_none_is_good(capsys):
    from explainer.cli.browse import print_search

    print_search([_hit(1, "good"), _hit(2, "weak")])
    out = capsys.readouterr().out.splitlines()
    assert not any("weak match" in ln for ln in out[:2]) and any("[weak match]" in ln for ln in out[2:])
    print_search([_hit(i, "weak") for i in range(1, 11)])
    out = capsys.readouterr().out
    assert out.startswith("no good match:") and "tiny/layers.1.mlp/3 " in out and "tiny/layers.1.mlp/4 " not in out


def test_label_and_calibrate_summaries_give_the_level(capsys):
    from explainer.cli.labeling import print_label
    from explainer.cli.reports import print_calibrate

    score = {"scorer": SCORER, "value": 0.15, "ci95": [0.05, 0.25], "meaning": score_meaning(0.15, 0.05)["words"]}
    unit_row = {"unit_id": "u/1", "status": "ok", "explanation": "dates", "error": None, "score": score}
    run = {"done": 1, "failed": 0, "pending": 0, "units": 1, "tokens": 9}
    print_label(
        {
            "run_id": "r" * 16,
            "run": run,
            "already_finished": 0,
            "submitted": 1,
            "seconds": 1.0,
            "units": [unit_row],
            "task_errors": {},
        }
    )
    assert "+0.150 weak" in capsys.readouterr().out
    ok = {"unit_id": "u/1", "scorer": SCORER, "status": "ok", "value": 0.62, "ci95": [0.52, 0.7], "kind": "simulation"}
    print_calibrate({"domain": "mine", "corpus": "c.txt", "results": [ok], "skipped": []})
    assert "+0.620 [+0.52, +0.70] good: the explanation predicts well" in capsys.readouterr().out
