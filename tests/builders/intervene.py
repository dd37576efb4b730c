"""A stored collection of the tiny LLaMA (saved as a directory), for the steering CLI, API and
intervention-scorer tests: real collection, real store."""

from __future__ import annotations

import json
from pathlib import Path

from explainer.collect.collector import CollectConfig

CFG = CollectConfig(
    window=8,
    context=16,
    top_k=4,
    n_random=2,
    max_tokens=400,
    batch_size=4,
    n_quantiles=2,
    pool_per_quantile=2,
    min_density=0.0,
)
TEXTS = [
    ("code", "def total(xs):\n    return sum(x * 2 for x in xs if x > 0)\n" * 5),
    ("legal", "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED. " * 5),
]


def write_corpus(folder: Path) -> Path:
    """:data:`TEXTS`, twice over, as a JSONL corpus ``folder/corpus.jsonl``; returns its path."""
    corpus = folder / "corpus.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"id": i, "domain": d, "text": t}) for i, (d, t) in enumerate(TEXTS * 2)),
        encoding="utf-8",
    )
    return corpus


def collect_tiny(
    settings, model_dir, tmp_path, hookpoint: str = "layers.2.mlp", config: CollectConfig = CFG
) -> tuple[str, list[str]]:
    """Collect ``hookpoint`` of the tiny model over a small corpus; (collection id, live unit ids)."""
    from explainer.pipeline.collection import collect_stage, select_units

    corpus = write_corpus(tmp_path)
    cid = collect_stage(settings, str(model_dir), hookpoint, str(corpus), config, progress=False)
    return cid, select_units(settings, cid, 4)


def explain(
    store,
    collection_id: str,
    unit_id: str,
    text: str,
    *,
    explainer_model: str = "fake-llm",
    prompt_hash: str = "a" * 64,
    window_ids: tuple[str, ...] = ("top-0",),
) -> str:
    """Store an ok explanation of ``unit_id`` (a fake explainer's unless told); returns its id."""
    return store.save_explanation(
        unit_id=unit_id,
        collection_id=collection_id,
        explainer_model=explainer_model,
        prompt_name="explain",
        prompt_version="1",
        prompt_hash=prompt_hash,
        status="ok",
        text=text,
        window_ids=list(window_ids),
    )
