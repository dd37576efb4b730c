"""Shared fixtures: a tiny random LLaMA with the real SmolLM2 tokenizer, and isolated settings."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    import random

    import torch

    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The SmolLM2 tokenizer read from the packaged GGUF (no weights loaded)."""
    from transformers import AutoTokenizer

    from explainer.collect.models import resolve_model

    src = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_model(smol_tokenizer):
    """A randomly initialised 4-layer LLaMA (hidden 64, MLP 128) as a LoadedModel."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from explainer.collect.models import LoadedModel

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(cfg).eval()
    return LoadedModel("tiny-llama", model, smol_tokenizer, "cpu")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings for an isolated embedded deployment under tmp_path."""
    from explainer.settings import load_settings

    for key in list(os.environ):
        if key.startswith("EXPLAINER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EXPLAINER_DATA_DIR", str(tmp_path / "data"))
    return load_settings()


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    """A model cache directory of this test's own (dequantised GGUF copies, file hashes), for the
    library functions it calls and for the CLI commands it runs."""
    from explainer import runtime

    cache = tmp_path / "cache"
    monkeypatch.setenv("EXPLAINER_MODEL_CACHE", str(cache))
    monkeypatch.setattr(runtime, "_model_cache", [cache])
    return cache


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def redis_url():
    if not _port_open(6379):
        pytest.fail("Redis is not running on 127.0.0.1:6379 (this machine kind starts it; see the README)")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for this test (created in the machine's server, dropped after), so
    tests never see each other's tables, nor tables an older or newer schema left behind."""
    import uuid

    import psycopg

    if not _port_open(5432):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (this machine kind starts it; see the README)")
    name = f"explainer_test_{uuid.uuid4().hex[:12]}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tmp_path_factory):
    """The tiny model saved as a Hugging Face directory, loadable by path (``--model DIR``)."""
    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model.model.save_pretrained(d)
    tiny_model.tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def searchable(settings):
    """Settings of an isolated deployment holding ``builders.search.UNITS``, indexed."""
    from builders.search import write_units

    write_units(settings)
    return settings


@pytest.fixture
def server():
    """The fake OpenAI-compatible server (``bench/fake_openai.py``) over real HTTP, answering every
    request (not scripted): what the labeling tests point their explainer at."""
    from bench.fake_openai import FakeOpenAI, ServerThread

    with ServerThread(FakeOpenAI(latency=0.0), free_port()) as srv:
        yield srv


@pytest.fixture
def fake_openai():
    """The fake OpenAI-compatible server (``bench/fake_openai.py``) over real HTTP, scripted: set
    ``.script`` to the answers; a request with nothing scripted gets HTTP 418. ``.requests`` and
    ``.paths`` hold what it was sent; ``.base_url`` is its ``/v1`` URL."""
    from bench.fake_openai import FakeOpenAI, ServerThread

    with ServerThread(FakeOpenAI(latency=0.0, strict=True)) as srv:
        yield srv.app


@pytest.fixture
def fake_endpoint():
    """``make(**switches)``: a fake OpenAI-compatible server answering with its canned model
    (completions with echo and logprobs, chat with top_logprobs; see ``bench/fake_openai.py``)."""
    from bench.fake_openai import FakeOpenAI, ServerThread

    servers: list[ServerThread] = []

    def make(**switches):
        servers.append(ServerThread(FakeOpenAI(latency=0.0, **switches)).__enter__())
        return servers[-1].app

    yield make
    for srv in servers:
        srv.__exit__(None, None, None)
