"""One audit, end to end: what ``explainer audit`` calls.

cases → unit statistics over the answers → probes, AUROC, transfer matrix, selected units, random
comparison → (optionally) the causal test on held-out cases → probe file and report files.
Everything about the input is checked before the model is loaded.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from explainer.audit.analysis import analyse
from explainer.audit.cases import MIN_PER_CLASS, CaseSetError, case_set_hash, read_cases, usable_domains
from explainer.audit.probefile import probe_document, write_probe
from explainer.audit.report import write_report


def hookpoint_of(layer: int | None, hookpoint: str | None) -> str:
    if (layer is None) == (hookpoint is None):
        raise CaseSetError("give a layer (MLP neurons) or a hookpoint, exactly one")
    if layer is not None:
        if layer < 0:
            raise CaseSetError(f"layer must be >= 0, not {layer}")
        return f"layers.{layer}.mlp"
    return str(hookpoint)


def confident_failures(found: Any, x: Any, cases: list[Any], k: int = 3) -> list[dict[str, Any]]:
    """The ``k`` held-out failures the pooled probe is surest of (highest logit): the cases to read
    token by token (``audit --label`` does, through the explained units)."""
    import numpy as np

    z = found.probe.decision(x)
    idx = [i for i in np.argsort(-z) if found.test[i] and cases[i].failed][:k]
    return [
        {
            "id": cases[i].id,
            "domain": cases[i].domain,
            "prompt": cases[i].prompt,
            "response": cases[i].response,
            "logit": round(float(z[i]), 4),
        }
        for i in idx
    ]


def run_audit(
    model: str,
    cases_path: str | Path,
    out_dir: str | Path,
    *,
    layer: int | None = None,
    hookpoint: str | None = None,
    sae: str | None = None,
    directions: str | None = None,
    device: str = "cpu",
    test_frac: float = 0.3,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    causal: bool = True,
    alphas: tuple[float, ...] | None = None,
    causal_cases: int = 24,
    random_draws: int = 20,
    bootstrap: int = 1000,
    batch: int = 8,
    loaded: Any = None,
) -> dict[str, Any]:
    """Run the audit and write ``probe.json``, ``audit.json`` and ``audit.md`` into ``out_dir``."""
    from explainer.audit.stats import case_statistics, unit_space

    started = time.perf_counter()
    hp_name = hookpoint_of(layer, hookpoint)
    cases = read_cases(cases_path)
    usable_domains(cases, min_per_class)  # fail early: one class, too few cases
    if not 0.05 <= test_frac <= 0.6:
        raise CaseSetError(f"test fraction must be in [0.05, 0.6], not {test_frac}")
    if loaded is None:
        from explainer.collect.models import load_model

        loaded = load_model(model, device)
    space = unit_space(loaded, hp_name, sae=sae, directions=directions)
    x = case_statistics(loaded, space, cases, batch=batch)
    unit_ids = [space.unit_id(i) for i in range(space.width)]
    found = analyse(
        x,
        cases,
        unit_ids,
        test_frac=test_frac,
        seed=seed,
        min_per_class=min_per_class,
        random_draws=random_draws,
        bootstrap=bootstrap,
    )
    provenance = {
        "case_set": str(cases_path),
        "case_set_sha256": case_set_hash(cases),
        "model": loaded.name,
        "model_source": str(Path(model).resolve()) if Path(model).exists() else model,
        "unit_space": space.describe(),
        "probe": {
            "penalty": "l1",
            "C": found.probe.C,
            "C_chosen_by": "stratified k-fold AUROC",
            "test_frac": test_frac,
            "seed": seed,
            "min_per_class": min_per_class,
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    result: dict[str, Any] = {"provenance": provenance, **found.summary}
    result["confident_failures"] = confident_failures(found, x, cases)
    if causal:
        from explainer.audit.causal import ALPHAS, causal_test

        held_out = [c for c, t in zip(cases, found.test, strict=True) if t]
        try:
            result["causal"] = causal_test(
                loaded,
                space,
                [int(i) for i in found.probe.selected],
                held_out,
                alphas=alphas or ALPHAS,
                seed=seed,
                max_cases=causal_cases,
            )
        except CaseSetError as exc:
            result["causal"] = {"skipped": str(exc)}
            result["warnings"].append(f"causal test skipped: {exc}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(found.probe.nonzero):
        write_probe(out / "probe.json", probe_document(space.describe(), found, unit_ids, provenance))
        result["probe_file"] = str(out / "probe.json")
    else:
        result["probe_file"] = None
        result["warnings"].append("the probe kept no unit: no probe file written")
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["report_files"] = write_report(result, out)
    return result
