"""Test data for explanation export and import: three units of one collection (``tiny`` /
``layers.1.mlp`` / 0, 1, 2) and the files other tools write (a Neuronpedia dump line, a delphi
run folder with per-example score rows)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from builders.search import UNITS, collection_id, write_units

MINE = [dataclasses.replace(u, score=None) for u in UNITS[:3]]
CID = collection_id(MINE[0])

DELPHI_EXAMPLES = [  # 3 activating (2 found), 2 not (1 rejected), 1 failed: balanced accuracy (2/3 + 1/2) / 2
    {"str_tokens": ["a"], "activating": True, "prediction": True},
    {"str_tokens": ["b"], "activating": True, "prediction": True},
    {"str_tokens": ["c"], "activating": True, "prediction": False},
    {"str_tokens": ["d"], "activating": False, "prediction": False},
    {"str_tokens": ["e"], "activating": False, "prediction": True},
    {"str_tokens": ["f"], "activating": False, "prediction": None},
]
DELPHI_BALANCED_ACCURACY = (2 / 3 + 1 / 2) / 2


def labeled_units(settings: Any) -> dict[str, str]:
    """The three units written and explained, with real simulation-embedding scores (MiniLM)."""
    from explainer.pipeline.options import LabelOptions
    from explainer.pipeline.stages import score_stage
    from store.keyword import SEARCH_SCORER

    ids = write_units(settings, MINE, index=False)
    for eid in ids.values():
        score_stage(settings, eid, LabelOptions(scorers=(SEARCH_SCORER,)))
    return ids


def neuronpedia_line(index: int, description: str, score: float = 0.33, **kw: Any) -> str:
    """One line of a Neuronpedia explanation dump for unit ``index`` of layer 1's MLP."""
    base = {
        "modelId": "tiny",
        "layer": "1-mlp",
        "index": str(index),
        "description": description,
        "typeName": "oai_token-act-pair",
        "explanationModelName": "gpt-4o-mini",
        "scores": [
            {"value": score, "explanationScoreTypeName": "recall_alt", "explanationScoreModelName": "gpt-4o-mini"}
        ],
    }
    return json.dumps({**base, **kw}) + "\n"


def delphi_run(path: Path, index: int = 0, text: str = "citations of papers") -> Path:
    """A delphi run folder as its pipeline writes it: one explanation, one detection score file of
    per-example rows (every field delphi's ``ClassifierOutput`` has)."""
    (path / "explanations").mkdir(parents=True)
    (path / "scores" / "detection").mkdir(parents=True)
    (path / "run_config.json").write_text(json.dumps({"model": "org/tiny", "explainer_model": "llama-70b"}))
    (path / "explanations" / f"layers.1.mlp_latent{index}.txt").write_text(json.dumps(text))
    rows = [
        {
            **e,
            "activations": [1.0] if e["activating"] else [0.0],
            "distance": 0 if e["activating"] else -1,
            "probability": None,
            "correct": None if e["prediction"] is None else e["prediction"] == e["activating"],
        }
        for e in DELPHI_EXAMPLES
    ]
    (path / "scores" / "detection" / f"layers.1.mlp_latent{index}.txt").write_text(json.dumps(rows))
    return path
