"""Re-test tests' world: the tiny random LLaMA collected over a two-domain corpus (code and legal text
from the default corpus), a dozen units explained with the no-LLM baseline and scored with the real
embedding scorer; the same weights saved again (the control) and a copy fine-tuned on the legal
domain, both as Hugging Face folders; and a copy whose MLP neurons are permuted (sure to break units)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from builders.intervene import explain
from explainer import runtime
from explainer.collect.collector import CollectConfig
from explainer.collect.corpus import default_corpus
from explainer.explain.baseline import baseline_explanation
from explainer.pipeline.collection import collect_stage
from explainer.pipeline.options import LabelOptions
from explainer.pipeline.stages import score_stage
from explainer.retest.summary import schema_path, unit_domain
from explainer.runtime import get_store
from explainer.settings import load_settings


def save_checkpoint(model: Any, tokenizer: Any, path: Path) -> Path:
    """``model`` and ``tokenizer`` saved as a Hugging Face folder at ``path``, as the retest bench saves
    its checkpoints (a model loaded from a GGUF file is written as float32 weights)."""
    from bench.bench_retest import save

    return Path(save(model, tokenizer, path))


def permuted_neurons(model: Any, tokenizer: Any, path: Path, layer: int = 1, seed: int = 7) -> Path:
    """A copy of ``model`` whose layer-``layer`` MLP neurons are permuted, saved at ``path``: neuron j
    of the copy is neuron ``order[j]`` of the original, so the model computes the same function but
    every unit index of that hookpoint now names another neuron (what a unit meant is gone)."""
    import torch

    permuted = copy.deepcopy(model)
    mlp = permuted.model.layers[layer].mlp
    order = torch.randperm(mlp.down_proj.weight.shape[1], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[order])
        mlp.up_proj.weight.copy_(mlp.up_proj.weight[order])
        mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, order])
    return save_checkpoint(permuted, tokenizer, path)


def other_shape(tokenizer: Any, path: Path, intermediate_size: int = 128, layers: int = 4) -> Path:
    """A random LLaMA like the tiny one but with another MLP width or depth, saved at ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return save_checkpoint(LlamaForCausalLM(config), tokenizer, path)


def fine_tuned(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    steps: int,
    lr: float,
    seq_len: int = 32,
    batch: int = 4,
    up_to: int | None = None,
) -> Any:
    """A copy of ``model`` trained for ``steps`` next-token steps by the retest bench's fine-tune
    (AdamW, ``batch`` chunks of ``seq_len`` tokens of ``texts`` each); with ``up_to``, only blocks
    0…``up_to`` are trained (the others and the embeddings stay frozen: the units of a hookpoint in
    those blocks move, for a fraction of the optimiser's memory)."""
    from bench.bench_retest import fine_tune

    tuned, _ = fine_tune(model, tokenizer, texts, steps, lr, up_to, batch=batch, seq_len=seq_len, log_every=None)
    return tuned


CFG = CollectConfig(
    window=8, context=16, top_k=4, n_random=3, max_tokens=2400, batch_size=8, n_quantiles=2, min_density=0.0
)
HOOK = "layers.1.mlp"
PER_DOMAIN = 6


def validate(doc: dict) -> None:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def retest_world(tiny_model, tiny_model_dir, tmp_path_factory):
    """(settings, old collection id, explained unit ids, paths of corpus, control and fine-tuned model)."""
    root = tmp_path_factory.mktemp("retest")
    mp = pytest.MonkeyPatch()
    mp.setenv("EXPLAINER_DATA_DIR", str(root / "data"))
    mp.setattr(runtime, "_model_cache", [root / "cache"])  # the model files' hashes of this world
    settings = load_settings()
    docs = [d for d in default_corpus(6000) if d.domain in ("code", "legal")]
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"id": d.doc_id, "domain": d.domain, "text": d.text}) for d in docs), encoding="utf-8"
    )
    cid = collect_stage(settings, str(tiny_model_dir), HOOK, str(corpus), CFG, progress=False)
    store = get_store(settings)
    rows = sorted(store.unit_rows(cid), key=lambda r: -(r["max_act"] / (r["std_act"] + 1e-6)))
    chosen: dict[str, list[str]] = {"code": [], "legal": []}
    for r in rows:
        rec = store.get_record(r["unit_id"], cid)
        dom = unit_domain(rec)
        if dom in chosen and len(chosen[dom]) < PER_DOMAIN and baseline_explanation(rec):
            chosen[dom].append(r["unit_id"])
    units = chosen["code"] + chosen["legal"]
    for uid in units:
        text = baseline_explanation(store.get_record(uid, cid))
        eid = explain(
            store, cid, uid, text, explainer_model="baseline", prompt_hash="b" * 64, window_ids=("top-0", "top-2")
        )
        score_stage(settings, eid, LabelOptions(scorers=("simulation-embedding",)))
    control = save_checkpoint(tiny_model.model, tiny_model.tokenizer, root / "models" / "tiny-llama-control")
    legal = [d.text for d in docs if d.domain == "legal"]
    tuned = fine_tuned(tiny_model.model, tiny_model.tokenizer, legal, steps=20, lr=3e-4)
    tuned_dir = save_checkpoint(tuned, tiny_model.tokenizer, root / "models" / "tiny-llama-legal")
    yield settings, cid, units, corpus, control, tuned_dir, root
    mp.undo()
