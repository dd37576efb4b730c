"""Directions: probe, steering or concept vectors whose projection is a unit's activation.

A directions file holds a matrix ``[n, d]`` of vectors in the space of one hookpoint:

- ``.safetensors``: the tensor ``directions`` (or the file's only tensor); the file's metadata
  may give ``names`` (a JSON list of n strings) and ``hookpoint`` (our name or a
  TransformerLens name);
- ``.npy``: the matrix; names from a sidecar ``<file>.names.json`` (a JSON list) when present.

Rows are normalised to unit length, so a unit's activation is the scalar projection
``x · v / |v|`` of the hooked activation ``x`` (raw units of the hookpoint). Zero, NaN or Inf
rows are rejected with :class:`~explainer.errors.SAEError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from explainer.collect.hooks import Hookpoint, from_transformer_lens
from explainer.collect.paths import missing_reason
from explainer.errors import HookpointError, SAEError


class Directions:
    """Unit vectors ``[n, d_in]``; ``encode`` maps ``[..., d_in]`` to projections ``[..., n]``."""

    def __init__(self, name: str, vectors: Any, names: list[str], hookpoint: str | None, fingerprint: str):
        self.name, self.names, self.hookpoint, self.fingerprint = name, names, hookpoint, fingerprint
        self.vectors = vectors
        """Float32 ``[n, d_in]``, each row of unit length."""
        self.d_in = int(vectors.shape[1])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[0])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hookpoint": self.hookpoint,
            "d_in": self.d_in,
            "n": self.width,
            "names": self.names,
            "fingerprint": self.fingerprint,
        }

    def to(self, device: Any) -> Directions:
        return Directions(self.name, self.vectors.to(device), self.names, self.hookpoint, self.fingerprint)

    def check_hookpoint(self, hp: Hookpoint) -> None:
        if hp.width != self.d_in:
            raise SAEError(
                f"directions {self.name!r} have dimension {self.d_in}, but hookpoint {hp.name} has width {hp.width}"
            )

    def encode(self, x: Any) -> Any:
        return x.to(self.vectors.dtype) @ self.vectors.T


def load_directions(path: str | Path, name: str | None = None) -> Directions:
    """Read a directions file (see the module docstring); checks before anything runs."""
    import numpy as np
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        if path.is_dir():
            raise SAEError(f"directions file {path} is a folder: give a .safetensors or .npy file")
        raise SAEError(f"directions file {path} {missing_reason(path)}")
    meta: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = list(f.keys())
                key = "directions" if "directions" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise SAEError(
                        f"{path}: expected a tensor 'directions' or a single tensor, found {', '.join(keys) or 'none'}"
                    )
                matrix = f.get_tensor(key).float()
        elif path.suffix == ".npy":
            matrix = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        else:
            raise SAEError(f"{path}: directions must be a .safetensors or .npy file")
    except SAEError:
        raise
    except Exception as exc:  # numpy and safetensors raise many types; translate at the boundary
        raise SAEError(f"{path}: cannot read directions: {exc}") from exc
    if matrix.ndim == 1:
        matrix = matrix.unsqueeze(0)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise SAEError(f"{path}: directions must be a matrix [n, d], got shape {list(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise SAEError(f"{path}: directions contain NaN or Inf values")
    norms = matrix.norm(dim=1)
    if bool((norms == 0).any()):
        raise SAEError(f"{path}: direction(s) {(norms == 0).nonzero().flatten().tolist()} have zero length")
    names = _names(path, meta, matrix.shape[0])
    hookpoint = meta.get("hookpoint")
    if hookpoint:
        try:
            hookpoint = from_transformer_lens(hookpoint)
        except HookpointError as exc:
            raise SAEError(f"{path}: {exc}") from exc
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Directions(name or path.stem, matrix / norms[:, None], names, hookpoint or None, digest)


def _names(path: Path, meta: dict[str, str], n: int) -> list[str]:
    raw: Any = None
    if "names" in meta:
        raw = meta["names"]
    else:
        sidecar = path.with_name(path.name + ".names.json")
        if sidecar.is_file():
            raw = sidecar.read_text(encoding="utf-8")
    if raw is None:
        return [f"direction-{i}" for i in range(n)]
    try:
        names = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SAEError(f"{path}: names are not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise SAEError(f"{path}: names are nested too deeply to be a list of names") from exc
    if not isinstance(names, list) or len(names) != n or not all(isinstance(s, str) for s in names):
        raise SAEError(f"{path}: names must be a JSON list of {n} strings")
    return names
