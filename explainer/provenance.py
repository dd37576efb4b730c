"""Provenance: what produced a collection, an explanation and a score, in a form safe to publish.

- :func:`model_provenance` names a subject model's files with their sha256 (cached by path, size
  and modification time, so a model is hashed once) and, for a Hugging Face hub snapshot, its
  revision;
- :func:`clean_url` drops credentials, query strings and fragments from an endpoint URL;
- :func:`public_settings` keeps only what is safe to print from a settings mapping: keys that
  name a secret (``api_key``, ``token``, ``password``, …) are dropped and URLs cleaned.

Reports read everything through these functions, so they never carry an API key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from explainer import runtime
from store.records import Explanation, Score

log = logging.getLogger(__name__)

__all__ = ["file_sha256", "model_provenance", "clean_url", "public_settings", "software_version"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
SECRET_KEY_RE = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential|authorization|auth)", re.I)
_REVISION_RE = re.compile(r"/snapshots/([0-9a-f]{40})(/|$)")
_lock = threading.Lock()


def _hash_cache_file() -> Path:
    return runtime.model_cache() / "file-hashes.json"


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, cached by (absolute path, size, mtime) in the model cache directory
    (:func:`explainer.runtime.model_cache`)."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}\x1f{st.st_size}\x1f{st.st_mtime_ns}"
    cache_file = _hash_cache_file()
    with _lock:
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        if isinstance(cache.get(key), str):
            return cache[key]
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        cache[key] = digest
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
            tmp.replace(cache_file)
        except OSError as exc:  # a read-only home still gets the hash, just not cached
            log.warning("could not cache the hash of %s: %s", p, exc)
        return digest


def model_provenance(source: Any, given: str) -> dict[str, Any]:
    """The subject model as given (short name or path), its weight files with their sha256 and,
    for a hub snapshot directory, the revision it was downloaded at."""
    directory = Path(source.directory)
    if source.gguf_file:
        files = [directory / source.gguf_file]
    else:
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    match = _REVISION_RE.search(directory.as_posix() + "/")
    return {
        "name": source.name,
        "given": given,
        "revision": match.group(1) if match else None,
        "files": [{"name": f.name, "sha256": file_sha256(f), "bytes": f.stat().st_size} for f in files],
    }


def clean_url(url: str | None) -> str | None:
    """``scheme://host[:port]/path`` of ``url``: user, password, query and fragment removed."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def public_settings(settings: Any) -> Any:
    """A copy of a settings mapping (nested dicts and lists too) with secret-named keys dropped
    and every ``*url*`` value cleaned with :func:`clean_url`."""
    if isinstance(settings, dict):
        out = {}
        for k, v in settings.items():
            if SECRET_KEY_RE.search(str(k)):
                continue
            out[str(k)] = clean_url(v) if "url" in str(k).lower() and isinstance(v, str) else public_settings(v)
        return out
    if isinstance(settings, (list, tuple)):
        return [public_settings(v) for v in settings]
    return settings


def software_version() -> str:
    """The installed version of this project (``0+unknown`` when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("activation-explainer")
    except PackageNotFoundError:
        return "0+unknown"


def collection_provenance(
    source: Any, model: str, hookpoint: str, sae: str | None, directions: str | None
) -> dict[str, Any]:
    """What a collection's stored config records about its inputs, so that a report can name them
    and ``explainer calibrate`` can collect the same units over another corpus: the model as given
    (paths made absolute) with its file hashes, the hookpoint it was asked for, and the SAE or
    directions path."""

    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else None

    given = model if not Path(model).expanduser().exists() else str(Path(model).expanduser().resolve())
    return {
        "model": model_provenance(source, given),
        "hookpoint": hookpoint,
        "sae": absolute(sae),
        "directions": absolute(directions),
        "software_version": software_version(),
    }


def _iso(t: Any) -> str | None:
    return t.isoformat() if hasattr(t, "isoformat") else (str(t) if t else None)


def explanation_provenance(
    collection: dict[str, Any] | None, expl: Explanation, scores: list[Score], hookpoint: str
) -> dict[str, Any]:
    """Everything that produced one explanation and its scores, from store rows, as plain JSON:
    subject model and its file hashes, hookpoint, SAE/directions and its file hash, corpus id and
    hash, explainer model and settings (secrets dropped), simulators, prompt template, the window
    ids shown and held out, token counts, timestamps and software versions."""
    col = collection or {}
    try:
        config = json.loads(col.get("config") or "{}")
    except (TypeError, ValueError):
        config = {}
    recorded = config.get("provenance") or {}
    model = recorded.get("model") or {"name": col.get("model"), "given": None, "revision": None, "files": []}
    units = {k: v for k, v in (config.get("units") or {}).items() if k != "names"} or None
    settings = public_settings({k: v for k, v in expl.settings.items() if k != "candidates"})
    candidates = [
        {k: c.get(k) for k in ("source", "selection_score", "cascade_score", "error") if k in c}
        for c in expl.settings.get("candidates") or []
    ]
    held_out = sorted({w for s in scores for w in s.heldout_ids})
    collect_config = {k: v for k, v in config.items() if k not in ("units", "provenance")}
    return {
        "subject_model": model,
        "hookpoint": hookpoint,
        "hookpoint_requested": recorded.get("hookpoint"),
        "units_source": units,
        "corpus": {"id": col.get("corpus"), "hash": col.get("corpus_hash"), "n_tokens": col.get("n_tokens")},
        "collection_id": expl.collection_id,
        "collect_config": collect_config,
        "explainer": {"model": expl.explainer_model, "settings": settings, "candidates": public_settings(candidates)},
        "simulators": [{"scorer": s.scorer, "model": s.simulator_model} for s in scores],
        "prompt": {"name": expl.prompt_name, "version": expl.prompt_version, "sha256": expl.prompt_hash},
        "windows": {"shown": list(expl.window_ids), "held_out": held_out},
        "tokens": {
            "prompt": expl.prompt_tokens,
            "completion": expl.completion_tokens,
            "scored": {s.scorer: s.n_tokens for s in scores},
        },
        "timestamps": {
            "collection_started": _iso(col.get("created_at")),
            "collection_finished": _iso(col.get("finished_at")),
            "explained": _iso(expl.created_at),
            "indexed": _iso(expl.indexed_at),
            "scored": {s.scorer: _iso(s.created_at) for s in scores},
        },
        "software": {
            "name": "activation-explainer",
            "version": software_version(),
            "collected_with": recorded.get("software_version"),
        },
    }


_URL_CREDENTIALS_RE = re.compile(r"(://)[^/\s@]+@")
REDACTED = "[redacted]"


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (a string, or dicts and lists of them) with every secret value and every URL's
    user:password replaced by ``[redacted]``."""
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, REDACTED)
        return _URL_CREDENTIALS_RE.sub(r"\1" + REDACTED + "@", value)
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v, secrets) for v in value)
    return value
