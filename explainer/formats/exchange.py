"""The store ↔ portable records: what ``explainer export`` and ``explainer import`` do.

Export gathers the ok explanations of a run, of some units or of the whole store, with their ok
scores (simulation scores first) and, for neuron-explainer, the held-out windows with the
predictions the simulation score recorded, and writes them with :mod:`explainer.formats.write`.

Import reads a file with :mod:`explainer.formats.read` into an existing collection. Everything is
checked before the first row is written: the file's model against the collection's (a clear error
naming both), its layer and the part of the block (residual stream, MLP, attention, where both
names say) against the collection's hookpoint, and every unit against the collection.
Each explanation keeps its origin in ``settings["imported"]`` (:class:`store.records.ImportedFrom`:
tool, explainer model, original score); its original scores become score rows named
``{tool}:{type}``; it is indexed for search at once and, with ``rescore``, scored by our scorers on
the collection's own held-out windows, side by side with the original score. An import is all or
nothing: when any write fails part-way (a score, the re-scoring, the indexing), its explanations and
scores, their keyword rows and vectors are put back as they were before it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from explainer.errors import InputError
from explainer.formats.read import read
from explainer.formats.record import (
    SITES,
    PortableExplanation,
    PortableScore,
    Sequence,
    layer_of,
    same_model,
    site_of,
)
from explainer.formats.write import unwritable_scores, write
from explainer.runtime import get_store
from explainer.settings import Settings
from store.records import (
    Explanation,
    ImportedFrom,
    Score,
    UnitRecord,
    make_explanation_id,
    make_unit_id,
    parse_unit_id,
)


def _chosen_explanations(store: Any, run: str | None, units: list[str] | None) -> list[Explanation]:
    from store import runs

    if run is not None and units:
        raise InputError("give either a run or units, not both")
    if run is not None:
        found = runs.find_runs(store, run)
        if len(found) != 1:
            raise InputError(f"no run {run!r}" if not found else f"run id {run!r} is ambiguous: give more of it")
        pairs = runs.run_explanation_ids(store, found[0])
        rows = [store.get_explanation(eid) for _, eid in pairs]
        return [e for e in rows if e is not None and e.status == "ok"]
    ids = list(units) if units else store.labeled_unit_ids()
    rows = [e for e in store.explanations_for(ids) if e.status == "ok"]
    missing = sorted(set(ids) - {e.unit_id for e in rows})
    if units and missing:
        raise InputError(
            f"no ok explanation for unit(s): {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "")
        )
    return rows


def _score_order(s: Score) -> tuple[int, str]:
    return (0 if (s.details or {}).get("kind") == "simulation" else 1, s.scorer)


def _sequences(score: Score | None, record: UnitRecord | None) -> tuple[Sequence, ...]:
    preds = (score.details or {}).get("predictions") if score else None
    if score is None or record is None or not isinstance(preds, list):
        return ()
    by_id = {w.window_id: w for w in record.windows}
    out = []
    for wid, p in zip(score.heldout_ids, preds):
        w = by_id.get(wid)
        if w is not None and isinstance(p, list) and len(p) == len(w.tokens):
            out.append(Sequence(w.tokens, w.activations, tuple(float(x) for x in p)))
    return tuple(out)


def _examples(score: Score, record: UnitRecord | None) -> tuple[dict[str, Any], ...]:
    """delphi's per-example rows for ``score``'s held-out windows: the label our window-level
    scorers use, P(yes) and the call when the score recorded them, the simulator's predictions."""
    from explainer.score.detection import window_labels

    if record is None or not score.heldout_ids:
        return ()
    by_id = {w.window_id: w for w in record.windows}
    windows = [by_id[i] for i in score.heldout_ids if i in by_id]
    if len(windows) != len(score.heldout_ids):
        return ()
    details = score.details or {}
    p_yes, preds = details.get("p_yes"), details.get("predictions")
    rows = []
    for i, (w, label) in enumerate(zip(windows, window_labels(windows))):
        p = float(p_yes[i]) if isinstance(p_yes, list) and len(p_yes) == len(windows) else None
        row: dict[str, Any] = {
            "str_tokens": list(w.tokens),
            "activations": list(w.activations),
            "distance": w.quantile if w.quantile is not None else (-1 if w.kind == "random" else 0),
            "activating": bool(label),
            "prediction": None if p is None else p >= 0.5,
            "probability": p,
            "correct": None if p is None else (p >= 0.5) == bool(label),
        }
        if isinstance(preds, list) and len(preds) == len(windows):
            row["simulated"] = preds[i]
        rows.append(row)
    return tuple(rows)


def _kept_examples(score: Score) -> tuple[dict[str, Any], ...]:
    """The per-example rows an imported delphi score brought with it (kept in its details)."""
    rows = (score.details or {}).get("examples")
    return tuple(r for r in rows if isinstance(r, dict)) if isinstance(rows, list) else ()


def to_records(
    settings: Settings, fmt: str, run: str | None = None, units: list[str] | None = None
) -> list[PortableExplanation]:
    """The chosen ok explanations as portable records (best-scored first within a unit)."""
    store = get_store(settings)
    expls = _chosen_explanations(store, run, units)
    if not expls:
        raise InputError("no ok explanations to export")
    scores: dict[str, list[Score]] = {}
    for s in store.scores_for([e.id for e in expls]):
        if s.status == "ok" and s.value is not None and s.explanation_id:
            scores.setdefault(s.explanation_id, []).append(s)
    collections: dict[str, dict[str, Any]] = {}
    out = []
    for e in expls:
        coll = collections.setdefault(e.collection_id, store.get_collection(e.collection_id) or {})
        model, hookpoint, index = parse_unit_id(e.unit_id)
        mine = sorted(scores.get(e.id, []), key=_score_order)
        sim = next((s for s in mine if (s.details or {}).get("kind") == "simulation"), None)
        if fmt == "neuron-explainer":
            kept: tuple[PortableScore, ...] = (
                (PortableScore("ev_correlation_score", sim.value, sim.simulator_model),)
                if sim and sim.value is not None
                else ()
            )
            record = store.get_record(e.unit_id, e.collection_id) if sim else None
            seqs = _sequences(sim, record)
        else:
            record = store.get_record(e.unit_id, e.collection_id) if fmt == "delphi" and mine else None
            kept = tuple(
                PortableScore(s.scorer, float(s.value), s.simulator_model, _kept_examples(s) or _examples(s, record))
                for s in mine
                if s.value is not None
            )
            seqs = ()
        origin = e.imported
        out.append(
            PortableExplanation(
                index=index,
                text=e.text or "",
                layer=layer_of(hookpoint),
                model=coll.get("model") or model,
                hookpoint=hookpoint,
                explainer_model=origin.explainer_model if origin else e.explainer_model,
                explanation_type=(origin.explanation_type if origin else None),
                scores=kept,
                sequences=seqs,
            )
        )
    best = {id(r): (r.scores[0].value if r.scores else float("-inf")) for r in out}
    return sorted(out, key=lambda r: (r.model or "", r.hookpoint or "", r.index, -best[id(r)]))


def export_explanations(
    settings: Settings,
    fmt: str,
    out: str | Path,
    run: str | None = None,
    units: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the chosen explanations to ``out`` in ``fmt``; refuses an existing ``out`` unless ``force``."""
    target = Path(out).expanduser()
    if target.exists() and not force:  # before reading the store: fail fast
        raise InputError(f"{target} exists; pass --force to replace it")
    records = to_records(settings, fmt, run, units)
    left_out = unwritable_scores(fmt, records)
    n = write(fmt, records, target, force=force)
    summary: dict[str, Any] = {"format": fmt, "path": str(target), "explanations": len(records), "units": n}
    if left_out:
        summary["scores_left_out"] = len(left_out)
        summary["scores_left_out_why"] = (
            f"a {fmt} score file is per-example rows, and these scores have none: " + ", ".join(left_out[:5])
        ) + (" …" if len(left_out) > 5 else "")
    return summary


# -- import -------------------------------------------------------------------------------------


def _check(records: list[PortableExplanation], coll: dict[str, Any], cid: str, file_model: str | None) -> None:
    expected = file_model or coll["model"]
    for r in records:
        if r.model and not same_model(r.model, expected):
            raise InputError(
                f"{r.source_file} is for model {r.model!r}, but collection {cid} holds model {coll['model']!r}"
                + (f" (imported as {file_model!r})" if file_model else "")
            )
    layer, site = layer_of(coll["hookpoint"]), site_of(coll["hookpoint"])
    for r in records:
        if r.layer is not None and layer is not None and r.layer != layer:
            raise InputError(
                f"{r.source_file}: unit {r.index} is in layer {r.layer} ({r.module or r.hookpoint or 'layer index'}), "
                f"but collection {cid} holds {coll['hookpoint']} (layer {layer})"
            )
        theirs = site_of(r.module or r.hookpoint)
        if theirs and site and theirs != site:
            raise InputError(
                f"{r.source_file}: unit {r.index} is from {r.module or r.hookpoint}, the {SITES[theirs]}, "
                f"but collection {cid} holds {coll['hookpoint']}, the {SITES[site]}"
            )


def _score_kind(name: str) -> str:
    return "simulation" if name == "ev_correlation_score" else "imported"


def _planned(
    fmt: str, r: PortableExplanation, unit_id: str, collection_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The explanation row (``save_explanation``'s arguments) and score rows an imported record becomes."""
    first = r.scores[0] if r.scores else None
    origin = ImportedFrom(
        tool=fmt,
        explainer_model=r.explainer_model,
        score=first.value if first else None,
        score_type=first.name if first else None,
        score_model=first.model if first else None,
        explanation_type=r.explanation_type,
        file=r.source_file,
    )
    expl: dict[str, Any] = dict(
        unit_id=unit_id,
        collection_id=collection_id,
        explainer_model=r.explainer_model or f"{fmt}:unknown",
        prompt_name="import",
        prompt_version=fmt,
        prompt_hash=hashlib.sha256(f"{fmt}\x1f{r.text}".encode()).hexdigest(),
        status="ok",
        text=r.text,
        settings={"imported": origin.to_dict()},
    )
    scores: list[dict[str, Any]] = [
        dict(
            scorer=f"{fmt}:{s.name}"[:100],
            simulator_model=s.model,
            status="ok",
            value=s.value,
            details={
                "kind": _score_kind(s.name),
                "imported": True,
                "tool": fmt,
                "type": s.name,
                **({"examples": list(s.examples)} if s.examples else {}),
            },
        )
        for s in r.scores
    ]
    return expl, scores


def _undo(settings: Settings, ids: list[str], before: dict[str, Any], vectors: bool, exc: BaseException) -> None:
    """Put the store back as it was before an import that failed part-way: its explanations and scores
    (and their keyword rows) as ``before`` holds them and, when indexing had begun, the vector index."""
    store = get_store(settings)
    try:
        store.restore_explanations(ids, before)
        if vectors:
            from explainer.runtime import get_index
            from explainer.search.index import expected_metadata
            from store.keyword import iter_docs

            indexed = sorted(r["id"] for r in before["explanations"] if r["indexed_at"] is not None)
            index = get_index(settings)
            index.delete(sorted(set(ids) - set(indexed)))
            docs = list(iter_docs(store, indexed))
            if docs:  # indexed before this import: their vectors as they were
                index.upsert(
                    [d.explanation_id for d in docs], [d.text for d in docs], [expected_metadata(d) for d in docs]
                )
    except Exception as undo_exc:  # the first failure is the one to report; say what may be left
        exc.add_note(
            f"undoing the import failed too ({type(undo_exc).__name__}: {undo_exc}): "
            "`explainer check` shows what is left, `explainer reindex` rebuilds the search indexes"
        )


def import_explanations(
    settings: Settings,
    fmt: str,
    path: str | Path,
    collection_id: str,
    file_model: str | None = None,
    rescore: tuple[str, ...] = (),
    index: bool = True,
) -> dict[str, Any]:
    """Import every explanation of ``path`` (in ``fmt``) into collection ``collection_id``.
    ``file_model``: the name the file gives the collection's model, when it differs."""
    store = get_store(settings)
    coll = store.get_collection(collection_id)
    if coll is None or coll.get("status") != "done":
        raise InputError(f"no finished collection {collection_id!r} to import into")
    if rescore:
        from explainer.score.registry import make_scorer

        for name in rescore:
            make_scorer(name, settings=settings)  # unknown scorers fail before anything is written
    records = read(fmt, path)
    _check(records, coll, collection_id, file_model)
    unit_ids = [make_unit_id(coll["model"], coll["hookpoint"], r.index) for r in records]
    have = store.get_records(sorted(set(unit_ids)), collection_id)
    missing = sorted(set(unit_ids) - set(have))
    if missing:
        raise InputError(
            f"{len(missing)} unit(s) of the file are not in collection {collection_id}: "
            + ", ".join(missing[:5])
            + (" …" if len(missing) > 5 else "")
        )
    planned = [_planned(fmt, r, uid, collection_id) for r, uid in zip(records, unit_ids)]
    ids = sorted(
        {make_explanation_id(e["unit_id"], collection_id, e["explainer_model"], e["prompt_hash"]) for e, _ in planned}
    )
    before = store.explanation_state(ids)  # what an undo puts back (a re-import finds its own rows)
    indexing = False
    try:
        written = []
        for expl, score_rows in planned:
            eid = store.save_explanation(**expl)
            for row in score_rows:
                store.save_score(explanation_id=eid, **row)
            written.append(eid)
        if rescore:
            from explainer.pipeline.options import LabelOptions
            from explainer.pipeline.stages import score_stage

            opts = LabelOptions(scorers=tuple(rescore))
            for eid in written:
                score_stage(settings, eid, opts)
        if index:
            from explainer.search.index import index_stage

            indexing = True
            for eid in written:
                index_stage(settings, eid)
    except BaseException as exc:
        _undo(settings, ids, before, indexing, exc)
        raise
    return {
        "format": fmt,
        "path": str(path),
        "collection": collection_id,
        "explanations": len(written),
        "explanation_ids": written,
        "rescored_with": list(rescore),
    }
