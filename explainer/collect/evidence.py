"""Streaming, batched per-unit evidence kept on the model's device during collection.

- :class:`TopWindows`: per unit, the ``k`` candidate windows with the highest score, with the
  unit's activations on each window. With score = the window's max activation it is the top-k;
  with score = a uniform random key (``-inf`` where the unit is inactive) it is a uniform
  reservoir sample of the unit's activating windows, from which quantile strata are drawn.
  Candidates with equal scores are ranked by sequence id, lowest first (:func:`rank_key`), so the
  kept set is the same whatever the batching or sharding.
- :class:`RunningStats`: sum, sum of squares, firing count and max per unit, and a histogram of
  the max activation of each activating sequence (which also counts those sequences).

Every update costs a few O(batch × tokens × units) elementwise passes (or O(non-zeros) for sparse
units such as SAE features; a top-k SAE's batch is never made dense, see :class:`SparseColumns`)
plus O(entering windows × window) bookkeeping; memory is O(units × k × window) and never
O(tokens × units).
All tensors are plain attributes so that :mod:`explainer.collect.checkpoint` can save and restore them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HIST_LOW_EXP = -24
"""Lowest histogram edge is 2**HIST_LOW_EXP (smaller positive values fall into the first bin)."""
HIST_BINS_PER_OCTAVE = 4
HIST_BINS = 40 * HIST_BINS_PER_OCTAVE
"""Bins cover 2**-24 … 2**16 (raw units); larger values fall into the last bin."""
HIST_OFFSET = (127 + HIST_LOW_EXP) * HIST_BINS_PER_OCTAVE
"""(float32 bits >> 21) - HIST_OFFSET is the bin of a positive value: exponent × 4 + top two mantissa bits."""


class TopWindows:
    """Per unit, the ``k`` best-scoring candidates: score, activation value, sequence id, window
    start and the window's activations ``[units, k, window]`` (raw units), in no particular order
    (:meth:`order` sorts them). Empty slots have score ``-inf`` and sequence id -1."""

    def __init__(self, units: int, k: int, window: int, device: Any):
        import torch

        self.score = torch.full((units, k), float("-inf"), device=device)
        self.value = torch.zeros((units, k), device=device)
        self.seq = torch.full((units, k), -1, dtype=torch.long, device=device)
        self.start = torch.zeros((units, k), dtype=torch.long, device=device)
        self.acts = torch.zeros((units, k, window), device=device)

    def state(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in ("score", "value", "seq", "start", "acts")}

    def load(self, state: dict[str, Any]) -> None:
        for name, t in state.items():
            getattr(self, name).copy_(t)

    def update(self, score: Any, value: Any, seq_ids: Any, lens: Any, columns: Columns, lead: int) -> None:
        """score, value ``[B, U]``; seq_ids, lens ``[B]``; ``columns`` gives the batch's
        activations of (sequence, unit) pairs. A candidate that enters replaces an evicted slot;
        only entering windows are cut from the batch, placed with ``lead`` tokens before the unit's
        max token where the sequence allows."""
        import torch

        k, window = self.score.shape[1], self.acts.shape[2]
        cols = (score >= self.score.amin(dim=1)).any(dim=0).nonzero().flatten()  # units a candidate may enter
        if cols.numel() == 0:
            return
        slot_key = rank_key(self.score[cols], self.seq[cols])  # [n, k]
        cand_key = rank_key(score[:, cols], seq_ids.unsqueeze(1).expand(-1, cols.numel())).T  # [n, B]
        better = cand_key > slot_key.amin(dim=1, keepdim=True)
        cand = cand_key.masked_fill(~better, torch.iinfo(torch.int64).min)
        top = torch.cat([slot_key, cand], dim=1).topk(k, dim=1, sorted=False)
        keep = torch.zeros((cols.numel(), k + cand.shape[1]), dtype=torch.bool, device=score.device)
        keep.scatter_(1, top.indices, True)
        ej, slot = (~keep[:, :k]).nonzero(as_tuple=True)  # evicted old slots, row by row
        nj, row = keep[:, k:].nonzero(as_tuple=True)  # entering candidates, row by row: the same count per row
        if nj.numel() == 0:
            return
        unit = cols[nj]
        acts = columns(row, unit)  # [n, T]: each entering window's sequence
        pos = acts.argmax(dim=1)  # each entering window's max token
        start = torch.minimum((pos - lead).clamp(min=0), (lens[row] - window).clamp(min=0))
        offsets = (start.unsqueeze(1) + torch.arange(window, device=acts.device)).clamp(max=acts.shape[1] - 1)
        self.score[unit, slot] = score[row, unit]
        self.value[unit, slot] = value[row, unit]
        self.seq[unit, slot] = seq_ids[row]
        self.start[unit, slot] = start
        self.acts[unit, slot] = acts.gather(1, offsets)

    def order(self, by: str = "score") -> Any:
        """Slot indices ``[units, k]`` sorted by ``score`` or ``value``, best first; equal ones by
        sequence id, lowest first."""
        import torch

        key = self.score if by == "score" else self.value.masked_fill(torch.isinf(self.score), float("-inf"))
        return torch.sort(rank_key(key, self.seq), dim=1, descending=True, stable=True).indices


def rank_key(score: Any, seq: Any) -> Any:
    """An int64 key that orders candidates by ``score`` (float32) descending, then by sequence id
    ``seq`` ascending: the total order that makes the top-k of a collection independent of how
    its sequences were batched or sharded (see :mod:`explainer.collect.shards`). Sequence ids are
    -1 (an empty slot) … 2**31 - 2."""
    import torch

    bits = score.float().contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()  # float order as integers
    return ordered * 2**32 + (2**31 - 1 - seq.long())


class Columns:
    """The activations of chosen (sequence, unit) pairs of one batch: ``columns(row, unit)``
    with ``row``, ``unit`` ``[n]`` gives ``[n, T]``."""

    def __call__(self, row: Any, unit: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class DenseColumns(Columns):
    """Columns of a dense ``[B, T, U]`` batch. When many pairs are asked for, the batch is
    transposed to ``[B, U, T]`` once (a unit's tokens then lie side by side in memory)."""

    def __init__(self, acts: Any):
        self.acts = acts
        self._by_unit: Any = None

    def __call__(self, row: Any, unit: Any) -> Any:
        if self._by_unit is None and row.numel() * self.acts.shape[1] * 16 > self.acts.numel():
            self._by_unit = self.acts.transpose(1, 2).contiguous()
        return self._by_unit[row, unit] if self._by_unit is not None else self.acts[row, :, unit]


class SparseColumns(Columns):
    """Columns of a batch given as the k active units of each token: ``values`` and ``index``
    ``[B, T, k]`` (values zero at padding). Work is O(B × T × k + n × T), never O(B × T × U)."""

    def __init__(self, values: Any, index: Any, units: int):
        import torch

        b, t, k = values.shape
        self.units, self.t = units, t
        self.values = values.reshape(b, t * k)
        self.index = index.reshape(b, t * k)
        self.token = torch.arange(t, device=values.device).repeat_interleave(k).expand(b, -1)

    def __call__(self, row: Any, unit: Any) -> Any:
        import torch

        lookup = torch.full((self.values.shape[0], self.units), -1, dtype=torch.long, device=row.device)
        lookup[row, unit] = torch.arange(row.numel(), device=row.device)
        pair = lookup.gather(1, self.index)  # [B, T*k]: which asked-for pair each entry belongs to
        hit = pair >= 0
        out = torch.zeros((row.numel(), self.t), dtype=self.values.dtype, device=self.values.device)
        out[pair[hit], self.token[hit]] = self.values[hit]
        return out

    def seq_max(self) -> Any:
        """``[B, U]`` max activation of each unit in each sequence (0 where it never fired)."""
        import torch

        out = torch.zeros((self.values.shape[0], self.units), dtype=self.values.dtype, device=self.values.device)
        return out.scatter_reduce_(1, self.index, self.values, reduce="amax")

    def dense_rows(self, b: int, start: int, length: int) -> Any:
        """``[length, U]`` dense activations of sequence ``b``, tokens ``start…start+length``."""
        import torch

        k = self.values.shape[1] // self.t
        sl = slice(start * k, (start + length) * k)
        out = torch.zeros((length, self.units), dtype=self.values.dtype, device=self.values.device)
        return out.scatter_(1, self.index[b, sl].view(length, k), self.values[b, sl].view(length, k))


class RunningStats:
    """Per-unit running statistics (raw units): sum, sum of squares and firing count over every
    valid token; max, and a histogram of the max activation of every activating sequence, whose
    bins split each octave into four equal-width parts (read from the float's exponent and top two
    mantissa bits). Sparse batches (few non-zeros, e.g. SAE features) visit only the non-zeros."""

    def __init__(self, units: int, device: Any):
        import torch

        self.sum = torch.zeros(units, dtype=torch.float64, device=device)
        self.sq_sum = torch.zeros(units, dtype=torch.float64, device=device)
        self.fire = torch.zeros(units, dtype=torch.float64, device=device)
        """Tokens with activation > 0 (a float count, exact below 2**53)."""
        self.max = torch.full((units,), float("-inf"), device=device)
        self.hist = torch.zeros(units * HIST_BINS, dtype=torch.long, device=device)
        self.n_tokens = torch.zeros((), dtype=torch.long, device=device)
        self.sparse = torch.zeros((), dtype=torch.bool)
        """Whether the last batch was sparse (< 1/16 non-zeros): then only non-zeros are visited.
        Part of the state, so that a resumed run takes the same (differently rounded) paths."""

    @property
    def active_seqs(self) -> Any:
        """Sequences whose max activation is > 0, per unit."""
        return self.hist.view(self.max.shape[0], -1).sum(dim=1)

    def state(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in ("sum", "sq_sum", "fire", "max", "hist", "n_tokens", "sparse")}

    def load(self, state: dict[str, Any]) -> None:
        for name, t in state.items():
            getattr(self, name).copy_(t)

    def _common(self, seq_max: Any, n_valid: int) -> None:
        import torch

        units = seq_max.shape[-1]
        self.max = torch.maximum(self.max, seq_max.amax(dim=0))
        self.n_tokens += n_valid
        b, c = (seq_max > 0).nonzero(as_tuple=True)
        v = seq_max[b, c].contiguous()
        self.hist += torch.bincount(
            c * HIST_BINS + _hist_table(v.device)[(v.view(torch.int32) >> 21) + 1024] - 1, minlength=units * HIST_BINS
        )

    def _add_entries(self, cols: Any, v: Any, units: int) -> None:
        import torch

        v = v.double()
        self.sum += torch.bincount(cols, weights=v, minlength=units)
        self.sq_sum += torch.bincount(cols, weights=v * v, minlength=units)
        self.fire += torch.bincount(cols, weights=(v > 0).double(), minlength=units)

    def update(self, acts: Any, seq_max: Any, n_valid: int) -> None:
        """acts ``[B, T, U]`` with zeros at padding; seq_max ``[B, U]`` (max over valid tokens)."""
        import torch

        units = acts.shape[-1]
        flat = acts.reshape(-1, units)
        self._common(seq_max, n_valid)
        if bool(self.sparse):
            rows, cols = (flat != 0).nonzero(as_tuple=True)
            self._add_entries(cols, flat[rows, cols], units)
            self.sparse.fill_(rows.numel() * 16 < flat.numel())
            return
        ones = torch.ones((1, flat.shape[0]), dtype=flat.dtype, device=flat.device)
        self.sum += (ones @ flat).squeeze(0).double()
        self.sq_sum += torch.linalg.vector_norm(flat, dim=0).double().square()
        fire = (ones @ (flat > 0).to(flat.dtype)).squeeze(0)
        self.fire += fire.double()
        self.sparse.fill_(float(fire.sum()) * 16 < flat.numel())

    def update_sparse(self, columns: SparseColumns, seq_max: Any, n_valid: int) -> None:
        """The same from a batch given as each token's k active units (zeros at padding)."""
        self._common(seq_max, n_valid)
        nz = columns.values != 0
        self._add_entries(columns.index[nz], columns.values[nz], columns.units)
        self.sparse.fill_(True)


_TABLES: dict[str, Any] = {}


def _hist_table(device: Any) -> Any:
    """Lookup from ``(float32 bits >> 21) + 1024`` to 1 + the histogram bin of a positive value, or 0
    for zero, negative values and denormals (their bits shift to <= 0)."""
    import torch

    key = str(device)
    if key not in _TABLES:
        q = torch.arange(-1024, 1024)
        table = (q - HIST_OFFSET).clamp(0, HIST_BINS - 1) + 1
        _TABLES[key] = torch.where(q > 0, table, 0).to(device)
    return _TABLES[key]


def hist_edges() -> np.ndarray:
    """The ``HIST_BINS + 1`` bin edges in raw units: 2**e × (1, 1.25, 1.5, 1.75) for each octave e."""
    j = np.arange(HIST_BINS + 1)
    return np.exp2(HIST_LOW_EXP + j // HIST_BINS_PER_OCTAVE) * (1 + (j % HIST_BINS_PER_OCTAVE) / HIST_BINS_PER_OCTAVE)


def quantile_boundaries(hist: np.ndarray, n_quantiles: int) -> np.ndarray:
    """``[units, n_quantiles - 1]`` boundaries between equal-count strata of the positive
    activations, interpolated linearly within a bin; NaN for units without positive activations."""
    edges = hist_edges()
    counts = hist.astype(np.float64)
    total = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    rows = np.arange(hist.shape[0])
    out = np.full((hist.shape[0], n_quantiles - 1), np.nan)
    for j in range(1, n_quantiles):
        target = j / n_quantiles * total
        b = np.minimum((cum < target[:, None]).sum(axis=1), hist.shape[1] - 1)
        before = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0.0)
        in_bin = counts[rows, b]
        frac = np.clip(np.divide(target - before, in_bin, out=np.zeros_like(target), where=in_bin > 0), 0, 1)
        out[:, j - 1] = np.where(total > 0, edges[b] + frac * (edges[b + 1] - edges[b]), np.nan)
    return out
