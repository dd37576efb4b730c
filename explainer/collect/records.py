"""Turn a finished collection's streaming state into one :class:`UnitRecord` per unit.

Window ids: ``top-R`` (R = rank, 0 = strongest; even ranks explain, odd ranks held out),
``quantile-Q`` (Q = stratum, 0 = weakest; even strata explain, odd held out) and ``random-R``
(all held out). A window never repeats a sequence already used by the unit's top windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainer.collect.evidence import hist_edges, quantile_boundaries
from store.records import UnitRecord, UnitStats, Window, WindowKind, WindowSplit, make_unit_id


def _split(i: int) -> WindowSplit:
    return "explain" if i % 2 == 0 else "heldout"


def _quantile_picks(values: list[float], n_quantiles: int) -> list[tuple[int, int]]:
    """``(stratum, index into values)`` of one window per stratum; ``values`` sorted ascending."""
    n = len(values)
    if n == 0 or n_quantiles == 0:
        return []
    if n <= n_quantiles:
        return [(i * n_quantiles // n, i) for i in range(n)]
    groups = np.array_split(np.arange(n), n_quantiles)
    return [(q, int(g[len(g) // 2])) for q, g in enumerate(groups)]


def skip_reason(fire: int, n_tokens: int, active_seqs: int, min_density: float) -> str | None:
    """``dead: …`` or ``ultra-rare: …`` with the numbers, or ``None`` for a unit worth labeling."""
    if fire == 0:
        return f"dead: never active (> 0) on {n_tokens} tokens"
    density = fire / max(n_tokens, 1)
    if density < min_density or active_seqs < 2:
        return (
            f"ultra-rare: active on {fire} of {n_tokens} tokens (density {density:.2e}, minimum {min_density:.0e}) "
            f"in {active_seqs} sequence(s) (minimum 2)"
        )
    return None


def build_records(col: Any, unit_hp: str, names: list[str] | None = None) -> list[UnitRecord]:
    """Records of every unit of the :class:`~explainer.collect.collector.Collector` ``col``."""
    cfg, seqs, tok, model = col.cfg, col.seqs, col.loaded.tokenizer, col.loaded.name
    decoded: dict[int, str] = {}
    seq_tokens: dict[int, tuple[str, ...]] = {}

    def tokens_of(s: int) -> tuple[str, ...]:
        if s not in seq_tokens:
            for i in seqs[s].token_ids:
                if i not in decoded:
                    decoded[i] = tok.decode([i])
            seq_tokens[s] = tuple(decoded[i] for i in seqs[s].token_ids)
        return seq_tokens[s]

    def window(
        wid: str, kind: WindowKind, split: WindowSplit, s: int, start: int, acts: np.ndarray, q: int | None = None
    ) -> Window:
        n = min(cfg.window, len(seqs[s].token_ids) - start)
        return Window(
            wid,
            kind,
            split,
            seqs[s].doc_id,
            seqs[s].domain,
            tokens_of(s)[start : start + n],
            tuple(acts[:n].tolist()),
            q,
        )

    st = {k: v.cpu().numpy() for k, v in col.stats.state().items()}
    n_tokens = int(st["n_tokens"])
    mean = st["sum"] / max(n_tokens, 1)
    std = np.sqrt(np.clip(st["sq_sum"] / max(n_tokens, 1) - mean**2, 0, None))
    hist = st["hist"].reshape(col.units, -1)
    active_seqs = hist.sum(axis=1)
    bounds = quantile_boundaries(hist, max(cfg.n_quantiles, 2))
    edges = hist_edges()
    top_order = col.top.order("score").cpu().numpy()
    top = {k: v.cpu().numpy() for k, v in col.top.state().items()}
    pool = {k: v.cpu().numpy() for k, v in col.pool.state().items()}
    top_acts, pool_acts = (np.round(a["acts"].astype(np.float64), 5) for a in (top, pool))
    rand = np.round(col.rand_acts.permute(2, 0, 1).cpu().numpy().astype(np.float64), 5)  # [U, R, W]
    records = []
    for u in range(col.units):
        fire = int(st["fire"][u])
        reason = skip_reason(fire, n_tokens, int(active_seqs[u]), cfg.min_density)
        windows: list[Window] = []
        nz = np.nonzero(hist[u])[0]
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        if fire > 0:
            used: set[int] = set()
            rank = 0
            for i in top_order[u]:
                s, val = int(top["seq"][u][i]), float(top["value"][u][i])
                if s < 0 or val <= 0:
                    continue
                windows.append(window(f"top-{rank}", "top", _split(rank), s, int(top["start"][u][i]), top_acts[u][i]))
                used.add(int(s))
                rank += 1
            cand = [
                i
                for i in np.lexsort((pool["seq"][u], pool["value"][u]))  # by value, equal ones by sequence
                if np.isfinite(pool["score"][u][i]) and int(pool["seq"][u][i]) not in used
            ]
            for q, i in _quantile_picks([float(pool["value"][u][i]) for i in cand], cfg.n_quantiles):
                j = cand[i]
                windows.append(
                    window(
                        f"quantile-{q}",
                        "quantile",
                        _split(q),
                        int(pool["seq"][u][j]),
                        int(pool["start"][u][j]),
                        pool_acts[u][j],
                        q,
                    )
                )
            for r, s in enumerate(col.random_ids):
                windows.append(window(f"random-{r}", "random", "heldout", s, col.random_start[s], rand[u][r]))
        stats = UnitStats(
            max=float(st["max"][u]),
            mean=float(mean[u]),
            std=float(std[u]),
            density=fire / max(n_tokens, 1),
            n_tokens=n_tokens,
            quantiles=tuple(float(x) for x in bounds[u]) if fire and cfg.n_quantiles >= 2 else (),
            histogram=tuple(int(c) for c in hist[u][lo:hi]),
            histogram_edges=tuple(float(e) for e in edges[lo : hi + 1]) if hi else (),
        )
        records.append(
            UnitRecord(
                make_unit_id(model, unit_hp, u),
                model,
                unit_hp,
                u,
                stats,
                tuple(windows),
                name=names[u] if names else None,
                skip_reason=reason,
            )
        )
    return records
