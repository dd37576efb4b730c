"""Collection: run the subject model over a corpus and keep, per unit, the evidence.

The corpus is tokenized and cut into sequences of ``context`` tokens, run in batches (a BOS
first) up to the hooked layer only; an optional encoder (an SAE, transcoder or directions)
turns the hooked tensor into units. Per unit we keep, all on the model's device:

- the ``top_k`` sequences with the highest max activation, each as a ``window``-token window
  placed around the max token with ``lead_fraction`` of it *before* the max (context first);
- a uniform reservoir of the unit's activating sequences, sorted at the end into
  ``n_quantiles`` equal-count strata with one window drawn from each (quantile windows);
- ``n_random`` windows at random places of the corpus (the same for every unit);
- running statistics: max, mean, std and firing density over every token, and a histogram of
  the activating sequences' max activations with the quantile boundaries read from it.

Memory is O(units × (top_k + pool + n_random) × window); the tokens × units matrix is never
built beyond one batch. Top windows alternate between the explainer (even ranks) and the
held-out scoring set (odd ranks); quantile windows alternate by stratum; random windows are
all held out. Dead units (never > 0) get no windows; ultra-rare ones keep their windows but are
marked with a ``skip_reason`` so that labeling skips them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from explainer.collect.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from explainer.collect.evidence import DenseColumns, RunningStats, SparseColumns, TopWindows
from explainer.collect.hooks import Hookpoint, capture
from explainer.collect.records import build_records
from explainer.errors import CorpusError
from store.records import Document, UnitRecord


@dataclass(frozen=True)
class CollectConfig:
    """What collection keeps. Part of the collection's cache key."""

    window: int = 32
    """Tokens per evidence window."""
    top_k: int = 12
    """Top windows kept per unit; even ranks go to the explainer, odd ranks are held out."""
    n_random: int = 5
    """Random windows per unit, held out for scoring."""
    max_tokens: int = 40_000
    """Stop after this many corpus tokens."""
    batch_size: int = 16
    """Sequences per forward pass."""
    seed: int = 0
    context: int = 64
    """Tokens per sequence run through the model; windows are cut from these (>= window)."""
    lead_fraction: float = 0.75
    """Share of a window placed before its max token (the context the explainer reads first)."""
    n_quantiles: int = 10
    """Activation strata with one quantile window each (0 disables quantile windows)."""
    pool_per_quantile: int = 2
    """Reservoir size per stratum: the pool holds n_quantiles × this many activating windows."""
    min_density: float = 1e-5
    """Units active (> 0) on a smaller share of tokens, or in fewer than 2 sequences, are ultra-rare."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lead(self) -> int:
        """Tokens kept before the max token in a window."""
        return min(self.window - 1, int(self.window * self.lead_fraction))

    def validate(self) -> None:
        if self.window < 2 or self.context < self.window or self.top_k < 1 or self.batch_size < 1:
            raise ValueError("need window >= 2, context >= window, top_k >= 1 and batch_size >= 1")
        if self.n_random < 0 or self.n_quantiles < 0 or self.pool_per_quantile < 1 or not 0 <= self.lead_fraction <= 1:
            raise ValueError("need n_random, n_quantiles >= 0, pool_per_quantile >= 1 and 0 <= lead_fraction <= 1")


class Encoder(Protocol):
    """Turns hooked activations ``[..., d_in]`` into unit activations ``[..., width]`` (an SAE,
    a transcoder's encoder, or directions)."""

    name: str
    fingerprint: str
    d_in: int

    @property
    def width(self) -> int: ...

    def encode(self, x: Any) -> Any: ...

    def to(self, device: Any) -> Encoder: ...

    def check_hookpoint(self, hp: Hookpoint) -> None: ...


@runtime_checkable
class SparseEncoder(Encoder, Protocol):
    """An encoder (a top-k or group-max SAE) that can give each token's k active units without a dense result."""

    @property
    def sparse_k(self) -> int | None: ...

    def encode_sparse(self, x: Any) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class Sequence:
    """One row of a forward-pass batch: up to ``context`` consecutive tokens of one document."""

    doc_id: str
    domain: str
    token_ids: tuple[int, ...]


TOKENIZE_CHARS = 1 << 16
"""Characters tokenised per call: a long document is tokenised only as far as ``max_tokens`` needs."""


def make_sequences(docs: Iterable[Document], tokenizer: Any, cfg: CollectConfig) -> list[Sequence]:
    """Tokenize documents and cut them into sequences of at most ``cfg.context`` tokens (tails
    shorter than ``max(4, window // 4)`` are dropped), up to ``cfg.max_tokens`` tokens. ``docs`` is
    consumed only as far as needed, and a long document is tokenised in pieces of
    :data:`TOKENIZE_CHARS` cut before a space, so memory and time follow ``max_tokens``, not the corpus."""
    from explainer.collect.corpus import split_at_space

    seqs: list[Sequence] = []
    total = 0
    shortest = max(4, cfg.window // 4)
    for doc in docs:
        text = doc.text
        pending: list[int] = []
        while text or pending:
            if text and len(pending) < cfg.context:
                cut = split_at_space(text, TOKENIZE_CHARS)
                pending += tokenizer(text[:cut], add_special_tokens=False)["input_ids"]
                text = text[cut:]
                continue
            chunk, pending = pending[: cfg.context], pending[cfg.context :]
            if len(chunk) < shortest:
                continue
            seqs.append(Sequence(doc.doc_id, doc.domain, tuple(chunk)))
            total += len(chunk)
            if total >= cfg.max_tokens:
                return seqs
    if total < cfg.window:
        raise CorpusError(
            f"the corpus yields {total} usable tokens, fewer than one window of {cfg.window} "
            "(is every document empty or tiny?)"
        )
    return seqs


def sequences_fingerprint(seqs: Iterable[Sequence]) -> str:
    """First 16 hex chars of a sha256 over the sequences collection uses (document id, domain and
    token ids, in order): the corpus as far as it is used, so text past ``max_tokens`` never
    changes it. With the model in the same key, this names the tokens read."""
    h = hashlib.sha256()
    for s in seqs:
        h.update(f"{s.doc_id}\x1f{s.domain}\x1f{s.token_ids}\n".encode())
    return h.hexdigest()[:16]


def unit_hookpoint(hp: Hookpoint, encoder: Encoder | None) -> str:
    """The hookpoint part of unit ids: ``layers.3`` for raw units, ``layers.3.sae-NAME-HASH`` for
    SAE features, ``layers.3.dir-NAME-HASH`` for directions."""
    if encoder is None:
        return hp.name
    from explainer.collect.directions import Directions

    kind = "dir" if isinstance(encoder, Directions) else "sae"
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", encoder.name).strip("-")[:40] or kind
    return f"{hp.name}.{kind}-{slug}-{encoder.fingerprint[:6]}"


class Collector:
    """The streaming state of one collection; :meth:`step` processes one batch."""

    def __init__(
        self,
        loaded: Any,
        hookpoint: Hookpoint,
        seqs: list[Sequence],
        cfg: CollectConfig,
        encoder: Encoder | None = None,
    ):
        import torch

        cfg.validate()
        if encoder is not None:
            encoder.check_hookpoint(hookpoint)
            encoder = encoder.to(loaded.device)
        self.loaded, self.hookpoint, self.seqs, self.cfg, self.encoder = loaded, hookpoint, seqs, cfg, encoder
        self.device = loaded.device
        self.units = encoder.width if encoder is not None else hookpoint.width
        self.n_batches = (len(seqs) + cfg.batch_size - 1) // cfg.batch_size
        rng = random.Random(cfg.seed)
        self.random_ids = sorted(rng.sample(range(len(seqs)), min(cfg.n_random, len(seqs))))
        self.random_start = {s: rng.randrange(max(1, len(seqs[s].token_ids) - cfg.window + 1)) for s in self.random_ids}
        self.top = TopWindows(self.units, cfg.top_k, cfg.window, self.device)
        self.pool = TopWindows(self.units, max(1, cfg.n_quantiles * cfg.pool_per_quantile), cfg.window, self.device)
        self.stats = RunningStats(self.units, self.device)
        self.rand_acts = torch.zeros((len(self.random_ids), cfg.window, self.units), device=self.device)
        tok = loaded.tokenizer
        self.bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.bos
        self.next_batch = 0

    # -- state, for checkpoints -----------------------------------------------------------
    def key(self) -> str:
        """Names what is collected: a checkpoint is resumed only under the same key."""
        h = hashlib.sha256(
            json.dumps(
                [
                    self.loaded.name,
                    self.hookpoint.name,
                    self.units,
                    self.cfg.to_dict(),
                    getattr(self.encoder, "fingerprint", None),
                ]
            ).encode()
        )
        for s in self.seqs:
            h.update(f"{s.doc_id}\x1f{s.domain}\x1f{s.token_ids}\n".encode())
        return h.hexdigest()

    def state(self) -> dict[str, Any]:
        out = {f"top.{k}": v for k, v in self.top.state().items()}
        out.update({f"pool.{k}": v for k, v in self.pool.state().items()})
        out.update({f"stats.{k}": v for k, v in self.stats.state().items()})
        out["rand_acts"] = self.rand_acts
        return out

    def load(self, state: dict[str, Any]) -> None:
        for part in ("top", "pool", "stats"):
            getattr(self, part).load({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(part + ".")})
        self.rand_acts.copy_(state["rand_acts"])

    # -- one batch -----------------------------------------------------------------------
    def batch_inputs(self, b: int) -> tuple[Any, Any]:
        """``input_ids`` and ``attention_mask`` ``[B, context + 1]`` of batch ``b`` (BOS first), on CPU."""
        import torch

        batch = self.seqs[b * self.cfg.batch_size : (b + 1) * self.cfg.batch_size]
        ids = torch.full((len(batch), self.cfg.context + 1), self.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), self.cfg.context + 1), dtype=torch.long)
        ids[:, 0], mask[:, 0] = self.bos, 1  # a leading BOS keeps the first token from being an attention-sink outlier
        for i, s in enumerate(batch):
            ids[i, 1 : 1 + len(s.token_ids)] = torch.tensor(s.token_ids)
            mask[i, 1 : 1 + len(s.token_ids)] = 1
        return ids, mask

    def unit_acts(self, ids: Any, mask: Any, hooked: Any = None) -> Any:
        """Unit activations of one batch (BOS dropped), the floor of collection: dense
        ``[B, context, units]``, or for a top-k SAE its k active features per token
        (:class:`SparseColumns`, padding not yet zeroed). ``hooked``: the hookpoint's tensor
        ``[B, context + 1, width]`` when a shared forward pass already captured it."""
        if hooked is None:
            hooked = capture(self.loaded.model, self.hookpoint, ids.to(self.device), mask.to(self.device))
        acts = hooked[:, 1:, :]
        if self.encoder is None:
            return acts.contiguous()
        if isinstance(self.encoder, SparseEncoder) and self.encoder.sparse_k:
            values, index = self.encoder.encode_sparse(acts)
            return SparseColumns(values, index, self.units)
        return self.encoder.encode(acts)

    def step(self, b: int, inputs: tuple[Any, Any] | None = None, hooked: Any = None) -> int:
        """Process batch ``b`` (``hooked``: its hookpoint tensor, if already captured); returns its number of tokens."""
        import torch

        ids, mask = inputs if inputs is not None else self.batch_inputs(b)
        acts = self.unit_acts(ids, mask, hooked)
        lens_cpu = mask[:, 1:].sum(dim=1)
        lens = lens_cpu.to(self.device)
        sparse = isinstance(acts, SparseColumns)
        if sparse:
            columns = acts
            t = columns.t
            k = columns.values.shape[1] // t
            if int(lens_cpu.min()) < t:  # only a document's last sequence is padded
                valid = torch.arange(t, device=self.device).repeat_interleave(k) < lens.unsqueeze(1)
                columns.values.mul_(valid)
            seq_max = columns.seq_max()
        else:
            short = [i for i, n in enumerate(lens_cpu.tolist()) if n < acts.shape[1]]
            for i in short:
                acts[i, int(lens_cpu[i]) :] = 0.0
            seq_max = acts.amax(dim=1)  # [B, U]
            for i in short:
                seq_max[i] = acts[i, : int(lens_cpu[i])].amax(dim=0)
            columns = DenseColumns(acts)
        n_seqs = seq_max.shape[0]
        first = b * self.cfg.batch_size
        seq_ids = torch.arange(first, first + n_seqs, device=self.device)
        self.top.update(seq_max, seq_max, seq_ids, lens, columns, self.cfg.lead)
        if self.cfg.n_quantiles:
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + b)
            keys = torch.rand(seq_max.shape, generator=gen, device=self.device).masked_fill_(
                seq_max <= 0, float("-inf")
            )
            self.pool.update(keys, seq_max, seq_ids, lens, columns, self.cfg.lead)
        n_tokens = int(lens_cpu.sum())
        if sparse:
            self.stats.update_sparse(columns, seq_max, n_tokens)
        else:
            self.stats.update(acts, seq_max, n_tokens)
        for r, s in enumerate(self.random_ids):
            if first <= s < first + n_seqs:
                st = self.random_start[s]
                self.rand_acts[r] = (
                    columns.dense_rows(s - first, st, self.cfg.window)
                    if sparse
                    else acts[s - first, st : st + self.cfg.window]
                )
        self.next_batch = b + 1
        return n_tokens

    def run(self, progress: bool = False, checkpoint: str | Path | None = None, checkpoint_every: int = 0) -> None:
        """Process every remaining batch, resuming from ``checkpoint`` when it holds this collection's
        state and saving it every ``checkpoint_every`` batches (0: about every 5% of the batches)."""
        from tqdm.auto import tqdm

        key = self.key() if checkpoint is not None else ""
        resumed = load_checkpoint(checkpoint, key)
        if resumed is not None:
            self.next_batch = resumed[0]
            self.load(resumed[1])
        every = checkpoint_every or max(1, self.n_batches // 20)
        done = sum(len(s.token_ids) for s in self.seqs[: self.next_batch * self.cfg.batch_size])
        bar = tqdm(
            total=sum(len(s.token_ids) for s in self.seqs),
            initial=done,
            unit="tok",
            desc=f"collect {self.hookpoint.name}",
            disable=not progress,
        )
        for b in range(self.next_batch, self.n_batches):
            bar.update(self.step(b))
            if checkpoint is not None and (b + 1) % every == 0 and b + 1 < self.n_batches:
                save_checkpoint(checkpoint, key, b + 1, self.state())
        bar.close()

    def records(self, unit_hookpoint_name: str | None = None, names: list[str] | None = None) -> list[UnitRecord]:
        return build_records(self, unit_hookpoint_name or unit_hookpoint(self.hookpoint, self.encoder), names)


def collect(
    loaded: Any,
    hookpoint: Hookpoint,
    docs: Iterable[Document],
    cfg: CollectConfig,
    progress: bool = True,
    encoder: Encoder | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
) -> list[UnitRecord]:
    """Collect evidence for every unit at ``hookpoint`` (or every feature of ``encoder``); returns
    one record per unit. With ``checkpoint`` (a file path) the state is saved every
    ``checkpoint_every`` batches and a killed run resumes from it; the file is removed at the end."""
    seqs = make_sequences(docs, loaded.tokenizer, cfg)
    collector = Collector(loaded, hookpoint, seqs, cfg, encoder)
    collector.run(progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    records = collector.records(names=getattr(encoder, "names", None))
    remove_checkpoint(checkpoint)
    return records
