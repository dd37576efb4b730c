"""Re-test stored explanations on a new checkpoint: collect the same units on the new model and
re-score every stored explanation of them on the new evidence.

:func:`retest` takes a labeling run or collection id (the old units), checks the new model before
anything runs (it loads; its hookpoint exists and is as wide as the SAE, directions or old
collection expect; the corpus is still there), collects the same units on the new model with
:func:`explainer.pipeline.collection.collect_stage` (same hookpoint, SAE or directions, corpus and
collection settings; MLP neurons and residual dimensions matched by index), scores each stored ok
explanation with the same scorers on the new held-out windows, and gives per unit the old and new
scores with intervals, a verdict (:mod:`explainer.retest.verdict`) and the activation drift.
When the corpus differs from the old collection's (``--corpus``, or a default corpus that changed),
the old model is collected over it too and the old scores recomputed there, so that old and new
are compared on the same text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from explainer.errors import CorpusError, ExplainerError, HookpointError, InputError, ModelLoadError
from explainer.retest.summary import build_output, hookpoint_drift, unit_domain
from explainer.retest.verdict import CHANCE, Figure, is_dead, score_verdict
from explainer.runtime import get_store
from explainer.settings import Settings
from store.records import Explanation, Score, UnitRecord, make_unit_id, parse_unit_id

__all__ = ["RetestOptions", "retest"]

log = logging.getLogger(__name__)

Relabel = Callable[[str, list[str]], dict[str, Any]]
"""(new collection id, unit ids) → what the labeling run did."""


@dataclass(frozen=True)
class RetestOptions:
    """How a re-test runs."""

    model: str
    """The new checkpoint: packaged short name, Hugging Face directory or ``.gguf`` file."""
    corpus: str | None = None
    """Corpus to collect over; default: the old collection's own."""
    scorers: tuple[str, ...] = ()
    """Scorers; default: those that scored each explanation (else the default scorer)."""
    max_tokens: int | None = None
    """Corpus tokens to read; default: what the old collection read."""
    simulator_model: str = "smollm2-135m"
    """Local model of the ``simulation-logits`` scorer."""
    evidence_windows: int = 3
    """Top windows shown, old and new side by side, for units that did not hold."""


def resolve_from(store: Any, ref: str) -> tuple[dict[str, Any], list[str]]:
    """The old collection row and the unit ids of a labeling run or collection id (or a unique prefix)."""
    from explainer.report.select import resolve_run

    try:
        ref = resolve_run(store, ref)
    except LookupError as exc:
        raise InputError(str(exc)) from exc
    found = store.report_selection(ref)
    if found is None:
        raise InputError(f"unknown run or collection id {ref!r}")
    collection = store.get_collection(found["collection_id"])
    if collection is None or collection["status"] != "done":
        raise InputError(f"collection {found['collection_id']} of {ref} is not finished")
    if not found["unit_ids"]:
        raise InputError(f"{found['kind']} {ref} has no explained units: nothing to re-test")
    return collection, list(found["unit_ids"])


def _corpus(collection: dict[str, Any], given: str | None, inputs: dict[str, Any], device: str) -> tuple[str, bool]:
    """The corpus to collect over and whether it is the old collection's text: the same tokens, cut
    by the old model's tokenizer and the old settings (a collection is keyed on the tokens it read).
    A recorded corpus file that is gone is an error naming it, unless ``given`` replaces it."""
    from explainer.collect.collector import make_sequences, sequences_fingerprint
    from explainer.collect.corpus import stream_corpus
    from explainer.collect.models import load_tokenizer

    spec = given or collection["corpus"]
    if given is None and spec != "default" and not Path(spec).expanduser().exists():
        raise CorpusError(
            f"the corpus of collection {collection['id']}, {spec}, is no longer available: "
            "give the same text (or another) with --corpus"
        )
    _, docs = stream_corpus(spec)
    seqs = make_sequences(docs, load_tokenizer(inputs["model"], device), inputs["cfg"])
    return spec, sequences_fingerprint(seqs) == collection["corpus_hash"]


def check_new_model(inputs: dict[str, Any], collection: dict[str, Any], model: str, device: str) -> Any:
    """Load the new model and check its hookpoint's width against what the units need (the SAE's or
    directions' ``d_in``, else the old collection's unit count), before anything is collected."""
    from explainer.collect.hooks import resolve_hookpoint
    from explainer.collect.models import load_model
    from explainer.pipeline.collection import load_encoder

    lm = load_model(model, device)
    hp = resolve_hookpoint(lm.model, inputs["hookpoint"])
    encoder = load_encoder(inputs["sae"], inputs["directions"], inputs["hookpoint"])
    if encoder is not None:
        need, what = int(encoder.d_in), f"the {'SAE' if inputs['sae'] else 'directions'} {encoder.name!r} reads"
    else:
        need, what = int(collection["n_units"] or 0), f"the old collection {collection['id']} has"
    if hp.width != need:
        raise HookpointError(
            f"the new model's hookpoint {hp.name} is {hp.width} wide, but {what} {need}: "
            "the units cannot be matched (is it the same architecture?)"
        )
    return lm


def _same_files(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    def key(m: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((f["name"], f["sha256"]) for f in m.get("files") or [])

    return key(recorded) == key(current)


def _model_prov(collection: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(collection["config"]) if isinstance(collection["config"], str) else collection["config"]
    model = (config.get("provenance") or {}).get("model")
    return model or {"name": collection["model"], "given": None, "revision": None, "files": []}


def _collect(settings: Settings, model: str, inputs: dict[str, Any], corpus: str, cfg: Any, progress: bool) -> str:
    from explainer.pipeline.collection import collect_stage

    return collect_stage(
        settings,
        model,
        inputs["hookpoint"],
        corpus,
        cfg,
        progress=progress,
        sae=inputs["sae"],
        directions=inputs["directions"],
    )


class _Scoring:
    """Scores explanations on records with scorers made once per name."""

    def __init__(self, settings: Settings, opts: RetestOptions):
        self.settings, self.opts, self._scorers = settings, opts, {}  # type: ignore[var-annotated]

    def scorer(self, name: str) -> Any:
        from explainer.score.registry import make_scorer

        if name not in self._scorers:
            self._scorers[name] = make_scorer(
                name, simulator_model=self.opts.simulator_model, device=self.settings.device, settings=self.settings
            )
        return self._scorers[name]

    def figure(self, name: str, text: str, record: UnitRecord) -> Figure:
        from explainer.score.registry import evaluate

        windows = record.windows_for("heldout")
        if not windows:
            raise InputError("no held-out windows to score on")
        s = evaluate(self.scorer(name), text, windows, unit_id=record.unit_id)
        return Figure(s.value, s.ci_low, s.ci_high)


def _score_explanation(
    scoring: _Scoring,
    expl: Explanation,
    stored: dict[str, Score],
    old_rec: UnitRecord,
    new_rec: UnitRecord | None,
    use_stored: bool,
    dead: bool,
) -> list[dict[str, Any]]:
    """One entry per scorer: old and new figures, the drop and the verdict (or a failure's reason)."""
    names = scoring.opts.scorers or tuple(n for n, s in stored.items() if s.status == "ok")
    from explainer.score.registry import DEFAULT_SCORERS

    out = []
    for name in dict.fromkeys(names or DEFAULT_SCORERS):
        entry: dict[str, Any] = {"scorer": name}
        try:
            chance = CHANCE[scoring.scorer(name).kind]
            s = stored.get(name)
            if use_stored and s is not None and s.status == "ok" and s.value is not None:
                old, entry["old_source"] = Figure(s.value, s.ci_low, s.ci_high), "stored"
            else:
                old, entry["old_source"] = scoring.figure(name, str(expl.text), old_rec), "recomputed"
            entry["old"] = old.as_dict()
            if dead or new_rec is None:
                entry.update(new=None, drop=old.value - chance, verdict="dead")
            else:
                new = scoring.figure(name, str(expl.text), new_rec)
                entry.update(new=new.as_dict(), drop=old.value - new.value, verdict=score_verdict(old, new, chance))
        except (ExplainerError, ValueError) as exc:
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", verdict=None)
        else:
            entry["status"] = "ok"
        out.append(entry)
    return out


def evidence(record: UnitRecord | None, n: int) -> list[dict[str, Any]]:
    """A unit's ``n`` strongest top windows (domain, max, text with the firing tokens marked)."""
    from store.records import highlight

    if record is None:
        return []
    tops = sorted(
        record.windows_for("explain", "top") + record.windows_for("heldout", "top"), key=lambda w: -w.max_activation
    )
    return [
        {"window_id": w.window_id, "domain": w.domain, "max": w.max_activation, "text": highlight(w, record.stats.max)}
        for w in tops[:n]
    ]


def _unit_result(
    scoring: _Scoring,
    expls: list[Explanation],
    stored: dict[str, dict[str, Score]],
    old_rec: UnitRecord,
    new_rec: UnitRecord | None,
    new_uid: str,
    use_stored: bool,
) -> dict[str, Any]:
    from explainer.retest.verdict import activation_drift

    heldout_max = max((w.max_activation for w in new_rec.windows_for("heldout")), default=0.0) if new_rec else 0.0
    dead = new_rec is None or is_dead(new_rec.stats.max, heldout_max)
    explanations: list[dict[str, Any]] = []
    for e in expls:
        scores = _score_explanation(scoring, e, stored.get(e.id, {}), old_rec, new_rec, use_stored, dead)
        explanations.append(
            {"explanation_id": e.id, "text": e.text, "explainer_model": e.explainer_model, "scores": scores}
        )

    # the best explanation: highest old score under the first scorer that has one
    def old_value(x: dict[str, Any]) -> float:
        ok = [s for s in x["scores"] if s["status"] == "ok"]
        return ok[0]["old"]["value"] if ok else float("-inf")

    explanations.sort(key=old_value, reverse=True)
    primary: dict[str, Any] | None = (
        next((s for s in explanations[0]["scores"] if s["status"] == "ok"), None) if explanations else None
    )
    unit: dict[str, Any] = {
        "unit_id": old_rec.unit_id,
        "new_unit_id": new_uid,
        "index": old_rec.index,
        "name": old_rec.name,
        "domain": unit_domain(old_rec),
        "verdict": "dead" if dead else (primary["verdict"] if primary else None),
        "scorer": primary["scorer"] if primary else None,
        "old": primary["old"] if primary else None,
        "new": primary.get("new") if primary else None,
        "drop": primary["drop"] if primary else None,
        "new_skip_reason": new_rec.skip_reason if new_rec else "missing from the new collection",
        "drift": activation_drift(old_rec.stats, new_rec.stats) if new_rec else None,
        "explanations": explanations,
    }
    if unit["verdict"] not in ("holds", None):
        n = scoring.opts.evidence_windows
        unit["evidence"] = {"old": evidence(old_rec, n), "new": evidence(new_rec, n)}
    return unit


HOOKPOINT_CHUNK = 2000
"""Records read per query when every unit of a hookpoint is compared."""


def _hookpoint_moves(store: Any, old_cid: str, new_cid: str) -> dict[str, dict[str, Any]]:
    """:func:`~explainer.retest.summary.hookpoint_drift` of every unit of the two collections (the
    old records are read for their top windows' domain; the new side needs only its max)."""
    old_ids = [r["unit_id"] for r in store.unit_rows(old_cid, live_only=False)]
    old: dict[int, tuple[str | None, float]] = {}
    for start in range(0, len(old_ids), HOOKPOINT_CHUNK):  # bounded memory and SQL parameters (a 65k SAE)
        chunk = store.get_records(old_ids[start : start + HOOKPOINT_CHUNK], old_cid)
        old.update((rec.index, (unit_domain(rec), float(rec.stats.max))) for _, rec in chunk.values())
    new = {int(r["idx"]): float(r["max_act"] or 0.0) for r in store.unit_rows(new_cid, live_only=False)}
    return hookpoint_drift(old, new)


def retest(
    settings: Settings, ref: str, opts: RetestOptions, progress: bool = True, relabel: Relabel | None = None
) -> dict[str, Any]:
    """Re-test the explanations of run or collection ``ref`` on ``opts.model``; returns the retest
    output (see :func:`explainer.retest.summary.build_output`). Bad input (unknown ref, missing
    corpus, a model that does not load, a hookpoint of another width) raises before anything is
    collected. ``relabel`` is called with the new collection and the units whose best explanation
    broke (and still fire)."""
    from explainer.collect.models import resolve_model
    from explainer.pipeline.calibrate import collection_inputs
    from explainer.provenance import model_provenance

    t0 = time.perf_counter()
    if opts.max_tokens is not None and opts.max_tokens <= 0:
        raise InputError("--max-tokens must be > 0")
    store = get_store(settings)
    collection, unit_ids = resolve_from(store, ref)
    old_cid = collection["id"]
    inputs = collection_inputs(collection)
    expls = [e for e in store.explanations_for(unit_ids, old_cid) if e.status == "ok" and e.text]
    if not expls:
        raise InputError(f"{ref} has no ok explanation to re-test")
    corpus, same_corpus = _corpus(collection, opts.corpus, inputs, settings.device)
    source = resolve_model(opts.model)
    check_new_model(inputs, collection, opts.model, settings.device)
    cfg = inputs["cfg"] if opts.max_tokens is None else replace(inputs["cfg"], max_tokens=opts.max_tokens)
    new_prov = model_provenance(source, opts.model)
    old_prov = _model_prov(collection)

    t_collect = time.perf_counter()
    new_cid = _collect(settings, opts.model, inputs, corpus, cfg, progress)
    new_col = store.get_collection(new_cid)
    assert new_col is not None, new_cid
    if not _same_files(_model_prov(new_col), new_prov):
        raise InputError(
            f"a collection of another checkpoint named {source.name!r} is stored ({new_cid}); collections are "
            "keyed by the model's name: put the new checkpoint in a folder of its own name"
        )
    use_stored = same_corpus and opts.max_tokens is None
    base_cid = old_cid
    if not use_stored:
        try:
            base_cid = _collect(settings, inputs["model"], inputs, corpus, cfg, progress)
        except ModelLoadError as exc:
            raise ModelLoadError(f"the old model is needed to compare on this corpus: {exc}") from exc
    collect_s = time.perf_counter() - t_collect

    expl_units = list(dict.fromkeys(e.unit_id for e in expls))
    old_records = {u: r for u, (_, r) in store.get_records(expl_units, base_cid).items()}
    new_uids = {u: make_unit_id(new_col["model"], new_col["hookpoint"], parse_unit_id(u)[2]) for u in expl_units}
    new_records = {u: r for u, (_, r) in store.get_records(list(new_uids.values()), new_cid).items()}
    stored: dict[str, dict[str, Score]] = {}
    for s in store.scores_for([e.id for e in expls]):
        stored.setdefault(str(s.explanation_id), {})[s.scorer] = s
    scoring = _Scoring(settings, opts)
    t_score = time.perf_counter()
    units = []
    for uid in expl_units:
        if uid not in old_records:
            log.warning("unit %s is missing from collection %s", uid, base_cid)
            continue
        own = [e for e in expls if e.unit_id == uid]
        units.append(
            _unit_result(
                scoring, own, stored, old_records[uid], new_records.get(new_uids[uid]), new_uids[uid], use_stored
            )
        )
    score_s = time.perf_counter() - t_score
    hookpoint_moves = _hookpoint_moves(store, base_cid, new_cid)
    relabeled = None
    if relabel is not None:
        todo = [u["new_unit_id"] for u in units if u["verdict"] == "broken" and u["new_skip_reason"] is None]
        relabeled = relabel(new_cid, todo) if todo else {"units": 0, "note": "no broken unit to re-explain"}
    return build_output(
        ref=ref,
        collections={"old": old_cid, "new": new_cid, "old_on_corpus": base_cid},
        models={"old": old_prov, "new": new_prov, "same_files": _same_files(old_prov, new_prov)},
        corpus={"spec": corpus, "same_as_old": same_corpus, "old": collection["corpus"]},
        hookpoint=new_col["hookpoint"],
        units=units,
        timing={
            "collect_s": collect_s,
            "score_s": score_s,
            "total_s": time.perf_counter() - t0,
        },
        relabel=relabeled,
        hookpoint_by_domain=hookpoint_moves,
    )
