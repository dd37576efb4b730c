"""Checkpoints for re-test tests: a model saved again unchanged (the control) and a copy fine-tuned on
one domain's text, both as Hugging Face folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema

from explainer.collect.collector import CollectConfig
from explainer.retest.summary import schema_path


def save_checkpoint(model: Any, tokenizer: Any, path: Path) -> Path:
    """``model`` and ``tokenizer`` saved as a Hugging Face folder at ``path``."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def fine_tuned(model: Any, tokenizer: Any, texts: list[str], steps: int, lr: float, seq_len: int = 32) -> Any:
    """A copy of ``model`` trained for ``steps`` next-token steps (AdamW) on chunks of ``texts``."""
    import torch

    tuned = copy.deepcopy(model).train()
    ids = tokenizer("\n".join(texts), return_tensors="pt").input_ids[0]
    chunks = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len, seq_len)] or [ids[:seq_len]]
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        pick = torch.randint(len(chunks), (min(4, len(chunks)),), generator=gen)
        batch = torch.stack([chunks[int(i)] for i in pick])
        loss = tuned(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuned.eval()


CFG = CollectConfig(
    window=8, context=16, top_k=4, n_random=3, max_tokens=2400, batch_size=8, n_quantiles=2, min_density=0.0
)
HOOK = "layers.1.mlp"
PER_DOMAIN = 6


def validate(doc: dict) -> None:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
