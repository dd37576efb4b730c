"""Many hookpoints per pass: one forward pass per batch, stopped at the deepest hookpoint, gives
each hookpoint the records of its own separate collection."""

from __future__ import annotations

import json

import pytest
from builders.collect import DOCS

from explainer.collect.collector import CollectConfig, collect, make_sequences
from explainer.collect.hooks import resolve_hookpoint
from explainer.collect.multi import MultiCollector, parse_layers
from explainer.errors import InputError

CFG = CollectConfig(window=8, context=16, top_k=4, n_random=2, max_tokens=400, batch_size=4, n_quantiles=4)


def test_parse_layers():
    assert parse_layers("0-3") == [0, 1, 2, 3]
    assert parse_layers("5, 0-1,1") == [0, 1, 5]
    for bad in ("3-1", "a-b", "", "-2"):
        with pytest.raises(InputError, match="--layers takes"):
            parse_layers(bad)
    with pytest.raises(InputError, match="layers 0-3"):
        parse_layers("2-4", n_layers=4)


def test_one_pass_gives_each_hookpoint_its_separate_collection(tiny_model):
    names = ["layers.0.mlp", "layers.2", "layers.1.mlp", "layers.2.mlp"]
    hps = [resolve_hookpoint(tiny_model.model, n) for n in names]
    seqs = make_sequences(DOCS, tiny_model.tokenizer, CFG)
    multi = MultiCollector.build(tiny_model, hps, seqs, CFG)
    blocks = tiny_model.model.model.layers
    calls = {i: 0 for i in range(4)}
    handles = [
        blocks[i].register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)) for i in range(4)
    ]
    try:
        multi.run()
    finally:
        for h in handles:
            h.remove()
    assert calls == {0: multi.n_batches, 1: multi.n_batches, 2: multi.n_batches, 3: 0}  # stopped after block 2
    for name, hp in zip(names, hps):
        assert multi.collectors[name].records() == collect(tiny_model, hp, DOCS, CFG, progress=False), name
    with pytest.raises(InputError, match="distinct hookpoints"):
        MultiCollector.build(tiny_model, [hps[0], hps[0]], seqs, CFG)


def test_cli_collects_layers_in_one_pass_with_the_ids_of_single_collections(tiny_model_dir, settings, tmp_path, capsys):
    from workers.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(d.text for d in DOCS))
    argv = ["collect", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--max-tokens", "300"]
    argv += ["--window", "8", "--context", "16", "--json"]
    assert main([*argv, "--layers", "0-2", "--hookpoint", "layers.3"]) == 0
    many = json.loads(capsys.readouterr().out)["collections"]
    assert [c["hookpoint"] for c in many] == ["layers.3", "layers.0.mlp", "layers.1.mlp", "layers.2.mlp"]
    assert all(c["n_units"] == (64 if c["hookpoint"] == "layers.3" else 128) and c["n_tokens"] > 0 for c in many)
    assert main([*argv, "--layer", "1"]) == 0  # a single collection of one of them is the same (reused) one
    assert json.loads(capsys.readouterr().out) == many[2]
    assert main([*argv, "--layers", "2-5"]) == 2
    assert "unknown hookpoint 'layers.4.mlp'" in capsys.readouterr().err
    from explainer.runtime import get_store

    assert {c["status"] for c in get_store(settings).collection_summaries()} == {"done"}  # none left running
    assert main(["label", *argv[1:-1], "--layers", "0-1"]) == 2
    assert "`label` takes one hookpoint" in capsys.readouterr().err
