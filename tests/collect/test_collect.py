"""Collection on the tiny random LLaMA, checked against brute force: top windows placed around
the max, quantile and random windows, statistics, dead and ultra-rare units, bounded memory."""

import json
import random
import zlib

import numpy as np
import pytest
import torch
from builders.collect import DOCS

from explainer.collect.collector import CollectConfig, Collector, collect, make_sequences
from explainer.collect.hooks import capture, resolve_hookpoint
from explainer.errors import CorpusError, SAEError
from store.records import Document, UnitRecord

CFG = CollectConfig(
    window=8,
    context=16,
    top_k=4,
    n_random=2,
    max_tokens=400,
    batch_size=3,
    n_quantiles=4,
    pool_per_quantile=2,
    min_density=0.0,
)
UNITS = [0, 1, 7, 42, 63, 64, 99, 127]


@pytest.fixture(scope="module")
def hp(tiny_model):
    return resolve_hookpoint(tiny_model.model, "layers.1.mlp")


@pytest.fixture(scope="module")
def collected(tiny_model, hp):
    return collect(tiny_model, hp, DOCS, CFG, progress=False)


@pytest.fixture(scope="module")
def brute(tiny_model, hp):
    """Activations of every sequence, computed one sequence at a time without padding."""
    tok = tiny_model.tokenizer
    seqs = make_sequences(DOCS, tok, CFG)
    per_seq = []
    for s in seqs:
        ids = torch.tensor([[tok.bos_token_id, *s.token_ids]])
        per_seq.append(capture(tiny_model.model, hp, ids, torch.ones_like(ids))[0, 1:, :])  # drop the BOS
    return seqs, per_seq


def window_start(pos: int, length: int, cfg: CollectConfig = CFG) -> int:
    return max(0, min(pos - cfg.lead, length - cfg.window))


def test_sequences_cover_the_corpus_up_to_max_tokens(tiny_model, brute):
    seqs, _ = brute
    total = sum(len(s.token_ids) for s in seqs)
    assert 400 <= total < 400 + 16
    assert all(4 <= len(s.token_ids) <= 16 for s in seqs)
    assert any(len(s.token_ids) < 16 for s in seqs)  # some rows need padding in a batch
    assert len(seqs) > 2 * CFG.batch_size and len(seqs) % CFG.batch_size != 0
    a_ids = tiny_model.tokenizer(DOCS[0].text, add_special_tokens=False)["input_ids"]
    a_seqs = [s.token_ids for s in seqs if s.doc_id == "code:a.py"]
    assert [list(t) for t in a_seqs] == [
        a_ids[i : i + 16] for i in range(0, len(a_ids), 16) if len(a_ids[i : i + 16]) >= 4
    ]
    assert "docs:tiny.md" not in {s.doc_id for s in seqs}


def test_one_record_per_unit(collected):
    assert len(collected) == 128
    assert [r.index for r in collected] == list(range(128))
    assert collected[5].unit_id == "tiny-llama/layers.1.mlp/5"
    assert {(r.model, r.hookpoint) for r in collected} == {("tiny-llama", "layers.1.mlp")}


@pytest.mark.parametrize("unit", UNITS)
def test_top_windows_are_the_best_sequences_with_context_before_the_max(collected, brute, tiny_model, unit):
    seqs, per_seq = brute
    maxima = [float(a[:, unit].max()) for a in per_seq]
    order = sorted(range(len(seqs)), key=lambda i: -maxima[i])[:4]
    assert maxima[order[3]] > 0, "pick units whose 4 best sequences are positive"
    tops = [w for w in collected[unit].windows if w.kind == "top"]
    assert [w.window_id for w in tops] == ["top-0", "top-1", "top-2", "top-3"]
    assert [w.split for w in tops] == ["explain", "heldout", "explain", "heldout"]
    assert [w.max_activation for w in tops] == pytest.approx([maxima[i] for i in order], abs=1e-4)
    for w, s in zip(tops, order):
        acts = per_seq[s][:, unit]
        pos, n = int(acts.argmax()), len(seqs[s].token_ids)
        start = window_start(pos, n)
        assert (w.doc_id, w.domain) == (seqs[s].doc_id, seqs[s].domain)
        assert w.tokens == tuple(tiny_model.tokenizer.decode([i]) for i in seqs[s].token_ids[start : start + 8])
        assert list(w.activations) == pytest.approx(acts[start : start + 8].tolist(), abs=1e-4)
        # the max token keeps lead (6) tokens of context before it whenever the sequence allows
        assert int(np.argmax(w.activations)) == pos - start
        assert pos - start == min(pos, CFG.lead) or start == n - 8


@pytest.mark.parametrize("unit", UNITS)
def test_quantile_windows_are_other_activating_sequences_in_increasing_strata(collected, brute, unit):
    seqs, per_seq = brute
    rec = collected[unit]
    top_docs = {(w.doc_id, w.tokens) for w in rec.windows if w.kind == "top"}
    quant = [w for w in rec.windows if w.kind == "quantile"]
    assert 1 <= len(quant) <= 4
    assert [w.quantile for w in quant] == sorted({w.quantile for w in quant})
    assert [w.window_id for w in quant] == [f"quantile-{w.quantile}" for w in quant]
    assert all(w.split == ("explain" if w.quantile % 2 == 0 else "heldout") for w in quant)
    maxes = [w.max_activation for w in quant]
    assert maxes == sorted(maxes) and maxes[0] > 0
    assert max(maxes) <= min(w.max_activation for w in rec.windows if w.kind == "top") + 1e-6
    by_tokens = {}
    for s, a in zip(seqs, per_seq):
        by_tokens.setdefault(s.doc_id, []).append((s, a))
    for w in quant:
        if w.doc_id != "code:b.py":  # b.py repeats one line, so two of its sequences can be identical
            assert (w.doc_id, w.tokens) not in top_docs
        matches = [
            (s, a)
            for s, a in by_tokens[w.doc_id]
            if float(a[:, unit].max()) == pytest.approx(w.max_activation, abs=1e-4)
        ]
        assert matches, "the window holds its sequence's max"


def test_quantile_windows_with_a_pool_holding_every_sequence_match_brute_force(tiny_model, hp, brute):
    seqs, per_seq = brute
    cfg = CollectConfig(**{**CFG.to_dict(), "pool_per_quantile": 100})
    records = collect(tiny_model, hp, DOCS, cfg, progress=False)
    for unit in UNITS:
        maxima = [float(a[:, unit].max()) for a in per_seq]
        top = set(sorted(range(len(seqs)), key=lambda i: -maxima[i])[:4])
        rest = sorted((i for i in range(len(seqs)) if i not in top and maxima[i] > 0), key=lambda i: maxima[i])
        groups = np.array_split(np.array(rest), 4)
        want = [maxima[int(g[len(g) // 2])] for g in groups]
        got = [w.max_activation for w in records[unit].windows if w.kind == "quantile"]
        assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("unit", UNITS)
def test_random_windows_are_heldout_and_match_brute_force(collected, brute, unit):
    seqs, per_seq = brute
    rng = random.Random(CFG.seed)
    ids = sorted(rng.sample(range(len(seqs)), CFG.n_random))
    starts = [rng.randrange(max(1, len(seqs[s].token_ids) - CFG.window + 1)) for s in ids]
    rand = [w for w in collected[unit].windows if w.kind == "random"]
    assert [w.window_id for w in rand] == ["random-0", "random-1"]
    assert all(w.split == "heldout" for w in rand)
    for w, s, st in zip(rand, ids, starts):
        assert w.doc_id == seqs[s].doc_id
        assert list(w.activations) == pytest.approx(per_seq[s][st : st + 8, unit].tolist(), abs=1e-4)
    kinds = [w.kind for w in collected[unit].windows]
    assert kinds == sorted(kinds, key=["top", "quantile", "random"].index)  # top, then quantile, then random


@pytest.mark.parametrize("unit", UNITS)
def test_stats_match_brute_force(collected, brute, unit):
    _, per_seq = brute
    allacts = torch.cat([a[:, unit] for a in per_seq]).double()
    st = collected[unit].stats
    assert st.n_tokens == allacts.numel()
    assert st.max == pytest.approx(float(allacts.max()), abs=1e-4)
    assert st.mean == pytest.approx(float(allacts.mean()), abs=1e-4)
    assert st.std == pytest.approx(float(allacts.std(unbiased=False)), abs=1e-4)
    assert st.density == pytest.approx(float((allacts > 0).double().mean()), abs=1e-4)
    seq_max = np.array([float(a[:, unit].max()) for a in per_seq])
    pos = seq_max[seq_max > 0]  # the histogram counts activating sequences by their max
    assert sum(st.histogram) == len(pos)
    assert len(st.histogram_edges) == len(st.histogram) + 1
    counts, _ = np.histogram(pos, bins=np.array(st.histogram_edges))
    assert counts.tolist() == list(st.histogram)
    want = np.quantile(pos, [0.25, 0.5, 0.75])
    assert len(st.quantiles) == 3 and list(st.quantiles) == sorted(st.quantiles)
    assert (np.abs(np.log2(np.array(st.quantiles) / want)) <= 0.5).all()  # within two bins (2**0.25 each)


def test_stats_of_every_unit_match_brute_force(collected, brute):
    _, per_seq = brute
    allacts = torch.cat(per_seq).double()  # [tokens, units]
    got = torch.tensor([[r.stats.max, r.stats.mean, r.stats.density] for r in collected], dtype=torch.float64)
    want = torch.stack([allacts.max(0).values, allacts.mean(0), (allacts > 0).double().mean(0)], dim=1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_records_round_trip_through_blob(collected):
    for rec in collected[:10]:
        back = UnitRecord.from_blob(rec.to_blob())
        assert back == rec
        assert isinstance(back.windows, tuple) and isinstance(back.windows[0].tokens, tuple)
        assert isinstance(back.stats.histogram, tuple)


def test_blobs_written_before_the_new_fields_still_load():
    old = {
        "unit_id": "m/layers.1.mlp/3",
        "model": "m",
        "hookpoint": "layers.1.mlp",
        "index": 3,
        "stats": {"max": 2.0, "mean": 0.1, "std": 0.3, "density": 0.2, "n_tokens": 10},
        "windows": [
            {
                "window_id": "top-0",
                "kind": "top",
                "split": "explain",
                "doc_id": "d",
                "domain": "code",
                "tokens": ["a", " b"],
                "activations": [0.0, 2.0],
            }
        ],
    }
    rec = UnitRecord.from_blob(zlib.compress(json.dumps(old).encode()))
    assert rec.windows[0].quantile is None and rec.stats.quantiles == () and rec.skip_reason is None and rec.live


def test_collect_residual_hookpoint(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    records = collect(tiny_model, hp, DOCS, CFG, progress=False)
    assert len(records) == 64
    tok = tiny_model.tokenizer
    best = max(
        float(
            capture(
                tiny_model.model,
                hp,
                torch.tensor([[tok.bos_token_id, *s.token_ids]]),
                torch.ones((1, len(s.token_ids) + 1), dtype=torch.long),
            )[0, 1:, 3].max()
        )
        for s in make_sequences(DOCS, tok, CFG)
    )
    assert records[3].windows[0].window_id == "top-0"
    assert records[3].windows[0].max_activation == pytest.approx(best, abs=1e-4)
    assert records[3].stats.max == pytest.approx(best, abs=1e-4)


class ThresholdEncoder:
    """Test encoder: unit 0 a dense projection, unit 1 dead, unit 2 active on one token only."""

    name, fingerprint, d_in = "stub", "0" * 16, 64

    def __init__(self, v, threshold):
        self.v, self.threshold = v, threshold

    @property
    def width(self):
        return 3

    def to(self, device):
        return self

    def check_hookpoint(self, hp):
        if hp.width != self.d_in:
            raise SAEError("width")

    def encode(self, x):
        p = x @ self.v
        return torch.stack([p, torch.zeros_like(p), torch.relu(p - self.threshold)], dim=-1)


def test_dead_and_ultra_rare_units_are_marked_and_not_selected(tiny_model, settings):
    from explainer.pipeline.collection import select_units
    from explainer.runtime import get_store

    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    v = torch.randn(64)
    tok = tiny_model.tokenizer
    proj = torch.cat(
        [
            capture(
                tiny_model.model,
                hp,
                torch.tensor([[tok.bos_token_id, *s.token_ids]]),
                torch.ones((1, len(s.token_ids) + 1), dtype=torch.long),
            )[0, 1:]
            @ v
            for s in make_sequences(DOCS, tok, CFG)
        ]
    )
    first, second = proj.topk(2).values.tolist()
    records = collect(tiny_model, hp, DOCS, CFG, progress=False, encoder=ThresholdEncoder(v, (first + second) / 2))
    live, dead, rare = records
    assert live.skip_reason is None and live.live
    assert dead.skip_reason.startswith("dead: never active") and dead.windows == () and not dead.live
    assert rare.skip_reason.startswith("ultra-rare: active on 1 of") and not rare.live
    assert [w.window_id for w in rare.windows if w.kind == "top"] == ["top-0"]  # evidence kept, labeling skips it
    assert live.unit_id == "tiny-llama/layers.1.sae-stub-000000/0"
    store = get_store(settings)
    store.start_collection("c1", "tiny-llama", live.hookpoint, "test", "h", {})
    store.finish_collection("c1", records, live.stats.n_tokens)
    assert [r["unit_id"] for r in store.unit_rows("c1", live_only=True)] == [live.unit_id]
    assert select_units(settings, "c1", 10) == [live.unit_id]
    assert UnitRecord.from_blob(store.get_record(rare.unit_id, "c1").to_blob()).skip_reason == rare.skip_reason


def test_state_is_bounded_by_units_k_and_window_not_tokens(tiny_model, hp):
    def state_size(max_tokens):
        cfg = CollectConfig(**{**CFG.to_dict(), "max_tokens": max_tokens})
        col = Collector(tiny_model, hp, make_sequences(DOCS, tiny_model.tokenizer, cfg), cfg)
        col.run()
        return sum(t.numel() for t in col.state().values()), col

    small, _ = state_size(100)
    large, col = state_size(400)
    assert small == large
    pool = CFG.n_quantiles * CFG.pool_per_quantile
    evidence = 128 * (CFG.top_k + pool) * CFG.window + CFG.n_random * CFG.window * 128
    assert evidence <= large <= evidence + 128 * (5 * (CFG.top_k + pool) + 200)  # + per-unit scalars and histogram


def test_corpus_shorter_than_one_window_raises(tiny_model, hp):
    with pytest.raises(CorpusError, match="fewer than one window"):
        collect(tiny_model, hp, [], CFG, progress=False)
    with pytest.raises(CorpusError):
        collect(tiny_model, hp, [Document("d:1", "docs", ""), Document("d:2", "docs", "Hi.")], CFG, progress=False)
    cfg = CollectConfig(**{**CFG.to_dict(), "window": 64, "context": 64})
    with pytest.raises(CorpusError, match="fewer than one window of 64"):
        collect(tiny_model, hp, [Document("d:1", "docs", "one two three four five six seven eight nine ten")], cfg)


def test_encoder_of_the_wrong_width_is_rejected_before_running(tiny_model, hp):
    with pytest.raises(SAEError, match="width"):
        collect(tiny_model, hp, DOCS, CFG, progress=False, encoder=ThresholdEncoder(torch.zeros(64), 0.0))
