"""Files in the three formats → :class:`~explainer.formats.record.PortableExplanation` records.

Every file is read and checked before anything is returned; a file that is not what its format says
is an :class:`~explainer.errors.InputError` naming the file and what is wrong.

- **neuron-explainer**: a ``.jsonl``/``.json`` file, or a folder of them (``{layer}/{index}.jsonl``),
  each line a ``NeuronSimulationResults``; every ``ScoredExplanation`` becomes a record, with its
  ``ev_correlation_score``. The format names neither the subject nor the explainer model.
- **Neuronpedia**: ``.jsonl`` or ``.jsonl.gz`` batches (a file or a folder of them), one explanation
  per line; its scores keep their type names.
- **delphi**: a run folder with ``explanations/{module}_latent{i}.txt`` (a JSON string), optional
  ``scores/{scorer}/{module}_latent{i}.txt`` and ``run_config.json`` (the model and explainer model).
  A score file of per-example results (``activating``, ``prediction``) gives delphi's balanced
  accuracy; one with ``final_score`` gives the mean of it. The rows are kept with the score (an
  import stores them in the score's details; an export writes them back).
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explainer.errors import InputError
from explainer.formats.record import FORMATS, PortableExplanation, PortableScore, layer_of


def _load_json(path: Path, text: str, where: str = "") -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}{where}: not JSON: {exc}") from exc


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise InputError(f"{path}: no {' or '.join(suffixes)} files here")
    return files


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _need(obj: Any, keys: tuple[str, ...], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{path}{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise InputError(f"{path}{where}: missing field(s) {', '.join(missing)}")
    return obj


def _int(value: Any, path: Path, where: str, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}{where}: {what} {value!r} is not an integer") from None
    if n < 0 or str(n) != str(value).strip():
        raise InputError(f"{path}{where}: {what} {value!r} is not a non-negative integer")
    return n


# -- neuron-explainer ---------------------------------------------------------------------------


def read_neuron_explainer(path: Path) -> list[PortableExplanation]:
    out = []
    for f in _files(path, (".jsonl", ".json")):
        for n, line in _lines(f):
            where = f" line {n}"
            obj = _need(_load_json(f, line, where), ("neuron_id", "scored_explanations"), f, where)
            if obj.get("dataclass_name") not in (None, "NeuronSimulationResults"):
                raise InputError(f"{f}{where}: a {obj.get('dataclass_name')}, not NeuronSimulationResults")
            nid = _need(obj["neuron_id"], ("layer_index", "neuron_index"), f, where + " neuron_id")
            layer = _int(nid["layer_index"], f, where, "layer_index")
            index = _int(nid["neuron_index"], f, where, "neuron_index")
            if not isinstance(obj["scored_explanations"], list):
                raise InputError(f"{f}{where}: scored_explanations is not a list")
            for i, se in enumerate(obj["scored_explanations"]):
                se = _need(se, ("explanation",), f, f"{where} scored_explanations[{i}]")
                text = se["explanation"]
                if not isinstance(text, str) or not text.strip():
                    raise InputError(f"{f}{where} scored_explanations[{i}]: the explanation is empty")
                sim = se.get("scored_simulation") or {}
                ev = _finite(sim.get("ev_correlation_score")) if isinstance(sim, dict) else None
                scores = (PortableScore("ev_correlation_score", ev),) if ev is not None else ()
                out.append(PortableExplanation(index, text.strip(), layer, scores=scores, source_file=str(f)))
    return out


# -- Neuronpedia --------------------------------------------------------------------------------


def read_neuronpedia(path: Path) -> list[PortableExplanation]:
    out = []
    for f in _files(path, (".jsonl", ".jsonl.gz")):
        for n, line in _lines(f):
            where = f" line {n}"
            obj = _need(_load_json(f, line, where), ("modelId", "layer", "index", "description"), f, where)
            text = obj["description"]
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{f}{where}: the description is empty")
            source = str(obj["layer"])
            scores = []
            for s in obj.get("scores") or []:
                s = _need(s, ("value",), f, f"{where} scores")
                value = _finite(s["value"])
                if value is not None:
                    name = str(s.get("explanationScoreTypeName") or "score")
                    scores.append(PortableScore(name, value, s.get("explanationScoreModelName")))
            out.append(
                PortableExplanation(
                    _int(obj["index"], f, where, "index"),
                    text.strip(),
                    layer_of(source),
                    model=str(obj["modelId"]),
                    module=source,
                    explainer_model=obj.get("explanationModelName"),
                    explanation_type=obj.get("typeName"),
                    scores=tuple(scores),
                    source_file=str(f),
                )
            )
    return out


# -- delphi -------------------------------------------------------------------------------------

_LATENT = re.compile(r"(?P<module>.+)_latent(?P<index>\d+)\.txt")


def _delphi_score(f: Path) -> tuple[float | None, tuple[dict[str, Any], ...]]:
    """The score of a delphi score file and its per-example rows (kept so that an export writes them back)."""
    rows = _load_json(f, f.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise InputError(f"{f}: a delphi score file holds a JSON list, got {type(rows).__name__}")
    examples = tuple(r for r in rows if isinstance(r, dict))
    judged = [r for r in examples if r.get("prediction") is not None and "activating" in r]
    if judged:  # delphi's balanced accuracy of its calls (prediction >= 0.5 against activating)
        pos = [r for r in judged if r["activating"]]
        neg = [r for r in judged if not r["activating"]]
        hit = lambda r: float(r["prediction"]) >= 0.5  # noqa: E731  (bool or probability)
        tpr = sum(hit(r) for r in pos) / len(pos) if pos else 0.0
        tnr = sum(not hit(r) for r in neg) / len(neg) if neg else 0.0
        return (tpr + tnr) / 2, examples
    finals = [x for r in examples if (x := _finite(r.get("final_score"))) is not None]
    return (sum(finals) / len(finals) if finals else None), examples


def read_delphi(path: Path) -> list[PortableExplanation]:
    if not (path / "explanations").is_dir():
        raise InputError(f"{path}: not a delphi run folder (no explanations/ folder)")
    config: dict[str, Any] = {}
    if (path / "run_config.json").is_file():
        config = _need(_load_json(path / "run_config.json", (path / "run_config.json").read_text()), (), path, "")
    scorers = sorted(p for p in (path / "scores").iterdir() if p.is_dir()) if (path / "scores").is_dir() else []
    out = []
    files = sorted((path / "explanations").glob("*.txt"))
    if not files:
        raise InputError(f"{path / 'explanations'}: no explanation files")
    for f in files:
        m = _LATENT.fullmatch(f.name)
        if not m:
            raise InputError(f"{f}: not named {{module}}_latent{{index}}.txt")
        text = _load_json(f, f.read_text(encoding="utf-8"))
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{f}: the explanation is not a non-empty JSON string")
        scores = []
        for d in scorers:
            sf = d / f.name
            if sf.is_file():
                value, examples = _delphi_score(sf)
                if value is not None:
                    scores.append(PortableScore(d.name, value, config.get("explainer_model"), examples))
        module = m.group("module")
        out.append(
            PortableExplanation(
                int(m.group("index")),
                text.strip(),
                layer_of(module),
                model=config.get("model"),
                module=module,
                explainer_model=config.get("explainer_model"),
                scores=tuple(scores),
                source_file=str(f),
            )
        )
    return out


_READERS: dict[str, Callable[[Path], list[PortableExplanation]]] = {
    "neuron-explainer": read_neuron_explainer,
    "neuronpedia": read_neuronpedia,
    "delphi": read_delphi,
}


def read(fmt: str, path: str | Path) -> list[PortableExplanation]:
    """Every explanation in ``path`` (a file or folder in ``fmt``)."""
    if fmt not in _READERS:
        raise InputError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist")
    records = _READERS[fmt](p)
    if not records:
        raise InputError(f"{p}: no explanations in it")
    return records
