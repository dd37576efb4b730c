"""The collect stage: resolve a collection (model, hookpoint, SAE or directions, the corpus cut into
sequences) and name it before any model is loaded, then collect it (or reuse it) and pick the units
worth labeling. Sharded and many-hookpoint collections (``sharded.py``, ``multi.py``) reuse the plan
and the collector built here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from explainer.collect.budget import check_budget
from explainer.collect.collector import (
    CollectConfig,
    Collector,
    make_sequences,
    sequences_fingerprint,
    unit_hookpoint,
)
from explainer.collect.corpus import stream_corpus
from explainer.collect.hooks import resolve_hookpoint
from explainer.collect.models import load_model, load_tokenizer, resolve_model
from explainer.provenance import collection_provenance
from explainer.runtime import get_store
from explainer.settings import Settings

log = logging.getLogger(__name__)


def normalize_hookpoint(layer: int | None, hookpoint: str | None) -> str:
    """The hookpoint ``--layer`` / ``--hookpoint`` name (``--layer L`` is ``layers.L.mlp``; default
    layer 15). Both at once must name the same hookpoint: one is never silently preferred."""
    from explainer.errors import HookpointError

    if hookpoint and layer is not None and hookpoint != f"layers.{layer}.mlp":
        raise HookpointError(
            f"--layer {layer} (layers.{layer}.mlp) and --hookpoint {hookpoint} name different hookpoints: give one"
        )
    if hookpoint:
        return hookpoint
    return f"layers.{15 if layer is None else layer}.mlp"


def load_encoder(sae: str | None, directions: str | None, hookpoint: str | None) -> Any:
    """The SAE or directions that turn the hooked tensor into units, or ``None`` for raw units."""
    from explainer.errors import InputError

    if sae and directions:
        raise InputError("give either an SAE or directions, not both")
    if sae:
        from explainer.collect.sae import load_sae

        return load_sae(sae, hookpoint)
    if directions:
        from explainer.collect.directions import load_directions

        return load_directions(directions)
    return None


@dataclass(frozen=True)
class CollectionPlan:
    """What a collection is, resolved before any model is loaded: its id and its inputs."""

    collection_id: str
    source: Any
    corpus_name: str
    seqs: list[Any]
    """The corpus as far as the collection reads it, cut into sequences (the documents are streamed)."""
    corpus_fingerprint: str
    encoder: Any
    hookpoint: str


def plan_collection(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    cfg: CollectConfig,
    sae: str | None = None,
    directions: str | None = None,
) -> CollectionPlan:
    """Resolve the model, corpus, encoder and hookpoint and name the collection (bad input fails here)."""
    from explainer.errors import HookpointError
    from store.records import key_id

    source = resolve_model(model)
    corpus_name, docs = stream_corpus(corpus)
    encoder = load_encoder(sae, directions, hookpoint)
    own = getattr(encoder, "hookpoint", None)
    if own and hookpoint and hookpoint not in (own, getattr(encoder, "hook_name", None)):
        raise HookpointError(f"{encoder.name!r} reads hookpoint {own}, not {hookpoint!r}")
    hookpoint = own or hookpoint
    if not hookpoint:
        raise HookpointError("the directions file names no hookpoint: give --hookpoint or --layer")
    seqs = make_sequences(docs, load_tokenizer(model, settings.device), cfg)  # reads only what is used
    corpus_fp = sequences_fingerprint(seqs)
    extra = [encoder.fingerprint] if encoder is not None else []
    cid = key_id(source.name, hookpoint, corpus_fp, sorted(cfg.to_dict().items()), *extra)
    return CollectionPlan(cid, source, corpus_name, seqs, corpus_fp, encoder, hookpoint)


def start_collector(
    settings: Settings,
    plan: CollectionPlan,
    model: str,
    cfg: CollectConfig,
    sae: str | None = None,
    directions: str | None = None,
    mark_running: bool = True,
    seqs: list[Any] | None = None,
) -> Collector:
    """Load the model, build the collection's collector (over ``seqs`` when given: the corpus
    already cut) and (with ``mark_running``) mark the collection running, discarding units a
    crashed earlier attempt left behind."""
    lm = load_model(model, settings.device)
    hp = resolve_hookpoint(lm.model, plan.hookpoint)
    encoder = plan.encoder
    units = encoder.width if encoder is not None else hp.width
    check_budget(cfg, units, getattr(lm.model, "config", None), str(lm.device))  # before anything is allocated
    collector = Collector(lm, hp, seqs if seqs is not None else plan.seqs, cfg, encoder)
    if not mark_running:
        return collector
    get_store(settings).start_collection(
        plan.collection_id,
        lm.name,
        unit_hookpoint(hp, encoder),
        plan.corpus_name,
        plan.corpus_fingerprint,
        {
            **cfg.to_dict(),
            **({"units": encoder.describe()} if encoder is not None else {}),
            "provenance": collection_provenance(plan.source, model, plan.hookpoint, sae, directions),
        },
    )
    return collector


def collect_stage(
    settings: Settings,
    model: str,
    hookpoint: str | None,
    corpus: str | None,
    cfg: CollectConfig,
    progress: bool = True,
    sae: str | None = None,
    directions: str | None = None,
) -> str:
    """Collect (or reuse) the unit records of ``model`` at ``hookpoint`` — its raw units, or the
    features of the SAE folder ``sae``, or the projections on the ``directions`` file — and return
    the collection id. Without a hookpoint, the SAE's (or directions') own is used. Bad input
    (unknown hookpoint, SAE width, corpus shorter than a window) fails before anything is written.
    A killed run resumes from its checkpoint under ``$EXPLAINER_DATA_DIR/checkpoints``."""
    plan = plan_collection(settings, model, hookpoint, corpus, cfg, sae, directions)
    cid = plan.collection_id
    store = get_store(settings)
    existing = store.get_collection(cid)
    if existing and existing["status"] == "done":
        log.info("reusing collection %s (%s units)", cid, existing["n_units"])
        return cid
    collector = start_collector(settings, plan, model, cfg, sae, directions)
    checkpoint = settings.data_dir / "checkpoints" / f"{cid}.pt"
    try:
        collector.run(progress=progress, checkpoint=checkpoint)
        records = collector.records(names=getattr(plan.encoder, "names", None))
        store.finish_collection(cid, records, records[0].stats.n_tokens if records else 0)
    except BaseException as exc:
        store.fail_collection(cid, f"{type(exc).__name__}: {exc}")
        raise
    checkpoint.unlink(missing_ok=True)
    return cid


def select_units(settings: Settings, collection_id: str, n: int | None) -> list[str]:
    """The ``n`` (``None``: all) live units whose activations are most peaked (max / std), a proxy for selectivity."""
    rows = get_store(settings).unit_rows(collection_id, live_only=True)
    rows.sort(key=lambda r: (-(r["max_act"] / (r["std_act"] + 1e-6)), r["idx"]))
    return [r["unit_id"] for r in rows[:n]]
