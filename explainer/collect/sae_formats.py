"""SAE files released outside SAELens and sparsify: Gemma Scope, Qwen-Scope and Goodfire.

This module reads the files and checks them; :mod:`explainer.collect.sae` owns the encoder. Each
reader returns the keyword arguments of :class:`~explainer.collect.sae.SparseAutoencoder`, with
the encoder's weights in its convention (``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``b_in``
[d_in] subtracted from the input). No SAE library is imported: ``.npz`` files are read by NumPy
with ``allow_pickle=False``, ``.pt``/``.pth`` files by ``torch.load(weights_only=True)`` only, and a
file holding anything but tensors is refused.

- **Gemma Scope** ``params.npz``: ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in], ``b_enc``,
  ``b_dec``, ``threshold``; JumpReLU ``f = pre · [pre > threshold]`` with ``pre = x @ W_enc + b_enc``
  (``b_dec`` is not subtracted). The hookpoint is given, or read from the path: ``layer_L`` and the
  site in the release's folder name (``gemma-scope-…-res`` → residual after block L, ``…-mlp`` →
  MLP output of block L).
- **Qwen-Scope** ``layer{n}.sae.pt``: ``W_enc`` [d_sae, d_in], ``W_dec`` [d_in, d_sae], ``b_enc``,
  ``b_dec``; top-k of ``x @ W_enc.T + b_enc`` (no ``b_dec`` subtracted), residual stream after
  block n. ``k`` is given, or read from the release's name (``…-L0_50``). The model card's demo
  keeps a selected pre-activation even when it is negative; here activations are ≥ 0, so such a
  feature reads 0, as in SAELens's ``qwen_scope`` loader (with 50 of 16× width selected, a rare case).
- **Goodfire** (``Llama-3.1-8B-Instruct-SAE-l19.pth``): ``encoder_linear.weight`` [d_sae, d_in],
  ``encoder_linear.bias``, ``decoder_linear.weight`` [d_in, d_sae], ``decoder_linear.bias``;
  ``relu(encoder_linear(x))``, residual stream after the block named by ``-lN`` in the file name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from explainer.collect.hooks import from_transformer_lens
from explainer.errors import HookpointError, SAEError

GEMMA_FILE = "params.npz"
QWEN_SUFFIX = ".sae.pt"

__all__ = ["GEMMA_FILE", "QWEN_SUFFIX", "detect", "read_sae_file"]


def detect(path: Path) -> str | None:
    """Which of these formats ``path`` (a file, or a folder holding one such file) is in, or ``None``."""
    if path.is_dir():
        if (path / GEMMA_FILE).is_file():
            return "gemma-scope"
        return "qwen-scope" if any(path.glob(f"layer*{QWEN_SUFFIX}")) else None
    name = path.name
    if name.endswith(".npz"):
        return "gemma-scope"
    if name.endswith(QWEN_SUFFIX):
        return "qwen-scope"
    if name.endswith((".pt", ".pth")):
        return "torch-state-dict"
    return None


def read_sae_file(path: Path, hookpoint: str | None = None, k: int | None = None) -> dict[str, Any]:
    """The encoder of the Gemma Scope, Qwen-Scope or Goodfire SAE at ``path`` as the keyword
    arguments of ``SparseAutoencoder`` (``name``: a default label from the release's path). Raises
    :class:`SAEError` with the reason."""
    fmt = detect(path)
    if fmt == "gemma-scope":
        return _gemma(path / GEMMA_FILE if path.is_dir() else path, hookpoint)
    if fmt == "qwen-scope":
        return _qwen(_pick_qwen_layer(path, hookpoint) if path.is_dir() else path, hookpoint, k)
    if fmt == "torch-state-dict":
        tensors = _load_pt(path)
        if "encoder_linear.weight" in tensors:
            return _goodfire(path, tensors, hookpoint)
        if {"W_enc", "b_enc"} <= set(tensors):
            return _qwen(path, hookpoint, k, tensors)
        raise SAEError(
            f"{path}: a state dict with neither encoder_linear.* (Goodfire) nor W_enc/b_enc (Qwen-Scope); "
            f"it has {', '.join(sorted(tensors)) or 'nothing'}"
        )
    raise SAEError(f"{path}: not a Gemma Scope (.npz), Qwen-Scope (layer{{n}}.sae.pt) or Goodfire (.pth) file")


# -- reading files ------------------------------------------------------------------------------


def _check_tensors(path: Path, tensors: dict[str, Any]) -> dict[str, Any]:
    import torch

    out = {}
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise SAEError(f"{path}: entry {key!r} is a {type(t).__name__}, not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SAEError(f"{path}: weight {key!r} contains NaN or Inf values")
        out[key] = t.float()
    return out


def _load_pt(path: Path) -> dict[str, Any]:
    """A ``.pt``/``.pth`` state dict, loaded with ``weights_only=True`` (no arbitrary objects)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle of objects weights_only refuses, not a torch file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SAEError(f"{path}: cannot read the weights with torch.load(weights_only=True): {reason}") from exc
    if not isinstance(obj, dict):
        raise SAEError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    return _check_tensors(path, obj)


def _load_npz(path: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        with np.load(str(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # BadZipFile, EOFError, ValueError (pickled objects refused)
        raise SAEError(f"{path}: cannot read the weights: {exc}") from exc
    tensors = {}
    for key, a in arrays.items():
        if a.dtype.kind not in "fiu":
            raise SAEError(f"{path}: entry {key!r} has dtype {a.dtype}, not numbers")
        tensors["W_" + key[2:] if key.startswith("w_") else key] = torch.from_numpy(np.ascontiguousarray(a))
    return _check_tensors(path, tensors)


# -- checks shared with the SAELens and sparsify readers of explainer.collect.sae -----------------


def need_weights(weights: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """SAEError naming the weights of ``keys`` that ``weights`` (read from ``path``) lacks, if any."""
    missing = [k for k in keys if k not in weights]
    if missing:
        raise SAEError(
            f"{path}: missing weight(s) {', '.join(missing)}; the file has {', '.join(sorted(weights)) or 'none'}"
        )


def check_shape(t: Any, shape: tuple[int, ...], what: str, path: Path) -> None:
    """SAEError unless the tensor ``t`` (``what``, read from ``path``) has ``shape``."""
    if tuple(t.shape) != shape:
        raise SAEError(f"{path}: {what} has shape {list(t.shape)}, expected {list(shape)}")


def fingerprint(*files: Path) -> str:
    """The first 16 hex digits of the sha256 of ``files``' bytes, one after the other."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


# -- hookpoints from names ----------------------------------------------------------------------


def _hookpoint(path: Path, given: str | None, found: str | None, how: str) -> tuple[str, str]:
    """(hook name, our hookpoint) from the ``given`` one or the one ``found`` in the path; both
    present and different is an error naming both."""
    try:
        ours_found = from_transformer_lens(found) if found else None
        ours_given = from_transformer_lens(given) if given else None
    except HookpointError as exc:
        raise SAEError(f"{path}: {exc}") from exc
    if ours_given and ours_found and ours_given != ours_found:
        raise SAEError(f"{path}: the path says {found} ({ours_found}), but hookpoint {given!r} was given")
    if ours_given and given:
        return given, ours_given
    if ours_found and found:
        return found, ours_found
    raise SAEError(f"{path}: no hookpoint given and none in the path ({how}); pass the hookpoint")


def _gemma_hook(path: Path) -> str | None:
    parts = [p.name for p in path.resolve().parents]  # nearest first
    layer = next((int(m.group(1)) for p in parts if (m := re.fullmatch(r"layer_(\d+)", p))), None)
    releases = [
        p for p in parts if "gemma-scope" in p.lower() or "gemmascope" in p.lower()
    ]  # e.g. gemma-scope-2b-pt-res
    site = next((m.group(1) for p in releases if (m := re.search(r"-(res|mlp|att)(?:$|[-_])", p))), None)
    if layer is None or site is None:
        return None
    if site == "att":
        raise SAEError(f"{path}: attention (per-head hook_z) Gemma Scope SAEs are not supported")
    return f"blocks.{layer}.hook_resid_post" if site == "res" else f"blocks.{layer}.hook_mlp_out"


# -- the three formats --------------------------------------------------------------------------


def _gemma(path: Path, hookpoint: str | None) -> dict[str, Any]:
    import torch

    w = _load_npz(path)
    need_weights(w, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"), path)
    if w["W_enc"].ndim != 2:
        raise SAEError(f"{path}: W_enc has shape {list(w['W_enc'].shape)}, expected [d_in, d_sae]")
    d_in, d_sae = (int(n) for n in w["W_enc"].shape)
    check_shape(w["W_dec"], (d_sae, d_in), "W_dec", path)
    for key in ("b_enc", "threshold"):
        check_shape(w[key], (d_sae,), key, path)
    check_shape(w["b_dec"], (d_in,), "b_dec", path)
    hook_name, ours = _hookpoint(path, hookpoint, _gemma_hook(path), "layer_L under a …-res or …-mlp release")
    parts = [p.name for p in path.resolve().parents][:2][::-1]  # e.g. width_16k/average_l0_82
    name = "-".join(p for p in parts if re.fullmatch(r"width_\w+|average_l0_\d+", p)) or path.stem
    return dict(
        name=f"gemma-scope-{name}",
        source="gemma-scope",
        architecture="jumprelu",
        activation="jumprelu",
        hook_name=hook_name,
        hookpoint=ours,
        weights={"W_enc": w["W_enc"], "b_enc": w["b_enc"], "b_in": torch.zeros(d_in), "threshold": w["threshold"]},
        fingerprint=fingerprint(path),
    )


def _pick_qwen_layer(folder: Path, hookpoint: str | None) -> Path:
    files = sorted(folder.glob(f"layer*{QWEN_SUFFIX}"), key=lambda p: p.name)
    if len(files) == 1:
        return files[0]
    if hookpoint:
        try:
            ours = from_transformer_lens(hookpoint)
        except HookpointError as exc:
            raise SAEError(f"{folder}: {exc}") from exc
        m = re.fullmatch(r"layers\.(\d+)", ours)
        if m and (folder / f"layer{m.group(1)}{QWEN_SUFFIX}").is_file():
            return folder / f"layer{m.group(1)}{QWEN_SUFFIX}"
    raise SAEError(
        f"{folder} holds {len(files)} Qwen-Scope layers ({files[0].name} … {files[-1].name}); choose one with "
        f"the hookpoint layers.N (given: {hookpoint!r}) or give its file"
    )


def _qwen(path: Path, hookpoint: str | None, k: int | None, tensors: dict[str, Any] | None = None) -> dict[str, Any]:
    w = _load_pt(path) if tensors is None else tensors
    need_weights(w, ("W_enc", "W_dec", "b_enc", "b_dec"), path)
    if w["W_enc"].ndim != 2:
        raise SAEError(f"{path}: W_enc has shape {list(w['W_enc'].shape)}, expected [d_sae, d_in]")
    d_sae, d_in = (int(n) for n in w["W_enc"].shape)
    check_shape(w["W_dec"], (d_in, d_sae), "W_dec", path)
    check_shape(w["b_enc"], (d_sae,), "b_enc", path)
    check_shape(w["b_dec"], (d_in,), "b_dec", path)
    m = re.fullmatch(r"layer(\d+)\.sae\.pt", path.name)
    found = f"blocks.{m.group(1)}.hook_resid_post" if m else None
    hook_name, ours = _hookpoint(path, hookpoint, found, "layer{n}.sae.pt")
    if k is None:
        names = [p.name for p in path.resolve().parents]
        k = next((int(m.group(1)) for n in names if (m := re.search(r"L0_(\d+)", n))), None)
    if k is None or not 0 < k <= d_sae:
        raise SAEError(
            f"{path}: a Qwen-Scope SAE needs 0 < k <= d_sae={d_sae}, got k={k!r}; keep it under its release's "
            "folder (…-L0_50) or pass k"
        )
    import torch

    release = next((p.name for p in path.resolve().parents if "L0_" in p.name), None)
    return dict(
        name=release or path.name.removesuffix(QWEN_SUFFIX),
        source="qwen-scope",
        architecture="topk",
        activation="topk",
        hook_name=hook_name,
        hookpoint=ours,
        weights={"W_enc": w["W_enc"].T.contiguous(), "b_enc": w["b_enc"], "b_in": torch.zeros(d_in)},
        k=k,
        fingerprint=fingerprint(path),
    )


def _goodfire(path: Path, w: dict[str, Any], hookpoint: str | None) -> dict[str, Any]:
    import torch

    need_weights(
        w, ("encoder_linear.weight", "encoder_linear.bias", "decoder_linear.weight", "decoder_linear.bias"), path
    )
    enc = w["encoder_linear.weight"]
    if enc.ndim != 2:
        raise SAEError(f"{path}: encoder_linear.weight has shape {list(enc.shape)}, expected [d_sae, d_in]")
    d_sae, d_in = (int(n) for n in enc.shape)
    check_shape(w["encoder_linear.bias"], (d_sae,), "encoder_linear.bias", path)
    check_shape(w["decoder_linear.weight"], (d_in, d_sae), "decoder_linear.weight", path)
    check_shape(w["decoder_linear.bias"], (d_in,), "decoder_linear.bias", path)
    m = re.search(r"-l(\d+)\.pth?$", path.name)
    found = f"blocks.{m.group(1)}.hook_resid_post" if m else None
    hook_name, ours = _hookpoint(path, hookpoint, found, "…-lN.pth")
    return dict(
        name=path.stem,
        source="goodfire",
        architecture="standard",
        activation="relu",
        hook_name=hook_name,
        hookpoint=ours,
        weights={"W_enc": enc.T.contiguous(), "b_enc": w["encoder_linear.bias"], "b_in": torch.zeros(d_in)},
        fingerprint=fingerprint(path),
    )
