"""Records → files in the three formats. Each writer fills a temporary folder beside the target and
renames it into place at the end, so a failure leaves nothing half written; an existing target is
refused unless ``force``.

- **neuron-explainer**: ``{out}/{layer}/{index}.jsonl``, one line holding a ``NeuronSimulationResults``
  (every object with its ``dataclass_name``), as its ``load_neuron_explanations(out, layer, index)``
  reads it. ``ev_correlation_score`` is our simulation score; the sequences are the held-out windows
  with their simulated activations (when the score recorded them).
- **Neuronpedia**: ``{out}/v1/{model}/{source}/explanations/batch-{n}.jsonl.gz`` (the layout of
  Neuronpedia's dumps; ``source`` is the ``layer`` field), one explanation per line with ``modelId``, ``layer``
  (``{L}-{site}``), ``index`` (a string), ``description``, ``typeName``, ``explanationModelName`` and
  ``scores`` as ``{value, explanationScoreTypeName, explanationScoreModelName}``.
- **delphi**: ``{out}/explanations/{module}_latent{index}.txt`` (the explanation as a JSON string),
  ``{out}/scores/{scorer}/{module}_latent{index}.txt`` and ``{out}/run_config.json``. A score file is
  delphi's list of per-example results, one per held-out window (``str_tokens``, ``activations``,
  ``distance``: the quantile, -1 for a random window; ``activating``; ``prediction``, ``probability``
  and ``correct`` from our detection scorer's P(yes), ``None`` for scorers that make no yes/no call),
  each row also carrying our figure as ``final_score`` (and a simulator's prediction as ``simulated``).
  An imported delphi score writes back the rows it came with. A score with no rows (an imported
  Neuronpedia score, say) has no file: delphi cannot read one without rows
  (:func:`unwritable_scores` names them, and the export's summary counts them). A score folder is the
  scorer's name with ``/`` and ``:`` as ``--`` (``scores/delphi--detection/`` for an imported one).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from explainer.errors import InputError
from explainer.formats.record import FORMATS, PortableExplanation

NEURONPEDIA_BATCH = 1000
"""Explanations per Neuronpedia JSONL batch file."""


@contextmanager
def staged(out: Path, force: bool) -> Iterator[Path]:
    """A temporary folder to write into; renamed to ``out`` on success, removed on failure."""
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() and not out.is_symlink() else out.unlink()
    tmp.rename(out)


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _pearson(x: tuple[float, ...], y: tuple[float, ...]) -> float:
    import numpy as np

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def neuron_explainer_json(layer: int, index: int, records: list[PortableExplanation]) -> dict[str, Any]:
    """The ``NeuronSimulationResults`` object of one neuron."""
    scored = []
    for r in records:
        ev = next((s.value for s in r.scores if s.name == "ev_correlation_score"), None)
        seqs = []
        for s in r.sequences:
            seqs.append(
                {
                    "dataclass_name": "ScoredSequenceSimulation",
                    "simulation": {
                        "dataclass_name": "SequenceSimulation",
                        "tokens": list(s.tokens),
                        "expected_activations": list(s.predicted),
                        "activation_scale": "simulated_normalized_activations",
                        "distribution_values": [],
                        "distribution_probabilities": [],
                        "uncalibrated_simulation": None,
                    },
                    "true_activations": list(s.true),
                    "ev_correlation_score": _pearson(s.true, s.predicted),
                    "rsquared_score": None,
                    "absolute_dev_explained_score": None,
                }
            )
        scored.append(
            {
                "dataclass_name": "ScoredExplanation",
                "explanation": r.text,
                "scored_simulation": {
                    "dataclass_name": "ScoredSimulation",
                    "scored_sequence_simulations": seqs,
                    "ev_correlation_score": None if ev is None else _num(ev),
                    "rsquared_score": None,
                    "absolute_dev_explained_score": None,
                },
            }
        )
    return {
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": index},
        "scored_explanations": scored,
    }


def _write_neuron_explainer(records: list[PortableExplanation], out: Path) -> int:
    by_unit: dict[tuple[int, int], list[PortableExplanation]] = {}
    for r in records:
        if r.layer is None:
            raise InputError(f"unit {r.index} of {r.hookpoint or r.module}: neuron-explainer files need a layer number")
        by_unit.setdefault((r.layer, r.index), []).append(r)
    for (layer, index), group in sorted(by_unit.items()):
        (out / str(layer)).mkdir(exist_ok=True)
        line = json.dumps(neuron_explainer_json(layer, index, group), allow_nan=False)
        (out / str(layer) / f"{index}.jsonl").write_text(line + "\n", encoding="utf-8")
    return len(by_unit)


def neuronpedia_source(r: PortableExplanation) -> str:
    """Neuronpedia's ``layer`` (a source id ``{L}-{site}``) for a record of ours."""
    if r.module:
        return r.module
    site = "res"
    if r.hookpoint and r.layer is not None:
        rest = r.hookpoint.split(f"layers.{r.layer}", 1)[-1].strip(".")
        site = rest.replace(".", "-").replace("_", "-") or "res"
    return f"{r.layer}-{site}"


def neuronpedia_json(r: PortableExplanation) -> dict[str, Any]:
    return {
        "modelId": r.model,
        "layer": neuronpedia_source(r),
        "index": str(r.index),
        "description": r.text,
        "typeName": r.explanation_type or "activation-explainer",
        "explanationModelName": r.explainer_model,
        "scores": [
            {"value": s.value, "explanationScoreTypeName": s.name, "explanationScoreModelName": s.model}
            for s in r.scores
            if math.isfinite(s.value)
        ],
    }


def neuronpedia_folder(r: PortableExplanation) -> Path:
    """Where a record's line goes, as Neuronpedia lays out its dumps: ``v1/{MODEL_ID}/{SOURCE_ID}/explanations``
    (a ``/`` in a name, as in a hub id ``org/model``, becomes ``--``)."""
    model = (r.model or "unknown-model").replace("/", "--")
    return Path("v1", model, neuronpedia_source(r).replace("/", "--"), "explanations")


def _write_neuronpedia(records: list[PortableExplanation], out: Path) -> int:
    groups: dict[Path, list[PortableExplanation]] = {}
    for r in records:
        groups.setdefault(neuronpedia_folder(r), []).append(r)
    for folder, group in sorted(groups.items()):
        (out / folder).mkdir(parents=True)
        for n in range(0, len(group), NEURONPEDIA_BATCH):
            lines = [json.dumps(neuronpedia_json(r), allow_nan=False) for r in group[n : n + NEURONPEDIA_BATCH]]
            with gzip.open(out / folder / f"batch-{n // NEURONPEDIA_BATCH}.jsonl.gz", "wt", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in lines))
    return len(records)


def delphi_module(r: PortableExplanation) -> str:
    """delphi's module name: ours up to the SAE suffix (``layers.1.sae-x-abc123`` → ``layers.1``)."""
    if r.module:
        return r.module
    if not r.hookpoint:
        raise InputError(f"unit {r.index}: a delphi file name needs the unit's hookpoint")
    return r.hookpoint.split(".sae-", 1)[0]


DELPHI_ROW_FIELDS = ("str_tokens", "distance", "activating", "prediction", "probability", "correct", "activations")
"""The fields of a per-example row that delphi's ``result_analysis.load_data`` reads (``str_tokens`` a list)."""


def delphi_folder(scorer: str) -> str:
    """A score's folder name: its name with ``/`` and ``:`` (an imported ``{tool}:{type}``) as ``--``."""
    return re.sub(r"[/:\\]", "--", scorer)


def delphi_readable(examples: tuple[dict[str, Any], ...]) -> bool:
    """Whether delphi can read these rows as a score file: at least one, each with every field it reads."""
    return bool(examples) and all(
        all(k in e for k in DELPHI_ROW_FIELDS) and isinstance(e["str_tokens"], list) for e in examples
    )


def _delphi_latents(records: list[PortableExplanation]) -> Iterator[tuple[str, PortableExplanation]]:
    """One record per latent (the first: the caller orders the best first) with its file stem."""
    seen: set[str] = set()
    for r in records:
        latent = f"{delphi_module(r)}_latent{r.index}"
        if latent not in seen:
            seen.add(latent)
            yield latent, r


def unwritable_scores(fmt: str, records: list[PortableExplanation]) -> list[str]:
    """The scores (``{latent}:{scorer}``) an export in ``fmt`` leaves out: in delphi, those without
    per-example rows (an imported Neuronpedia or neuron-explainer score, a score whose held-out
    windows are gone), since delphi reads a score file only as such rows."""
    if fmt != "delphi":
        return []
    return [
        f"{latent}:{s.name}"
        for latent, r in _delphi_latents(records)
        for s in r.scores
        if math.isfinite(s.value) and not delphi_readable(s.examples)
    ]


def _write_delphi(records: list[PortableExplanation], out: Path) -> int:
    (out / "explanations").mkdir()
    n = 0
    for latent, r in _delphi_latents(records):
        n += 1
        (out / "explanations" / f"{latent}.txt").write_text(json.dumps(r.text), encoding="utf-8")
        for s in r.scores:
            if not math.isfinite(s.value) or not delphi_readable(s.examples):
                continue  # see unwritable_scores
            folder = out / "scores" / delphi_folder(s.name)
            folder.mkdir(parents=True, exist_ok=True)
            rows = [{**e, "final_score": s.value, "score_type": s.name, "scorer_model": s.model} for e in s.examples]
            (folder / f"{latent}.txt").write_text(json.dumps(rows, allow_nan=False), encoding="utf-8")
    first = records[0] if records else None
    config = {
        "model": first.model if first else None,
        "sparse_model": None,
        "hookpoints": sorted({delphi_module(r) for r in records}),
        "explainer_model": first.explainer_model if first else None,
        "written_by": "activation-explainer export",
    }
    (out / "run_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return n


_WRITERS: dict[str, Callable[[list[PortableExplanation], Path], int]] = {
    "neuron-explainer": _write_neuron_explainer,
    "neuronpedia": _write_neuronpedia,
    "delphi": _write_delphi,
}


def write(fmt: str, records: list[PortableExplanation], out: str | Path, force: bool = False) -> int:
    """Write ``records`` to ``out`` (a folder) in ``fmt``; returns how many units (or lines) it holds."""
    if fmt not in _WRITERS:
        raise InputError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    with staged(Path(out).expanduser(), force) as tmp:
        return _WRITERS[fmt](records, tmp)
