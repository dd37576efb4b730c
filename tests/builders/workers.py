"""Environments for Celery worker processes that tests start over the local Redis."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def worker_env(data_dir: Path | str, broker_db: int, backend_db: int, **extra: str) -> dict[str, str]:
    """This process's environment without its ``EXPLAINER_*`` settings, pointed at ``data_dir`` and at
    two Redis databases of the local server (emptied first), with the repository importable; ``extra``
    adds or replaces variables."""
    import redis

    broker, backend = f"redis://127.0.0.1:6379/{broker_db}", f"redis://127.0.0.1:6379/{backend_db}"
    for url in (broker, backend):
        redis.Redis.from_url(url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINER_")}
    env.update(
        EXPLAINER_DATA_DIR=str(data_dir),
        EXPLAINER_BROKER_URL=broker,
        EXPLAINER_RESULT_BACKEND=backend,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **extra,
    )
    return env
