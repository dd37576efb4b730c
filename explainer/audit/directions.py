"""Directions from a case set: ``explainer directions make``.

At a hookpoint whose values are the model's own activations (the residual stream ``layers.L``, an
MLP's output or input, an attention output — not ``layers.L.mlp``, whose audit statistic is a
contribution, not an activation), each case is the mean activation over its answer tokens. Per
class a direction is derived, written in the directions format (a ``.safetensors`` file with
``names`` and ``hookpoint`` metadata) so that it can be labelled, searched, steered and audited
like any other unit:

- ``mean-diff``: the mean of the ``fail`` cases minus the mean of the ``pass`` cases (``fail``),
  and its opposite (``pass``);
- ``probe``: the weight vector of an L2 logistic regression on the standardised activations,
  mapped back to the raw space (weights divided by each dimension's scale), and its opposite.

Pooled over every case, plus one ``fail@DOMAIN`` direction per domain with enough cases of both
classes. Each direction's training AUROC (its projection ranking fail above pass on the same
cases) is returned so that a direction that separates nothing is seen at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from explainer.audit.cases import MIN_PER_CLASS, Case, CaseSetError, read_cases, usable_domains

Method = Literal["mean-diff", "probe"]


def _direction(x: np.ndarray, y: np.ndarray, method: Method) -> np.ndarray:
    if method == "mean-diff":
        return x[y == 1].mean(0) - x[y == 0].mean(0)
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, y)
    return np.asarray(model.coef_[0] / scale)


def make_directions(
    lm: Any,
    cases: list[Case],
    hookpoint: str,
    method: Method = "mean-diff",
    min_per_class: int = MIN_PER_CLASS,
    batch: int = 8,
) -> tuple[np.ndarray, list[str], dict[str, float | None]]:
    """(unit vectors ``[n, d]``, their names, each one's training AUROC) at ``hookpoint``."""
    from explainer.audit.probe import auroc
    from explainer.audit.stats import case_statistics, unit_space

    if method not in ("mean-diff", "probe"):
        raise CaseSetError(f"unknown method {method!r}: use mean-diff or probe")
    space = unit_space(lm, hookpoint)
    if space.statistic != "activation":
        raise CaseSetError(
            f"{hookpoint} is an MLP's neurons, whose audit statistic is a contribution, not an activation: "
            f"derive directions at the residual stream (e.g. --hookpoint layers.{space.hookpoint.layer})"
        )
    y = np.array([1 if c.label == "fail" else 0 for c in cases])
    if y.min() == y.max():
        raise CaseSetError("the case set holds one class only: no direction separates it")
    domains, _ = usable_domains(cases, min_per_class)
    x = case_statistics(lm, space, cases, batch=batch).astype(np.float64)
    groups: list[tuple[str, np.ndarray]] = [("fail", np.ones(len(cases), bool))]
    groups += [(f"fail@{d}", np.array([c.domain == d for c in cases])) for d in domains if len(domains) > 1]
    vectors, names, separation = [], [], {}
    for name, m in groups:
        v = _direction(x[m], y[m], method)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise CaseSetError(f"direction {name!r} is zero: the classes have the same mean activation")
        v = v / norm
        train = auroc(y[m], x[m] @ v)
        opposite = name.replace("fail", "pass", 1)
        vectors += [v, -v]
        names += [name, opposite]
        separation[name] = None if train is None else round(train, 4)
        separation[opposite] = None if train is None else round(1.0 - train, 4)
    return np.stack(vectors).astype(np.float32), names, separation


def write_directions(path: str | Path, vectors: np.ndarray, names: list[str], hookpoint: str, provenance: dict) -> None:
    """The directions format of :mod:`explainer.collect.directions` (``.safetensors``)."""
    import torch
    from safetensors.torch import save_file

    out = Path(path)
    if out.suffix != ".safetensors":
        raise CaseSetError(f"-o {out}: directions are written as a .safetensors file")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"names": json.dumps(names), "hookpoint": hookpoint, "provenance": json.dumps(provenance)}
    tmp = out.with_name(out.name + ".tmp")
    save_file({"directions": torch.from_numpy(vectors).contiguous()}, str(tmp), metadata=meta)
    tmp.replace(out)  # never a half-written file under the final name


def directions_from_cases(
    lm: Any, cases_path: str | Path, hookpoint: str, out: str | Path, method: Method = "mean-diff", **kw: Any
) -> dict[str, Any]:
    """Read the cases, derive the directions, write them; what ``explainer directions make`` prints."""
    from explainer.audit.cases import case_set_hash

    cases = read_cases(cases_path)
    vectors, names, separation = make_directions(lm, cases, hookpoint, method, **kw)
    provenance = {
        "case_set": str(cases_path),
        "case_set_sha256": case_set_hash(cases),
        "model": lm.name,
        "method": method,
    }
    write_directions(out, vectors, names, hookpoint, provenance)
    return {
        "out": str(out),
        "hookpoint": hookpoint,
        "method": method,
        "directions": [{"index": i, "name": n, "train_auroc": separation[n]} for i, n in enumerate(names)],
        "width": int(vectors.shape[1]),
        "cases": len(cases),
    }
