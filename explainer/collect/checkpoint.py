"""Collection checkpoints: the streaming state saved every few batches, so that a collection
killed part-way resumes from its last checkpoint with the same result as an uninterrupted run.

A checkpoint is one file written atomically (temporary file + rename) holding the tensors of
the accumulators (moved to CPU), the index of the next batch, and a key that names what was
being collected (model, hookpoint, units, corpus sequences, config). A checkpoint whose key does
not match is ignored and later overwritten, never loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1


def save_checkpoint(path: str | Path, key: str, next_batch: int, state: dict[str, Any]) -> None:
    """Write ``state`` (name → tensor) and the next batch index to ``path`` atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {
        "format": FORMAT,
        "key": key,
        "next_batch": next_batch,
        "state": {name: t.detach().cpu() for name, t in state.items()},
    }
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path | None, key: str) -> tuple[int, dict[str, Any]] | None:
    """``(next_batch, state)`` from ``path`` when it exists and was written for ``key``, else ``None``."""
    import torch

    if path is None or not Path(path).is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: start over rather than fail
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != key:
        log.warning("ignoring checkpoint %s: it was written for a different collection", path)
        return None
    return int(payload["next_batch"]), payload["state"]


def remove_checkpoint(path: str | Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)
