"""Per-process singletons: one SQL engine and one vector index per configuration, and the model cache
directory the process's entry point chose.

Created lazily (never at import), so a Celery worker creates them after it forks.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from explainer.settings import Settings, default_model_cache

if TYPE_CHECKING:
    from store.sql import SQLStore
    from store.vectors import VectorIndex

_lock = threading.Lock()
_stores: dict[str, SQLStore] = {}
_indexes: dict[str, VectorIndex] = {}
_model_cache: list[Path] = []


def configure(settings: Settings) -> None:
    """Use ``settings``' model cache directory (``EXPLAINER_MODEL_CACHE``) for this process's model
    loads and file hashes. Called once by each entry point (the CLI, the API factory, the worker
    start) with the settings it read."""
    with _lock:
        _model_cache[:] = [settings.model_cache]


def model_cache() -> Path:
    """Where dequantised GGUF copies and the file-hash cache live: the directory the entry point
    handed to :func:`configure`, else :func:`explainer.settings.default_model_cache`."""
    with _lock:
        return _model_cache[0] if _model_cache else default_model_cache()


def get_store(settings: Settings) -> SQLStore:
    from store.sql import SQLStore

    with _lock:
        if settings.database_url not in _stores:
            if settings.database_url.startswith("sqlite"):
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            _stores[settings.database_url] = SQLStore(settings.database_url)
        return _stores[settings.database_url]


def get_index(settings: Settings) -> VectorIndex:
    from store.embedding import LocalEmbedder
    from store.vectors import VectorIndex

    key = settings.chroma_url or str(settings.chroma_path)
    with _lock:
        if key not in _indexes:
            embedder = LocalEmbedder(query_runtime=settings.query_embed, cache_dir=settings.model_cache)
            _indexes[key] = (
                VectorIndex(url=settings.chroma_url, embedder=embedder)
                if settings.chroma_url
                else VectorIndex(path=settings.chroma_path, embedder=embedder)
            )
        return _indexes[key]
