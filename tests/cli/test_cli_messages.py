"""Errors that name what is wrong: the flag out of range, a symlink loop, a parent folder holding
one SAE (loaded, not refused), --layer and --hookpoint that disagree, and run ids given as the
short prefixes the CLI prints, wherever a run id is taken."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bench.synthetic import store_synthetic_collection
from explainer.api.app import ApiConfig, create_app
from explainer.collect.sae import load_sae
from explainer.errors import SAEError
from explainer.llm.chat import LLMConfig
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store
from workers.batch import open_run
from workers.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err.strip()


@pytest.mark.parametrize(
    "args, named",
    [
        (["--window", "2"], "--window must be >= 4 (got 2)"),
        (["--top-k", "1"], "--top-k must be >= 2 (got 1)"),
        (["--max-tokens", "0"], "--max-tokens must be > 0 (got 0)"),
        (["--context", "8", "--window", "16"], "--context must be >= --window (16) (got 8)"),
        (["--random", "-1"], "--random must be >= 0 (got -1)"),
    ],
)
def test_the_wrong_flag_is_named(settings, capsys, args, named):
    code, _, err = run(capsys, "collect", "--model", "/nonexistent", *args)
    assert code == 2 and named in err
    others = {"--window", "--top-k", "--max-tokens", "--context", "--random"} - {named.split()[0]}
    assert not any(f"{flag} must" in err for flag in others), err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["cases", "make", "--out", "c.jsonl", "--temperature", "nan"], "--temperature"),
        (["cases", "make", "--out", "c.jsonl", "--temperature", "-1"], "--temperature"),
        (["cases", "make", "--out", "c.jsonl", "--temperature", "0"], "--temperature"),
        (["cases", "make", "--out", "c.jsonl", "--temperature", "inf"], "--temperature"),
        (["cases", "make", "--out", "c.jsonl", "--per-domain", "1000000000"], "--per-domain"),
        (["cases", "make", "--out", "c.jsonl", "--samples", "1000000"], "--samples"),
        (["cases", "check", "--min-per-class", "-5"], "--min-per-class"),
        (["cases", "check", "--min-per-class", "0"], "--min-per-class"),
        (["directions", "make", "--layer", "1", "-o", "d.safetensors", "--min-per-class", "0"], "--min-per-class"),
        (["audit", "--layer", "1", "--out", "a", "--min-per-class", "-1"], "--min-per-class"),
    ],
)
def test_nested_commands_refuse_numbers_out_of_range(settings, tmp_path, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(tmp_path)
    model = [] if argv[:2] == ["cases", "check"] else ["--model", "/nonexistent"]
    try:
        code, _, err = run(capsys, *argv, *model)
    except SystemExit as exc:  # argparse's refusal
        code, err = exc.code, capsys.readouterr().err.strip()
    assert code == 2 and named in err.splitlines()[-1] and "unexpected" not in err, err
    assert not (tmp_path / "c.jsonl").exists()


def test_layer_and_hookpoint_that_disagree_are_refused(settings, tiny_model_dir, capsys):
    code, _, err = run(capsys, "collect", "--model", tiny_model_dir, "--layer", 3, "--hookpoint", "layers.4")
    assert code == 2 and "--layer 3 (layers.3.mlp) and --hookpoint layers.4 name different hookpoints" in err


def test_symlink_loops_are_named(settings, tiny_model_dir, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, _, err = run(capsys, "collect", "--model", tiny_model_dir, "--corpus", loop)
    assert code == 2 and "is a symlink loop" in err
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("some text " * 50)
    (folder / "again").symlink_to(folder / "again")
    code, _, err = run(capsys, "collect", "--model", tiny_model_dir, "--corpus", folder)
    assert code == 2 and "symlink loop at again" in err
    with pytest.raises(SAEError, match="is a symlink loop"):
        load_sae(loop)
    with pytest.raises(SAEError, match="symlink loop at again"):
        load_sae(folder)
    code, _, err = run(capsys, "collect", "--model", tiny_model_dir, "--directions", loop)
    assert code == 2 and "is a symlink loop" in err


def test_a_parent_folder_holding_one_sae_loads_it(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    coder = sparsify.SparseCoder(64, sparsify.SparseCoderConfig(num_latents=128, k=8))
    coder.save_to_disk(tmp_path / "layers.1")
    sae = load_sae(tmp_path)
    assert (sae.hookpoint, sae.d_sae) == ("layers.1", 128)
    with pytest.raises(SAEError, match="not the requested hookpoint 'layers.2'"):
        load_sae(tmp_path, hookpoint="layers.2")


def test_run_id_prefixes_work_for_reports(settings, tmp_path, capsys):
    store = get_store(settings)
    units = store_synthetic_collection(store, 3)
    opts = LabelOptions(explainer=LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"))
    run_id = open_run(settings, "synthetic", units, opts)
    out = tmp_path / "r.json"
    code, printed, err = run(capsys, "report", "--run", run_id[:8], "-o", out, "--json")
    assert code == 0, err
    import json

    report = json.loads(out.read_text())
    assert report["selection"]["run"] == run_id and report["selection"]["run_kind"] == "run"
    code, _, err = run(capsys, "report", "--run", "zzzz", "-o", out)
    assert code == 2 and "unknown run or collection id 'zzzz'" in err

    keys = ApiConfig(read_keys=("k",), write_keys=())
    with TestClient(create_app(settings, keys)) as client:
        resp = client.get(f"/api/v1/reports/runs/{run_id[:8]}?format=json", headers={"X-API-Key": "k"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["selection"]["run"] == run_id
        assert client.get("/api/v1/reports/runs/ffffffffff", headers={"X-API-Key": "k"}).status_code == 404
