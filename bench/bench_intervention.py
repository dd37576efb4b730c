"""Intervention benchmark: does the intervention scorer rank a planted causal unit's true
description above the other concepts' descriptions?

Planted causal units on SmolLM2-135M: for each concept (bench/concepts.yaml or --concepts FILE), a
steering direction at the residual stream after block --layer, built from the model's own
activations over the default corpus — the mean residual at the positions where the concept's
tokens are (``--align same``) or where they come next (``--align next``, default: the residual
that predicts them), minus the mean elsewhere. The directions are written to a directions file and
steered through the same path as any unit (``resolve_unit`` + the ``intervention`` scorers). Per
unit, the strength is bisected to the target KL on the neutral prompts, clean and steered texts are
generated once, and every concept's description is judged against them. Prints per scorer the
AUROC (right description = positive), the share of (right, wrong) pairs ranked correctly and the
mean gap; the cost per unit (forward passes, generated tokens, seconds) beside the simulation
scorers' (forward passes = held-out windows for ``simulation-logits``); each unit's own description
scored on the input side too (``simulation-context`` on the planted record's held-out windows) beside
its output-side ``intervention`` score, and the units where the two disagree by the reports' rule
(``input_output_disagree``) with their first clean and steered texts; and one JSON line at the end.
A unit that fails (a target KL no strength reaches) is listed with its reason; the figures are
computed on the units left (null when none is).

``--write`` stores the intervention scorers' AUROC on these planted causal units in
explainer/score/scorer_discrimination.json, which reports show beside every intervention score.

    python -m bench.bench_intervention [--concepts FILE] [--units 10] [--layer 15] [--align next|same] [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench import configure_runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_discrimination import CAUSAL_SCORERS, auroc  # noqa: E402
from explainer.collect.corpus import default_corpus  # noqa: E402
from explainer.collect.hooks import capture, resolve_hookpoint  # noqa: E402
from explainer.collect.models import load_model  # noqa: E402
from explainer.collect.planted import concept_activations, load_concepts, planted_record, tokenize_windows  # noqa: E402
from explainer.intervene import resolve_unit  # noqa: E402
from explainer.score.correlation import score_simulation  # noqa: E402
from explainer.score.intervention import InterventionConfig, InterventionScorer  # noqa: E402
from explainer.score.registry import DISCRIMINATION_FILE, make_scorer  # noqa: E402


def plant_directions(lm, hookpoint, concepts, windows, align: str, min_tokens: int, progress):
    """name → unit vector (torch) of mean(resid | concept) − mean(resid | not), for concepts with
    at least ``min_tokens`` positive positions."""
    import torch

    hp = resolve_hookpoint(lm.model, hookpoint)
    ids = [lm.tokenizer(w.text, add_special_tokens=False)["input_ids"] for w in windows]
    keep = [i for i, x in enumerate(ids) if len(x) == len(windows[i].tokens)]
    resid = []
    for b in range(0, len(keep), 16):
        batch = torch.tensor([ids[i] for i in keep[b : b + 16]])
        resid.append(capture(lm.model, hp, batch, torch.ones_like(batch)))
    acts = torch.cat(resid)  # [n, T, d]
    progress(f"residuals {tuple(acts.shape)} at {hookpoint}")
    out, counts = {}, {}
    for c in concepts:
        mask = torch.tensor([concept_activations(c, windows[i]) for i in keep]) > 0  # [n, T]
        if align == "next":  # the position before a concept token predicts it
            mask = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
        n_pos = int(mask.sum())
        if n_pos < min_tokens or n_pos > mask.numel() - min_tokens:
            continue
        v = acts[mask].mean(0) - acts[~mask].mean(0)
        out[c.name], counts[c.name] = v / v.norm(), n_pos
    return out, counts


def mean_or_none(xs: list[float], digits: int | None = None) -> float | None:
    """The mean of ``xs`` (rounded to ``digits``), or ``None`` when there is nothing to average."""
    if not xs:
        return None
    m = statistics.mean(xs)
    return round(m, digits) if digits is not None else m


def figures(scores: dict[str, dict[str, float]], names: list[str]) -> dict:
    """AUROC (right description = positive), share of (right, wrong) pairs ranked correctly and mean
    gap of ``{unit: {description: score}}``; ``None`` where no unit was scored."""
    pos = [scores[n][n] for n in scores]
    neg = [scores[n][o] for n in scores for o in names if o != n]
    pairs = [
        (scores[n][n] > scores[n][o]) + 0.5 * (scores[n][n] == scores[n][o]) for n in scores for o in names if o != n
    ]
    return {
        "auroc": round(auroc(pos, neg), 4) if pos and neg else None,
        "pairs_correct": round(sum(pairs) / len(pairs), 4) if pairs else None,
        "mean_gap": round(statistics.mean(pos) - statistics.mean(neg), 4) if pos and neg else None,
        "n_units": len(scores),
        "n_pairs": len(pairs),
    }


INPUT_SCORER = "simulation-context"
"""The input-side scorer each planted unit's right description is also scored with (the default)."""


def input_side(sim, records, descriptions: dict[str, str]) -> dict[str, dict | None]:
    """Per planted record, ``sim``'s score (value and 95% interval) of the unit's own description on
    its held-out windows, as the score stage computes it; where it fails, ``value`` is ``None`` and
    ``error`` holds the reason (kept in the JSON line)."""
    out: dict[str, dict | None] = {}
    for rec in records:
        n = rec.unit_id.rsplit("/", 1)[1]
        try:
            r = sim.score(descriptions[n], rec.windows_for("heldout"))
            out[n] = {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
        except Exception as exc:  # e.g. held-out windows where the concept never occurs: no correlation
            out[n] = {"value": None, "ci_low": None, "ci_high": None, "error": f"{type(exc).__name__}: {exc}"}
    return out


def rounded(score: dict | None) -> dict | None:
    """``{"value", "ci95"}`` of a score, rounded for the JSON line."""
    if not score:
        return None
    if score.get("value") is None:
        return {"value": None, "error": score["error"]} if score.get("error") else None

    def r(x):
        return None if x is None else round(x, 4)

    return {"value": r(score["value"]), "ci95": [r(score["ci_low"]), r(score["ci_high"])]}


def disagreements(rows: dict, inputs: dict, input_name: str, output_name: str) -> list[dict]:
    """Units whose right description the input side (``input_name``) and the output side
    (``output_name``) judge differently, by the rule of the reports' ``input_output_disagree``
    warning, with the warning's words and the first neutral prompt's clean and steered texts."""
    from explainer.report.model import ReportScore
    from explainer.report.warnings import input_output_warnings

    out = []
    for n, row in rows.items():
        sim, causal = inputs.get(n), row["right"].get(output_name)
        if not sim or sim["value"] is None or not causal:
            continue
        scores = (
            ReportScore(input_name, sim["value"], sim["ci_low"], sim["ci_high"], details={"kind": "simulation"}),
            ReportScore(
                output_name, causal["value"], causal["ci_low"], causal["ci_high"], details={"kind": "intervention"}
            ),
        )
        for _, why in input_output_warnings(scores):
            texts = row["texts"]
            out.append(
                {
                    "unit": n,
                    input_name: round(sim["value"], 4),
                    output_name: round(causal["value"], 4),
                    f"{output_name}_ci95": [
                        None if causal["ci_low"] is None else round(causal["ci_low"], 4),
                        None if causal["ci_high"] is None else round(causal["ci_high"], 4),
                    ],
                    "why": why,
                    "prompt": texts["prompts"][0],
                    "clean": texts["clean"][0],
                    "steered": texts["steered"][0],
                }
            )
    return out


CAUSAL_UNITS = (
    "planted causal units: steering directions built from the subject model's own residuals (mean residual "
    "where a concept's tokens come next minus elsewhere), each described by its concept; measured by "
    "make bench-intervention, not on the input-side planted concepts of make bench-discrimination"
)


def write_causal_discrimination(results: dict, run: dict, command: str) -> list[str]:
    """Store the intervention scorers' discrimination on planted causal units in the discrimination
    file beside the simulation scorers' (which stay as they are): per scorer its AUROC, pairs
    correct, mean gap, ``n_concepts`` and ``n_causal_units`` (numbers only, as reports and the API
    read them), the date in ``measured_per_scorer``, and under ``causal`` what was measured how.
    A scorer with no figure this run (every unit failed) keeps its last one. Returns the scorers
    written."""
    try:
        old = json.loads(DISCRIMINATION_FILE.read_text())
    except (OSError, ValueError):
        old = {}
    scorers = dict(old.get("scorers") or {})
    measured = dict(old.get("measured_per_scorer") or {})
    today = time.strftime("%Y-%m-%d")
    written = []
    for name in CAUSAL_SCORERS:
        r = results.get(name)
        if not r or r.get("auroc") is None:
            continue
        scorers[name] = {
            "auroc": r["auroc"],
            "pairs_correct": r["pairs_correct"],
            "mean_gap": r["mean_gap"],
            "n_concepts": r["n_units"],
            "n_causal_units": r["n_units"],
            "n_pairs": r["n_pairs"],
        }
        measured[name] = today
        written.append(name)
    if not written:
        return []
    causal = {"scorers": list(CAUSAL_SCORERS), "measured": today, "units": CAUSAL_UNITS, "command": command, **run}
    DISCRIMINATION_FILE.write_text(
        json.dumps({**old, "measured_per_scorer": measured, "causal": causal, "scorers": scorers}, indent=2) + "\n"
    )
    return written


def main(argv: list[str] | None = None) -> dict:
    configure_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concepts", default=None, help="planted concepts YAML (default: bench/concepts.yaml)")
    ap.add_argument("--model", default="smollm2-135m", help="subject model, also the judge (default smollm2-135m)")
    ap.add_argument("--units", type=int, default=6, help="planted units (concepts) at most")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--align", choices=["next", "same"], default="next")
    ap.add_argument("--windows", type=int, default=200, help="corpus windows of 32 tokens read for the directions")
    ap.add_argument("--target-kl", type=float, default=1.0)
    ap.add_argument("--prompts", type=int, default=3, help="neutral prompts per unit")
    ap.add_argument("--new-tokens", type=int, default=12)
    ap.add_argument("--out", default=None, help="also write the full results (texts included) to this JSON file")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPUs oversubscribe)")
    ap.add_argument(
        "--write",
        action="store_true",
        help=f"store the intervention scorers' figures (planted causal units) in {DISCRIMINATION_FILE.name}",
    )
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    progress = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    import tempfile

    import torch
    from safetensors.torch import save_file

    t_start = time.perf_counter()
    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    concepts = load_concepts(args.concepts)
    lm = load_model(args.model)
    windows = tokenize_windows(default_corpus(), lm.tokenizer, window=32, max_windows=args.windows)
    hookpoint = f"layers.{args.layer}"
    dirs, counts = plant_directions(lm, hookpoint, concepts, windows, args.align, 20, progress)
    names = list(dirs)[: args.units]
    if len(names) < 2:
        raise SystemExit("fewer than two concepts have enough matching tokens to plant a direction")
    descriptions = {c.name: c.description for c in concepts}
    tmp = Path(tempfile.mkdtemp(prefix="bench-intervention-"))
    dfile = tmp / "planted.safetensors"
    save_file(
        {"directions": torch.stack([dirs[n] for n in names]).contiguous()},
        str(dfile),
        metadata={"names": json.dumps(names), "hookpoint": hookpoint},
    )
    unit_ids = {n: f"{lm.name}/{hookpoint}.dir-planted-000000/{i}" for i, n in enumerate(names)}

    def loader(uid):
        return lm, resolve_unit(lm, uid, directions=str(dfile))

    cfg = InterventionConfig(target_kl=args.target_kl, n_prompts=args.prompts, new_tokens=args.new_tokens)
    scorers = {v: InterventionScorer(loader, v, judge_model=args.model, config=cfg) for v in ("logprob", "embedding")}
    method = {v: s.method for v, s in scorers.items()}
    rows: dict[str, dict] = {}
    cost = {"forward_passes": [], "generated_tokens": [], "seconds_texts": [], "seconds_judge": {}}
    failed: dict[str, str] = {}
    for n in names:
        try:
            texts = scorers["logprob"].continuations(unit_ids[n])
            row = {"strength": texts["strength"], "kl": texts["kl"], "texts": texts, "scores": {}, "right": {}}
            seconds = {}
            for v, scorer in scorers.items():
                t0 = time.perf_counter()
                judged = {o: scorer.judge(descriptions[o], texts) for o in names}
                seconds[method[v]] = (time.perf_counter() - t0) / len(names)
                row["scores"][method[v]] = {o: r.value for o, r in judged.items()}
                row["right"][method[v]] = {
                    "value": judged[n].value,
                    "ci_low": judged[n].ci_low,
                    "ci_high": judged[n].ci_high,
                }
        except Exception as exc:  # an unreachable KL, an unloadable judge: reported per unit, not scored
            failed[n] = f"{type(exc).__name__}: {exc}"
            progress(f"{n:12s} failed: {failed[n]}")
            continue
        rows[n] = row
        cost["forward_passes"].append(texts["forward_passes"])
        cost["generated_tokens"].append(texts["generated_tokens"])
        cost["seconds_texts"].append(texts["seconds"])
        for m, sec in seconds.items():
            cost["seconds_judge"].setdefault(m, []).append(sec)
        progress("unit " + json.dumps({"concept": n, **{k: rows[n][k] for k in ("strength", "kl", "scores")}}))
        s = rows[n]["scores"][method["logprob"]]
        wrong = [s[o] for o in names if o != n]
        progress(
            f"{n:12s} strength={texts['strength']:8.2f} kl={texts['kl']:.2f} right={s[n]:+.3f} "
            f"wrong(mean)={statistics.mean(wrong):+.3f}  steered: {' '.join(texts['steered'][0].split())[:60]!r}"
        )
    results = {method[v]: figures({n: rows[n]["scores"][method[v]] for n in rows}, names) for v in scorers}
    # Side by side, from the same judge passes: the judge's log-probability gain normalised per
    # explanation, so that a long description does not win or lose by its length alone — by its
    # token count, or by its surprisal with no text to read (log P(explanation | "(nothing)")).
    variants: dict[str, dict] = {}
    if rows:
        lp = method["logprob"]
        n_tokens = {o: len(lm.tokenizer(" " + descriptions[o].strip())["input_ids"]) for o in names}
        prior = {o: -scorers["logprob"]._logprob(descriptions[o], [""])[0] for o in names}
        scale = {f"{lp}[per-token]": n_tokens, f"{lp}[prior-normalised]": prior}
        for label, by in scale.items():
            variant = {n: {o: rows[n]["scores"][lp][o] / by[o] for o in names} for n in rows}
            variants[label] = figures(variant, names)
        variants["normalisers"] = {
            "tokens": n_tokens,
            "surprisal_with_no_text": {o: round(v, 3) for o, v in prior.items()},
        }
    # the input side: each planted unit's own description scored by the default simulation scorer on
    # the planted record's held-out windows (the concept's tokens are where it fires)
    all_records = [planted_record(c, windows) for c in concepts if c.name in names]
    inputs = input_side(make_scorer(INPUT_SCORER, simulator_model=args.model), all_records, descriptions)
    disagree = disagreements(rows, inputs, INPUT_SCORER, method["logprob"])
    # the simulation scorers' cost per unit on the same concepts (planted records over the same windows)
    records = [r for r in all_records if r.unit_id.rsplit("/", 1)[1] in rows]
    sim_cost = {}
    for name in ("simulation-embedding", "simulation-logits"):
        if not records:
            sim_cost[name] = None
            continue
        sim = make_scorer(name, simulator_model=args.model)
        t0 = time.perf_counter()
        held = records[0].windows_for("heldout")
        pred = sim.simulate(descriptions[records[0].unit_id.rsplit("/", 1)[1]], held)
        score_simulation([list(w.activations) for w in held], pred, [w.domain for w in held], n_boot=10)
        sim_cost[name] = {
            "forward_passes": len(held) if name == "simulation-logits" else 0,
            "generated_tokens": 0,
            "seconds_per_explanation": round(time.perf_counter() - t0, 2),
        }
    per_unit = {
        "forward_passes": mean_or_none(cost["forward_passes"]),
        "generated_tokens": mean_or_none(cost["generated_tokens"]),
        "seconds_texts": mean_or_none(cost["seconds_texts"], 2),
        **{f"seconds_judge_{k}_per_explanation": mean_or_none(v, 2) for k, v in cost["seconds_judge"].items()},
    }
    print(f"planted steering directions at {hookpoint} (align={args.align}), target KL {args.target_kl}")
    for m, r in results.items():
        print(
            f"  {m:24s} AUROC {r['auroc']}  pairs correct {r['pairs_correct']}  gap {r['mean_gap']}  "
            f"({r['n_units']} units)"
        )
    for m, r in variants.items():
        if m != "normalisers":
            print(f"  {m:40s} AUROC {r['auroc']}  pairs correct {r['pairs_correct']}  (side by side; not shipped)")
    print(f"  cost per unit (intervention): {per_unit}")
    for m, c in sim_cost.items():
        print(f"  cost per explanation ({m}): {c}")
    out_name = method["logprob"]
    print(f"  right descriptions, input side ({INPUT_SCORER}) vs output side ({out_name}):")
    for n in names:
        sim_v = (inputs.get(n) or {}).get("value")
        causal = rows[n]["right"][out_name] if n in rows else None
        print(
            f"    {n:14s} {INPUT_SCORER} {'—' if sim_v is None else f'{sim_v:+.3f}'}   {out_name} "
            + ("failed" if causal is None else f"{causal['value']:+.3f} {rounded(causal)['ci95']}")
        )
    for d in disagree:
        print(f"  disagree: {d['unit']}: {d['why']}")
        print(
            f"    prompt {d['prompt']!r}  clean {' '.join(d['clean'].split())!r}  steered {' '.join(d['steered'].split())!r}"
        )
    disagree_note = None
    if len(disagree) < 3:
        disagree_note = (
            f"only {len(disagree)} of {len(rows)} scored planted units have input- and output-side scores that "
            "disagree (fewer than three)"
        )
        print(f"  {disagree_note}")
    if failed:
        print(f"  {len(failed)} of {len(names)} units failed:")
    for n, err in failed.items():
        print(f"    {n}: {err}")
    summary = {
        "model": lm.name,
        "hookpoint": hookpoint,
        "align": args.align,
        "target_kl": args.target_kl,
        "prompts": args.prompts,
        "new_tokens": args.new_tokens,
        "units": names,
        "active_positions": {n: counts[n] for n in names},
        **results,
        "variants": variants,
        "input_side": {n: rounded(inputs.get(n)) for n in names},
        "output_side": {n: rounded(rows[n]["right"][out_name]) for n in rows},
        "disagree": disagree,
        **({"disagree_note": disagree_note} if disagree_note else {}),
        "failed": failed,
        "cost_per_unit": {"intervention": per_unit, **sim_cost},
        "strengths": {n: round(rows[n]["strength"], 3) for n in rows},
        "kl": {n: round(rows[n]["kl"], 3) for n in rows},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.write:
        args_given = sys.argv[1:] if argv is None else argv
        run = {k: summary[k] for k in ("model", "hookpoint", "align", "target_kl", "prompts", "new_tokens")}
        written = write_causal_discrimination(
            results, run, " ".join(["python -m bench.bench_intervention", *args_given])
        )
        print(f"  written to {DISCRIMINATION_FILE.name}: {', '.join(written) or 'nothing (no unit was scored)'}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**summary, "rows": rows}, indent=2, default=str))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
