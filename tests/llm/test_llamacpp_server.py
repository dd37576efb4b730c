"""Optional: the OpenAI-compatible paths against a real llama-cpp-python server running the
packaged SmolLM2-135M-Instruct GGUF (the same weights the embedded default runs in-process).

Runs when ``EXPLAINER_TEST_LLAMA_CPP_PYTHON`` names a Python interpreter that has
``llama-cpp-python[server]`` installed (it builds llama.cpp from source: a few minutes, e.g. in
its own venv: ``python -m venv /tmp/llc && /tmp/llc/bin/pip install 'llama-cpp-python[server]'``);
skipped otherwise. The other endpoint tests use a fake server with canned logprobs.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    python = os.environ.get("EXPLAINER_TEST_LLAMA_CPP_PYTHON")
    if not python:
        pytest.skip("set EXPLAINER_TEST_LLAMA_CPP_PYTHON to a Python with llama-cpp-python[server] to run")
    import httpx

    from explainer.collect.models import resolve_model

    source = resolve_model("smollm2-135m")
    gguf = Path(source.directory) / source.gguf_file
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--logits_all",
                "true",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("llama_cpp.server did not start: " + log.read_text(errors="replace")[-2000:])
        time.sleep(0.5)
    yield base
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def digits_unit():
    from explainer.collect.corpus import default_corpus
    from explainer.collect.models import load_model
    from explainer.collect.planted import load_concepts, planted_record, tokenize_windows

    concept = next(c for c in load_concepts() if c.name == "digits")
    windows = tokenize_windows(default_corpus(), load_model("smollm2-135m").tokenizer, 24, 600)
    return concept, planted_record(concept, windows, model="smollm2-135m")


def test_echoed_prompt_logprobs_from_a_real_server(llama_server, digits_unit):
    """Auto-detection picks completions with echo; every position after a TAB has digits among
    the top logprobs, and the expected values vary with the token."""
    from explainer.llm.transport import openai_client
    from explainer.score.endpoint import RemoteSimulator, reset_detection

    concept, record = digits_unit
    held = record.windows_for("heldout")[:4]
    reset_detection()
    sim = RemoteSimulator(openai_client(llama_server, None, 120), llama_server, "smollm2-135m", "auto")
    pred, details = sim.simulate_detailed(concept.description, held)
    assert details["method"] == "completions-echo" and details["fidelity"] == "logprobs"
    assert [len(p) for p in pred] == [len(w.tokens) for w in held]
    assert details["missing_positions"] <= sum(len(w.tokens) for w in held) // 4
    flat = [x for p in pred for x in p]
    assert all(0.0 <= x <= 10.0 for x in flat) and len({round(x, 3) for x in flat}) > 10


def test_explain_and_score_a_unit_through_a_real_server(llama_server, digits_unit, settings, monkeypatch):
    """The pipeline's explain stage over the endpoint chat client and the simulation-endpoint scorer, both on the
    server: the row is an explanation with a score whose details say how it was read, or a failure
    with its reason and the raw answers — never garbage stored as an explanation."""
    from explainer.llm.chat import LLMConfig
    from explainer.pipeline import stages as pipeline
    from explainer.runtime import get_store
    from explainer.score.endpoint import reset_detection
    from explainer.settings import load_settings

    monkeypatch.setenv("EXPLAINER_SIMULATOR_BASE_URL", llama_server)
    monkeypatch.setenv("EXPLAINER_SIMULATOR_MODEL", "smollm2-135m")
    settings = load_settings()
    _, record = digits_unit
    store = get_store(settings)
    store.start_collection("c1", "smollm2-135m", record.hookpoint, "default", "0" * 64, {"window": 24})
    store.finish_collection("c1", [record], 1000)
    reset_detection()
    opts = pipeline.LabelOptions(
        explainer=LLMConfig(model="smollm2-135m", base_url=llama_server, timeout_s=120),
        scorers=("simulation-endpoint",),
        baseline_candidate=False,
    )
    row = store.get_explanation(pipeline.explain_stage(settings, "c1", record.unit_id, opts))
    print(f"explain: {row.status} {row.text or row.error!r}")
    if row.status == "failed":
        assert row.text is None and row.error
        assert row.settings["candidates"][0].get("raw"), "a rejected answer keeps its raw text"
        return
    assert row.text.strip() and row.prompt_tokens > 0 and row.completion_tokens > 0
    pipeline.score_stage(settings, row.id, opts)
    score = store.get_score(row.id, "simulation-endpoint")
    assert score.status == "ok", score.error
    print(f"score: {score.value:+.3f} [{score.ci_low:+.2f}, {score.ci_high:+.2f}] {score.simulator_model}")
    assert -1.0 <= score.value <= 1.0 and score.ci_low <= score.value <= score.ci_high
    assert score.details["method"] == "completions-echo" and score.simulator_model.endswith("[completions-echo]")
    assert list(score.heldout_ids) == [w.window_id for w in record.windows_for("heldout")]
