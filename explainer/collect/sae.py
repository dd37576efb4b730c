"""Sparse autoencoders and transcoders read from the files SAELens and sparsify write (and,
through :mod:`explainer.collect.sae_formats`, Gemma Scope, Qwen-Scope and Goodfire files).

Only the encoder is needed to turn a hookpoint's activations into feature activations, and
neither library is imported at run time: the files are read with ``safetensors``.

- **SAELens** (a folder with ``cfg.json`` + ``sae_weights.safetensors``): ``W_enc`` [d_in, d_sae],
  ``b_enc`` [d_sae], ``b_dec`` [d_in] (subtracted from the input when ``apply_b_dec_to_input``),
  ``threshold`` (jumprelu) or ``log_threshold`` (older jumprelu files), ``b_gate``/``r_mag``/``b_mag``
  (gated). Architectures: ``standard``, ``topk``, ``jumprelu`` (BatchTopK SAEs are saved as
  jumprelu), ``gated``, and the ``transcoder``/``skip_transcoder``/``jumprelu_transcoder`` encoders.
  The hook comes from ``metadata.hook_name`` (6.x) or the flat ``hook_name``/``hook_point`` (pre-6.0).
- **sparsify** (one folder per hookpoint with ``cfg.json`` + ``sae.safetensors``):
  ``encoder.weight`` [N, d_in], ``encoder.bias`` [N], ``b_dec`` [d_in], always subtracted from the
  input unless the coder is a transcoder; activation ``topk`` (ReLU then top-k) or ``groupmax``.
  The hookpoint is the folder's name.

:func:`load_sae` checks everything it can before any activation is computed and raises
:class:`~explainer.errors.SAEError` with the reason. Encodings are the libraries' own to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from explainer.collect import sae_formats
from explainer.collect.hooks import Hookpoint, from_sparsify, from_transformer_lens
from explainer.collect.paths import is_symlink_loop, loops_under
from explainer.collect.sae_formats import check_shape, fingerprint, need_weights
from explainer.errors import HookpointError, SAEError

SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
CFG = "cfg.json"

_SAELENS_ARCH = {  # architecture in cfg.json → how we encode
    "standard": "relu",
    "transcoder": "relu",
    "skip_transcoder": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "jumprelu_transcoder": "jumprelu",
    "gated": "gated",
}
_NORMALIZE_OK = ("none", "constant_norm_rescale", "layer_norm")


class SparseAutoencoder:
    """The encoder of one SAE or transcoder. ``encode`` maps hookpoint activations
    ``[..., d_in]`` (raw units) to dense feature activations ``[..., d_sae]`` (≥ 0)."""

    def __init__(
        self,
        *,
        name: str,
        source: str,
        architecture: str,
        activation: str,
        hook_name: str,
        hookpoint: str,
        weights: dict[str, Any],
        k: int | None = None,
        normalize: str = "none",
        rescale_by_decoder_norm: bool = False,
        fingerprint: str = "",
    ):
        self.name, self.source, self.architecture, self.activation = name, source, architecture, activation
        self.hook_name, self.hookpoint, self.k, self.normalize = hook_name, hookpoint, k, normalize
        self.rescale_by_decoder_norm, self.fingerprint = rescale_by_decoder_norm, fingerprint
        self.weights = weights
        """``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``b_in`` [d_in] (subtracted from the input),
        and per activation ``threshold``, ``W_mag``/``b_mag``/``b_gate`` or ``dec_norm``."""
        self.d_in, self.d_sae = (int(n) for n in weights["W_enc"].shape)

    @property
    def width(self) -> int:
        """Number of features (units)."""
        return self.d_sae

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "architecture": self.architecture,
            "hook_name": self.hook_name,
            "hookpoint": self.hookpoint,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
            "fingerprint": self.fingerprint,
        }

    def to(self, device: Any) -> SparseAutoencoder:
        moved = {k: v.to(device) for k, v in self.weights.items()}
        return SparseAutoencoder(
            name=self.name,
            source=self.source,
            architecture=self.architecture,
            activation=self.activation,
            hook_name=self.hook_name,
            hookpoint=self.hookpoint,
            weights=moved,
            k=self.k,
            normalize=self.normalize,
            rescale_by_decoder_norm=self.rescale_by_decoder_norm,
            fingerprint=self.fingerprint,
        )

    def check_hookpoint(self, hp: Hookpoint) -> None:
        """Raise :class:`SAEError` unless this SAE reads ``hp`` and its width is ``d_in``."""
        if hp.width != self.d_in:
            raise SAEError(f"SAE {self.name!r} has d_in={self.d_in}, but hookpoint {hp.name} has width {hp.width}")

    @property
    def sparse_k(self) -> int | None:
        """Features active per token at most, for top-k and group-max SAEs (whose
        :meth:`encode_sparse` gives them without a dense ``[..., d_sae]`` result); else ``None``."""
        return self.k if self.activation in ("topk", "groupmax") and self.k else None

    def _pre(self, x: Any) -> Any:
        """Normalised input minus ``b_in``."""
        w = self.weights
        x = x.to(w["W_enc"].dtype)
        if self.normalize == "constant_norm_rescale":
            x = x * (self.d_in**0.5) / x.norm(dim=-1, keepdim=True)
        elif self.normalize == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + 1e-5)
        return x - w["b_in"]

    def encode_sparse(self, x: Any) -> tuple[Any, Any]:
        """For top-k and group-max SAEs: ``(values, indices)`` ``[..., k]``, the k features each
        token selects and their activations (>= 0; a selected feature may be 0). :meth:`encode` is
        these scattered into zeros."""
        import torch

        k = self.sparse_k
        if k is None:
            raise SAEError(f"{self.name}: a {self.activation} SAE has no fixed number of active features")
        w = self.weights
        with torch.no_grad():
            pre = self._pre(x) @ w["W_enc"] + w["b_enc"]
            if self.rescale_by_decoder_norm:
                pre = pre * w["dec_norm"]
            if self.activation == "groupmax":
                values, idx = torch.relu(pre).unflatten(-1, (k, -1)).max(dim=-1)
                return values, idx + torch.arange(0, self.d_sae, self.d_sae // k, device=pre.device)
            values, idx = pre.topk(k, dim=-1, sorted=False)
            return values.relu_(), idx

    def encode(self, x: Any) -> Any:
        import torch

        w = self.weights
        if self.sparse_k is not None:
            values, idx = self.encode_sparse(x)
            return torch.zeros((*values.shape[:-1], self.d_sae), dtype=values.dtype, device=values.device).scatter_(
                -1, idx, values
            )
        with torch.no_grad():
            x = self._pre(x)
            if self.activation == "gated":
                gate = (x @ w["W_enc"] + w["b_gate"]) > 0
                return torch.relu(x @ w["W_mag"] + w["b_mag"]) * gate
            pre = x @ w["W_enc"] + w["b_enc"]
            if self.activation == "relu":
                return torch.relu(pre)
            if self.activation == "jumprelu":
                return torch.relu(pre) * (pre > w["threshold"])
            raise SAEError(f"{self.name}: unsupported activation {self.activation!r}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SAEError(f"{path}: cannot read the SAE config: {exc}") from exc
    except RecursionError as exc:
        raise SAEError(f"{path}: the SAE config is nested too deeply to be an SAE config") from exc
    if not isinstance(cfg, dict):
        raise SAEError(f"{path}: the SAE config is not a JSON object")
    return cfg


def _read_weights(path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types; translate at the boundary
        raise SAEError(f"{path}: cannot read the weights: {exc}") from exc
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SAEError(f"{path}: weight {key!r} contains NaN or Inf values")
    return {k: t.float() for k, t in tensors.items()}


def _int(cfg: dict[str, Any], key: str, path: Path) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SAEError(f"{path / CFG}: {key!r} must be a positive integer, got {value!r}")
    return value


def _load_saelens(path: Path, name: str) -> SparseAutoencoder:
    import torch

    cfg = _read_json(path / CFG)
    meta: dict[str, Any] = cfg["metadata"] if isinstance(cfg.get("metadata"), dict) else {}
    pre6 = "metadata" not in cfg
    arch = cfg.get("architecture")
    if arch is None and pre6:  # pre-6.0 flat configs: activation_fn_str names topk SAEs
        act = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
        arch = "topk" if act == "topk" else "standard"
        if act not in ("relu", "topk"):
            raise SAEError(f"{path / CFG}: unsupported activation_fn_str {act!r} (relu or topk)")
    if arch not in _SAELENS_ARCH:
        raise SAEError(
            f"{path / CFG}: unsupported SAELens architecture {arch!r}; supported: {', '.join(_SAELENS_ARCH)}"
        )
    hook_name = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if not isinstance(hook_name, str) or not hook_name:
        raise SAEError(f"{path / CFG}: no hook name (metadata.hook_name, hook_name or hook_point)")
    head = meta.get("hook_head_index", cfg.get("hook_head_index", cfg.get("hook_point_head_index")))
    if head is not None or cfg.get("reshape_activations", "none") != "none":
        raise SAEError(f"{path / CFG}: per-head (hook_z) SAEs are not supported")
    normalize = cfg.get("normalize_activations", "none")
    normalize = {False: "none", None: "none", True: "expected_average_only_in"}.get(normalize, normalize)
    if normalize not in _NORMALIZE_OK:
        raise SAEError(
            f"{path / CFG}: normalize_activations={normalize!r} is not supported "
            f"({', '.join(_NORMALIZE_OK)}); fold the scaling into the weights first"
        )
    d_in, d_sae = _int(cfg, "d_in", path), _int(cfg, "d_sae", path)
    try:
        hookpoint = from_transformer_lens(hook_name)
    except HookpointError as exc:
        raise SAEError(f"{path / CFG}: {exc}") from exc
    weights = _read_weights(path / SAELENS_WEIGHTS)
    if "log_threshold" in weights and "threshold" not in weights:
        weights["threshold"] = torch.exp(weights.pop("log_threshold"))
    activation = _SAELENS_ARCH[arch]
    need = {
        "gated": ("W_enc", "b_gate", "r_mag", "b_mag", "b_dec"),
        "jumprelu": ("W_enc", "b_enc", "b_dec", "threshold"),
    }
    need_weights(weights, need.get(activation, ("W_enc", "b_enc", "b_dec")), path / SAELENS_WEIGHTS)
    check_shape(weights["W_enc"], (d_in, d_sae), "W_enc", path)
    # transcoders never subtract b_dec (it lives in the output space)
    apply_b_dec = cfg.get("apply_b_dec_to_input", True) and "transcoder" not in arch
    if apply_b_dec:
        check_shape(weights["b_dec"], (d_in,), "b_dec", path)
    w = {"W_enc": weights["W_enc"], "b_in": weights["b_dec"] if apply_b_dec else torch.zeros(d_in)}
    if activation == "gated":
        for key in ("b_gate", "r_mag", "b_mag"):
            check_shape(weights[key], (d_sae,), key, path)
        w.update(b_gate=weights["b_gate"], b_mag=weights["b_mag"], W_mag=weights["W_enc"] * weights["r_mag"].exp())
    else:
        check_shape(weights["b_enc"], (d_sae,), "b_enc", path)
        w["b_enc"] = weights["b_enc"]
    if activation == "jumprelu":
        check_shape(weights["threshold"], (d_sae,), "threshold", path)
        w["threshold"] = weights["threshold"]
    k = None
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm", False))
    if activation == "topk":
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = cfg.get("k", kwargs.get("k"))
        if not isinstance(k, int) or not 0 < k <= d_sae:
            raise SAEError(f"{path / CFG}: a topk SAE needs 0 < k <= d_sae, got k={k!r}")
        if rescale:
            need_weights(weights, ("W_dec",), path / SAELENS_WEIGHTS)
            w["dec_norm"] = weights["W_dec"].norm(dim=-1)
    return SparseAutoencoder(
        name=name,
        source="saelens",
        architecture=arch,
        activation=activation,
        hook_name=hook_name,
        hookpoint=hookpoint,
        weights=w,
        k=k,
        normalize=normalize,
        rescale_by_decoder_norm=rescale,
        fingerprint=fingerprint(path / CFG, path / SAELENS_WEIGHTS),
    )


def _load_sparsify(path: Path, name: str, hook_name: str) -> SparseAutoencoder:
    cfg = _read_json(path / CFG)
    activation = cfg.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise SAEError(f"{path / CFG}: unsupported sparsify activation {activation!r} (topk or groupmax)")
    d_in = _int(cfg, "d_in", path)
    k = _int(cfg, "k", path)
    transcode = bool(cfg.get("transcode", False))
    try:
        hookpoint = from_sparsify(hook_name, transcode)
    except HookpointError as exc:
        raise SAEError(f"{path}: the folder name is the hookpoint: {exc}") from exc
    weights = _read_weights(path / SPARSIFY_WEIGHTS)
    need_weights(weights, ("encoder.weight", "encoder.bias", "b_dec"), path / SPARSIFY_WEIGHTS)
    n = int(weights["encoder.weight"].shape[0])
    expected = cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32))
    check_shape(weights["encoder.weight"], (expected, d_in), "encoder.weight", path)
    check_shape(weights["encoder.bias"], (n,), "encoder.bias", path)
    check_shape(weights["b_dec"], (d_in,), "b_dec", path)
    if k > n or (activation == "groupmax" and n % k):
        raise SAEError(f"{path / CFG}: k={k} does not fit {n} latents with activation {activation!r}")
    import torch

    w = {
        "W_enc": weights["encoder.weight"].T.contiguous(),
        "b_enc": weights["encoder.bias"],
        "b_in": torch.zeros(d_in) if transcode else weights["b_dec"],
    }
    return SparseAutoencoder(
        name=name,
        source="sparsify",
        architecture="transcoder" if transcode else activation,
        activation=activation,
        hook_name=hook_name,
        hookpoint=hookpoint,
        weights=w,
        k=k,
        fingerprint=fingerprint(path / CFG, path / SPARSIFY_WEIGHTS),
    )


def load_sae(
    path: str | Path, hookpoint: str | None = None, name: str | None = None, k: int | None = None
) -> SparseAutoencoder:
    """Load an SAE from a SAELens folder, a sparsify hookpoint folder, or a folder of either
    with one subfolder per hookpoint (pick one with ``hookpoint``: its folder name or our name;
    a folder of one needs none); or from a Gemma Scope ``params.npz``, a Qwen-Scope
    ``layer{n}.sae.pt`` (``k`` from its release's name unless given) or a Goodfire ``.pth``
    (:mod:`explainer.collect.sae_formats`)."""
    path = Path(path).expanduser()
    if path.exists() and sae_formats.detect(path):
        kwargs = sae_formats.read_sae_file(path, hookpoint, k)
        sae = SparseAutoencoder(**{**kwargs, "name": name or kwargs["name"]})
        if hookpoint and hookpoint not in (sae.hookpoint, sae.hook_name):
            raise SAEError(f"SAE {sae.name!r} reads {sae.hook_name} (our {sae.hookpoint}), not {hookpoint!r}")
        return sae
    if not path.is_dir():
        if is_symlink_loop(path):
            raise SAEError(f"SAE path {path} is a symlink loop")
        raise SAEError(
            f"SAE path {path} is not a folder (expected cfg.json + sae_weights.safetensors or sae.safetensors) "
            "nor a Gemma Scope .npz, Qwen-Scope .sae.pt or Goodfire .pth file"
        )
    if not (path / CFG).is_file():
        entries = list(path.iterdir())
        loops = loops_under(path, entries)
        if loops:
            raise SAEError(f"SAE folder {path}: symlink loop at {', '.join(loops[:5])}")
        subs = sorted(p.name for p in entries if p.is_dir() and (p / CFG).is_file())
        if not subs:
            raise SAEError(f"{path}: no {CFG} here or in any subfolder")
        if len(subs) == 1:
            pick = subs  # one SAE: load it (a requested hookpoint is checked below)
        elif hookpoint:
            pick = [s for s in subs if hookpoint in (s, _our_name(path / s))]
            if len(pick) != 1:
                raise SAEError(f"none of the SAEs in {path} ({', '.join(subs)}) reads the hookpoint {hookpoint!r}")
        else:
            raise SAEError(
                f"{path} holds several SAEs: {', '.join(subs)}; choose one with --hookpoint or give its folder"
            )
        path = path / pick[0]
    label = name or path.name
    if (path / SAELENS_WEIGHTS).is_file():
        sae = _load_saelens(path, label)
    elif (path / SPARSIFY_WEIGHTS).is_file():
        sae = _load_sparsify(path, label, path.name)
    else:
        raise SAEError(f"{path}: neither {SAELENS_WEIGHTS} (SAELens) nor {SPARSIFY_WEIGHTS} (sparsify) is here")
    if hookpoint and hookpoint not in (sae.hookpoint, sae.hook_name):
        raise SAEError(
            f"SAE {label!r} reads {sae.hook_name} (our {sae.hookpoint}), not the requested hookpoint {hookpoint!r}"
        )
    return sae


def _our_name(folder: Path) -> str | None:
    try:
        return from_sparsify(folder.name)
    except HookpointError:
        return None
