"""Scores say what they mean: search hits and `show` put each score in words (against chance and
fixed bands) with the scorer's measured discrimination, mark no-LLM baseline explanations, and a
search with no good match says so."""

from __future__ import annotations

import json

import pytest
from builders.search import SCORER, unit

from explainer.runtime import get_store
from explainer.score.meaning import discrimination_words, score_meaning
from workers.cli import main


@pytest.mark.parametrize(
    "value, lo, window, level",
    [
        (0.004, -0.24, False, "none"),
        (0.15, 0.05, False, "weak"),
        (0.31, 0.2, False, "partial"),
        (0.62, 0.52, False, "good"),
        (0.55, 0.52, True, "weak"),
        (0.55, 0.45, True, "none"),
        (0.8, 0.7, True, "good"),
        (None, None, False, "none"),
    ],
)
def test_score_meaning_bands(value, lo, window, level):
    m = score_meaning(value, lo, None, window_level=window)
    assert m["level"] == level and m["words"].startswith({"none": "no evidence"}.get(level, level))


def test_discrimination_words():
    assert "AUROC 0.81 on 24 planted concepts" in discrimination_words({"auroc": 0.81, "n_concepts": 24})
    assert "never measured" in discrimination_words(None)


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
