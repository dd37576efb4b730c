"""Hookpoints and collection on the tiny random LLaMA, checked against brute force."""

import random

import pytest
import torch

from explainer.collect import CollectConfig, collect, make_sequences
from explainer.errors import CorpusError, HookpointError
from explainer.hooks import capture, resolve_hookpoint
from explainer.records import Document, UnitRecord

# -- resolve_hookpoint --------------------------------------------------------------------


def test_resolve_mlp_hookpoint(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.2.mlp")
    assert (hp.name, hp.layer, hp.kind, hp.width) == ("layers.2.mlp", 2, "mlp", 128)


def test_resolve_residual_hookpoint(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.2")
    assert (hp.name, hp.layer, hp.kind, hp.width) == ("layers.2", 2, "resid", 64)


def test_resolve_last_layer(tiny_model):
    assert resolve_hookpoint(tiny_model.model, "layers.3.mlp").layer == 3
    assert resolve_hookpoint(tiny_model.model, "layers.3").layer == 3


@pytest.mark.parametrize("name", ["layers.9", "layers.4", "layers.4.mlp", "blocks.2.hook_resid_post", "foo",
                                  "layers.2.attn", "layers.-1", ""])
def test_resolve_rejects_unknown_names_and_lists_valid_ones(tiny_model, name):
    with pytest.raises(HookpointError, match=r"layers\.0\.mlp") as info:
        resolve_hookpoint(tiny_model.model, name)
    msg = str(info.value)
    assert repr(name) in msg
    assert "layers.3.mlp" in msg and "layers.3 " in msg  # the last valid names of a 4-layer model


# -- capture ------------------------------------------------------------------------------

def _batch(tok, texts):
    """Right-padded batch with a leading BOS, like collect() builds it."""
    rows = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


TEXTS = ["def f(x):\n    return x + 1", "The quick brown fox jumps over the lazy dog."]


def test_capture_mlp_equals_gated_product_of_the_mlp_input(tiny_model):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    mlp = model.model.layers[1].mlp
    seen = []
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        acts = capture(model, resolve_hookpoint(model, "layers.1.mlp"), ids, mask)
    finally:
        handle.remove()
    assert len(seen) == 1
    x = seen[0]
    with torch.no_grad():
        expected = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    assert acts.shape == (2, ids.shape[1], 128)
    assert acts.dtype == torch.float32
    torch.testing.assert_close(acts, expected, atol=1e-5, rtol=0)
    assert acts.abs().max() > 1e-3  # not trivially zero


def test_capture_residual_equals_hidden_states_of_full_model(tiny_model):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    acts = capture(model, resolve_hookpoint(model, "layers.1"), ids, mask)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
    assert acts.shape == (2, ids.shape[1], 64)
    torch.testing.assert_close(acts, hidden[2], atol=1e-5, rtol=0)
    # and not the input of the block or the output of the next one
    assert (acts - hidden[1]).abs().max() > 1e-3
    assert (acts - hidden[3]).abs().max() > 1e-3


@pytest.mark.parametrize("name, down_proj_calls", [("layers.1.mlp", 0), ("layers.1", 1)])
def test_capture_stops_the_forward_pass_and_removes_its_hook(tiny_model, name, down_proj_calls):
    model = tiny_model.model
    ids, mask = _batch(tiny_model.tokenizer, TEXTS)
    calls = {"layer2": 0, "layer3": 0, "norm": 0, "lm_head": 0, "down_proj1": 0}

    def counter(key):
        def hook(*_):
            calls[key] += 1
        return hook

    handles = [
        model.model.layers[2].register_forward_hook(counter("layer2")),
        model.model.layers[3].register_forward_hook(counter("layer3")),
        model.model.norm.register_forward_hook(counter("norm")),
        model.lm_head.register_forward_hook(counter("lm_head")),
        model.model.layers[1].mlp.down_proj.register_forward_hook(counter("down_proj1")),
    ]
    down_proj, block = model.model.layers[1].mlp.down_proj, model.model.layers[1]
    before = (len(down_proj._forward_pre_hooks), len(block._forward_hooks))
    try:
        capture(model, resolve_hookpoint(model, name), ids, mask)
        # capture removed its own hook (transformers may keep hooks of its own there)
        assert (len(down_proj._forward_pre_hooks), len(block._forward_hooks)) == before
        # the MLP hookpoint stops before its own down_proj; the residual one after the whole block
        assert calls == {"layer2": 0, "layer3": 0, "norm": 0, "lm_head": 0, "down_proj1": down_proj_calls}
        # sanity check of the counters: a full forward pass does call them
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        assert calls == {"layer2": 1, "layer3": 1, "norm": 1, "lm_head": 1, "down_proj1": down_proj_calls + 1}
    finally:
        for h in handles:
            h.remove()


# -- collect ------------------------------------------------------------------------------

DOCS = [
    Document("code:a.py", "code", "import os\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n\n"
             "def write(path, text):\n    if not text:\n        raise ValueError('empty')\n"
             "    with open(path, 'w') as f:\n        f.write(text)\n\nfor i in range(10):\n    print(i * i)\n"),
    Document("docs:intro.md", "docs", "The library reads a corpus, runs the model over it and keeps, for every "
             "neuron, the windows of text where it fires the most. Each explanation is then scored by how well "
             "a simulator predicts the activations from the explanation alone. Results are stored in a database "
             "and can be searched by meaning."),
    Document("legal:license.txt", "legal", "Permission is hereby granted, free of charge, to any person obtaining "
             "a copy of this software, to deal in the Software without restriction, including without limitation "
             "the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the "
             "Software. THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED."),
    Document("docs:tiny.md", "docs", "Hi."),  # too short to give a window
    Document("code:b.py", "code", "x = [n for n in range(100) if n % 3 == 0]\nprint(sum(x), len(x), max(x))\n" * 8),
]
CFG = CollectConfig(window=16, top_k=4, n_random=2, max_tokens=400, batch_size=3)
UNITS = [0, 1, 7, 42, 63, 64, 99, 127]


@pytest.fixture(scope="module")
def collected(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.1.mlp")
    records = collect(tiny_model, hp, DOCS, CFG, progress=False)
    return hp, records


@pytest.fixture(scope="module")
def brute(tiny_model):
    """Activations of every window, computed one window at a time without padding."""
    tok = tiny_model.tokenizer
    hp = resolve_hookpoint(tiny_model.model, "layers.1.mlp")
    seqs = make_sequences(DOCS, tok, CFG)
    per_seq = []
    for s in seqs:
        ids = torch.tensor([[tok.bos_token_id, *s.token_ids]])
        acts = capture(tiny_model.model, hp, ids, torch.ones_like(ids))[0, 1:, :]  # drop the BOS
        per_seq.append(acts)
    return seqs, per_seq


def test_sequences_cover_the_corpus_up_to_max_tokens(tiny_model, brute):
    seqs, _ = brute
    total = sum(len(s.token_ids) for s in seqs)
    assert 400 <= total < 400 + 16  # stops at the first window that reaches max_tokens
    assert all(4 <= len(s.token_ids) <= 16 for s in seqs)
    assert any(len(s.token_ids) < 16 for s in seqs)  # some windows need padding in a batch
    assert len(seqs) > 2 * CFG.batch_size and len(seqs) % CFG.batch_size != 0  # several batches, the last partial
    # a document is cut into consecutive windows; a tail shorter than 4 tokens is dropped
    a_ids = tiny_model.tokenizer(DOCS[0].text, add_special_tokens=False)["input_ids"]
    a_seqs = [s.token_ids for s in seqs if s.doc_id == "code:a.py"]
    assert [list(t) for t in a_seqs] == [a_ids[i : i + 16] for i in range(0, len(a_ids), 16) if len(a_ids[i : i + 16]) >= 4]
    assert "docs:tiny.md" not in {s.doc_id for s in seqs}


def test_one_record_per_unit(collected, tiny_model):
    hp, records = collected
    assert len(records) == 128
    assert [r.index for r in records] == list(range(128))
    assert records[5].unit_id == "tiny-llama/layers.1.mlp/5"
    assert {(r.model, r.hookpoint) for r in records} == {("tiny-llama", "layers.1.mlp")}


@pytest.mark.parametrize("unit", UNITS)
def test_top_windows_match_brute_force(collected, brute, tiny_model, unit):
    _, records = collected
    seqs, per_seq = brute
    rec = records[unit]
    maxima = [float(a[:, unit].max()) for a in per_seq]
    order = sorted(range(len(seqs)), key=lambda i: -maxima[i])[:4]
    assert maxima[order[3]] > 0, "pick units whose 4 best windows are positive"
    tops = rec.windows_for("explain", "top") + rec.windows_for("heldout", "top")
    tops.sort(key=lambda w: int(w.window_id.split("-")[1]))
    assert [w.window_id for w in tops] == ["top-0", "top-1", "top-2", "top-3"]
    assert [w.max_activation for w in tops] == pytest.approx([maxima[i] for i in order], abs=1e-4)
    for rank, (w, s) in enumerate(zip(tops, order)):
        assert w.kind == "top"
        assert w.split == ("explain" if rank % 2 == 0 else "heldout")
        assert (w.doc_id, w.domain) == (seqs[s].doc_id, seqs[s].domain)
        assert w.tokens == tuple(tiny_model.tokenizer.decode([i]) for i in seqs[s].token_ids)
        assert len(w.activations) == len(w.tokens) == len(seqs[s].token_ids)
        assert list(w.activations) == pytest.approx(per_seq[s][:, unit].tolist(), abs=1e-4)


@pytest.mark.parametrize("unit", UNITS)
def test_random_windows_are_heldout_and_match_brute_force(collected, brute, unit):
    _, records = collected
    seqs, per_seq = brute
    expected = sorted(random.Random(CFG.seed).sample(range(len(seqs)), CFG.n_random))
    rand = [w for w in records[unit].windows if w.kind == "random"]
    assert [w.window_id for w in rand] == ["random-0", "random-1"]
    assert all(w.split == "heldout" for w in rand)
    for w, s in zip(rand, expected):
        assert w.doc_id == seqs[s].doc_id
        assert list(w.activations) == pytest.approx(per_seq[s][:, unit].tolist(), abs=1e-4)
    # windows are ordered: the 4 top windows, then the random ones
    assert [w.kind for w in records[unit].windows] == ["top"] * 4 + ["random"] * 2


@pytest.mark.parametrize("unit", UNITS)
def test_stats_match_brute_force(collected, brute, unit):
    _, records = collected
    _, per_seq = brute
    allacts = torch.cat([a[:, unit] for a in per_seq]).double()
    st = records[unit].stats
    assert st.n_tokens == allacts.numel()
    assert st.max == pytest.approx(float(allacts.max()), abs=1e-4)
    assert st.mean == pytest.approx(float(allacts.mean()), abs=1e-4)
    assert st.std == pytest.approx(float(allacts.std(unbiased=False)), abs=1e-4)
    assert st.density == pytest.approx(float((allacts > 0).double().mean()), abs=1e-4)
    assert 0 < st.density < 1


def test_stats_of_every_unit_match_brute_force(collected, brute):
    _, records = collected
    _, per_seq = brute
    allacts = torch.cat(per_seq).double()  # [tokens, units]
    got = torch.tensor([[r.stats.max, r.stats.mean, r.stats.density] for r in records], dtype=torch.float64)
    want = torch.stack([allacts.max(0).values, allacts.mean(0), (allacts > 0).double().mean(0)], dim=1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_records_round_trip_through_blob(collected):
    _, records = collected
    for rec in records[:10]:
        blob = rec.to_blob()
        assert isinstance(blob, bytes)
        back = UnitRecord.from_blob(blob)
        assert back == rec
        assert isinstance(back.windows, tuple) and isinstance(back.windows[0].tokens, tuple)


def test_collect_residual_hookpoint(tiny_model, brute):
    seqs, _ = brute
    hp = resolve_hookpoint(tiny_model.model, "layers.1")
    records = collect(tiny_model, hp, DOCS, CFG, progress=False)
    assert len(records) == 64
    tok = tiny_model.tokenizer
    rec = records[3]
    top0 = rec.windows[0]
    # brute force for this one unit
    best = max(
        float(capture(tiny_model.model, hp, torch.tensor([[tok.bos_token_id, *s.token_ids]]),
                      torch.ones((1, len(s.token_ids) + 1), dtype=torch.long))[0, 1:, 3].max())
        for s in seqs
    )
    assert top0.window_id == "top-0" and top0.max_activation == pytest.approx(best, abs=1e-4)
    assert rec.stats.max == pytest.approx(best, abs=1e-4)


def test_empty_corpus_raises(tiny_model):
    hp = resolve_hookpoint(tiny_model.model, "layers.1.mlp")
    with pytest.raises(CorpusError):
        collect(tiny_model, hp, [], CFG, progress=False)
    with pytest.raises(CorpusError):
        collect(tiny_model, hp, [Document("d:1", "docs", ""), Document("d:2", "docs", "Hi.")], CFG, progress=False)
