"""Collection: run the subject model over a corpus and keep, per unit, the evidence.

Per unit we keep a streaming top-k of the most activating windows (by the window's max
activation), a fixed set of random windows, and running statistics. Memory is
O(units × (k + random) × window); the full tokens × units activation matrix is never built.
Top windows alternate between the explainer (even ranks) and the held-out scoring set
(odd ranks); random windows are all held out.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from .errors import CorpusError
from .hooks import Hookpoint, capture
from .records import Document, UnitRecord, UnitStats, Window, make_unit_id


@dataclass(frozen=True)
class CollectConfig:
    """What collection keeps. Part of the collection's cache key."""

    window: int = 32
    """Tokens per window (sequences are cut from documents at this length)."""
    top_k: int = 12
    """Top windows kept per unit; even ranks go to the explainer, odd ranks are held out."""
    n_random: int = 5
    """Random windows per unit, held out for scoring."""
    max_tokens: int = 40_000
    """Stop after this many corpus tokens."""
    batch_size: int = 16
    seed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Sequence:
    doc_id: str
    domain: str
    token_ids: tuple[int, ...]


def make_sequences(docs: list[Document], tokenizer: Any, cfg: CollectConfig) -> list[Sequence]:
    """Tokenize documents and cut them into windows of at most ``cfg.window`` tokens."""
    seqs: list[Sequence] = []
    total = 0
    for doc in docs:
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), cfg.window):
            chunk = ids[start : start + cfg.window]
            if len(chunk) < max(4, cfg.window // 4):
                continue
            seqs.append(Sequence(doc.doc_id, doc.domain, tuple(chunk)))
            total += len(chunk)
            if total >= cfg.max_tokens:
                return seqs
    if not seqs:
        raise CorpusError("the corpus yields no windows of text (is every document empty or tiny?)")
    return seqs


def _batches(seqs: list[Sequence], size: int) -> Iterator[tuple[int, list[Sequence]]]:
    for start in range(0, len(seqs), size):
        yield start, seqs[start : start + size]


class _TopK:
    """Streaming per-unit top-k windows, kept as tensors on the model's device."""

    def __init__(self, units: int, k: int, window: int, device: Any):
        import torch

        self.vals = torch.full((units, k), float("-inf"), device=device)
        self.seq = torch.full((units, k), -1, dtype=torch.long, device=device)
        self.acts = torch.zeros((units, k, window), device=device)

    def update(self, acts: Any, seq_ids: Any, masked_max: Any) -> None:
        """acts [B, T, U] (padded to window), seq_ids [B], masked_max [B, U]."""
        import torch

        units, k = self.vals.shape
        vals = torch.cat([self.vals, masked_max.T], dim=1)
        top = vals.topk(k, dim=1)
        seq = torch.cat([self.seq, seq_ids.expand(units, -1)], dim=1)
        all_acts = torch.cat([self.acts, acts.permute(2, 0, 1)], dim=1)
        self.vals = top.values
        self.seq = seq.gather(1, top.indices)
        self.acts = all_acts.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, all_acts.shape[-1]))


def collect(
    loaded: Any,
    hookpoint: Hookpoint,
    docs: list[Document],
    cfg: CollectConfig,
    progress: bool = True,
) -> list[UnitRecord]:
    """Collect evidence for every unit at ``hookpoint``; returns one record per unit."""
    import torch
    from tqdm.auto import tqdm

    tok = loaded.tokenizer
    seqs = make_sequences(docs, tok, cfg)
    device = loaded.device
    rng = random.Random(cfg.seed)
    random_ids = sorted(rng.sample(range(len(seqs)), min(cfg.n_random, len(seqs))))
    random_pos = {s: i for i, s in enumerate(random_ids)}
    units = hookpoint.width
    topk = _TopK(units, cfg.top_k, cfg.window, device)
    rand_acts = torch.zeros((len(random_ids), cfg.window, units), device=device)
    act_sum = torch.zeros(units, dtype=torch.float64, device=device)
    act_sq_sum = torch.zeros(units, dtype=torch.float64, device=device)
    fire_count = torch.zeros(units, dtype=torch.float64, device=device)
    act_max = torch.full((units,), float("-inf"), device=device)
    n_tokens = 0
    # A leading BOS keeps the first real token from being an attention-sink outlier.
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    bar = tqdm(total=sum(len(s.token_ids) for s in seqs), unit="tok", desc=f"collect {hookpoint.name}", disable=not progress)
    for start, batch in _batches(seqs, cfg.batch_size):
        ids = torch.full((len(batch), cfg.window + 1), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), cfg.window + 1), dtype=torch.long)
        ids[:, 0], mask[:, 0] = bos, 1
        for b, s in enumerate(batch):
            ids[b, 1 : 1 + len(s.token_ids)] = torch.tensor(s.token_ids)
            mask[b, 1 : 1 + len(s.token_ids)] = 1
        acts = capture(loaded.model, hookpoint, ids.to(device), mask.to(device))[:, 1:, :]
        valid = mask[:, 1:].bool().to(device).unsqueeze(-1)  # [B, T, 1]
        acts = acts.masked_fill(~valid, 0.0)
        masked_max = acts.masked_fill(~valid, float("-inf")).amax(dim=1)
        topk.update(acts, torch.arange(start, start + len(batch), device=device), masked_max)
        act_sum += acts.sum(dim=(0, 1)).double()
        act_sq_sum += acts.double().pow(2).sum(dim=(0, 1))
        fire_count += ((acts > 0) & valid).sum(dim=(0, 1)).double()
        act_max = torch.maximum(act_max, masked_max.amax(dim=0))
        for b in range(len(batch)):
            if start + b in random_pos:
                rand_acts[random_pos[start + b]] = acts[b]
        n_batch = int(valid.sum())
        n_tokens += n_batch
        bar.update(n_batch)
    bar.close()
    mean = act_sum / n_tokens
    std = (act_sq_sum / n_tokens - mean.pow(2)).clamp(min=0).sqrt()
    return _build_records(loaded, hookpoint, seqs, cfg, topk, random_ids, rand_acts,
                          mean.tolist(), std.tolist(), (fire_count / n_tokens).tolist(), act_max.tolist(), n_tokens)


def _build_records(loaded, hookpoint, seqs, cfg, topk, random_ids, rand_acts, means, stds, densities, maxes, n_tokens):
    decode_cache: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in decode_cache:
            decode_cache[i] = loaded.tokenizer.decode([i])
        return decode_cache[i]

    seq_tokens = {}

    def tokens_of(s: int) -> tuple[str, ...]:
        if s not in seq_tokens:
            seq_tokens[s] = tuple(decode(i) for i in seqs[s].token_ids)
        return seq_tokens[s]

    top_seq = topk.seq.cpu().tolist()
    top_acts = topk.acts.cpu().tolist()
    top_vals = topk.vals.cpu().tolist()
    rand = rand_acts.permute(2, 0, 1).cpu().tolist()  # [U, R, T]
    records = []
    for u in range(hookpoint.width):
        live = maxes[u] > 0 and densities[u] > 0
        windows: list[Window] = []
        if live:
            rank = 0
            for s, acts, val in zip(top_seq[u], top_acts[u], top_vals[u]):
                if s < 0 or val <= 0:
                    continue
                n = len(seqs[s].token_ids)
                windows.append(Window(f"top-{rank}", "top", "explain" if rank % 2 == 0 else "heldout",
                                      seqs[s].doc_id, seqs[s].domain, tokens_of(s), tuple(round(a, 5) for a in acts[:n])))
                rank += 1
            for r, s in enumerate(random_ids):
                n = len(seqs[s].token_ids)
                windows.append(Window(f"random-{r}", "random", "heldout", seqs[s].doc_id, seqs[s].domain,
                                      tokens_of(s), tuple(round(a, 5) for a in rand[u][r][:n])))
        stats = UnitStats(max=float(maxes[u]), mean=float(means[u]), std=float(stds[u]), density=float(densities[u]), n_tokens=n_tokens)
        records.append(UnitRecord(make_unit_id(loaded.name, hookpoint.name, u), loaded.name, hookpoint.name, u, stats, tuple(windows)))
    return records
