"""Who may call the HTTP API: read and write keys (``EXPLAINER_API_READ_KEYS``, ``EXPLAINER_API_WRITE_KEYS``),
compared in constant time, never logged; a FastAPI dependency per kind of route."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException

from explainer.api.errors import reject_unknown_params

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class ApiConfig:
    """API keys; never logged or serialised."""

    read_keys: tuple[str, ...] = ()
    write_keys: tuple[str, ...] = ()
    """Write keys may also read."""

    def __repr__(self) -> str:
        return f"ApiConfig(read_keys=<{len(self.read_keys)}>, write_keys=<{len(self.write_keys)}>)"

    @property
    def configured(self) -> bool:
        return bool(self.read_keys or self.write_keys)


def load_api_config(env: dict[str, str] | None = None) -> ApiConfig:
    """Keys from ``EXPLAINER_API_READ_KEYS`` and ``EXPLAINER_API_WRITE_KEYS`` (comma-separated)."""
    env = dict(os.environ if env is None else env)

    def keys(name: str) -> tuple[str, ...]:
        return tuple(k.strip() for k in env.get(name, "").split(",") if k.strip())

    return ApiConfig(read_keys=keys("EXPLAINER_API_READ_KEYS"), write_keys=keys("EXPLAINER_API_WRITE_KEYS"))


def key_dependencies(config: ApiConfig) -> tuple[Any, Any]:
    """FastAPI dependencies that admit read keys (and write keys), and write keys only."""
    header = APIKeyHeader(
        name=API_KEY_HEADER,
        auto_error=False,
        description="a read key (EXPLAINER_API_READ_KEYS) or write key (EXPLAINER_API_WRITE_KEYS)",
    )

    def known(key: str | None, keys: tuple[str, ...]) -> bool:
        return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)

    def unauthorized(message: str) -> HTTPException:
        return HTTPException(401, message, headers={"WWW-Authenticate": API_KEY_HEADER})

    def check_key(key: str | None, write: bool) -> None:
        if not config.configured:
            raise unauthorized("this server has no API keys configured, so it serves no data")
        if not key:
            raise unauthorized(f"missing API key (header {API_KEY_HEADER})")
        if not (known(key, config.read_keys) or known(key, config.write_keys)):
            raise unauthorized("unknown API key")
        if write and not known(key, config.write_keys):
            raise HTTPException(403, "this route needs a write key")

    def read(request: Request, key: str | None = Security(header)) -> None:
        check_key(key, write=False)
        reject_unknown_params(request)

    def write(request: Request, key: str | None = Security(header)) -> None:
        check_key(key, write=True)
        reject_unknown_params(request)

    return read, write
