"""Per-process singletons: one SQL engine and one vector index per configuration.

Created lazily (never at import), so a Celery worker creates them after it forks.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from explainer.settings import Settings

if TYPE_CHECKING:
    from store.sql import SQLStore
    from store.vectors import VectorIndex

_lock = threading.Lock()
_stores: dict[str, SQLStore] = {}
_indexes: dict[str, VectorIndex] = {}


def get_store(settings: Settings) -> SQLStore:
    from store.sql import SQLStore

    with _lock:
        if settings.database_url not in _stores:
            if settings.database_url.startswith("sqlite"):
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            _stores[settings.database_url] = SQLStore(settings.database_url)
        return _stores[settings.database_url]


def get_index(settings: Settings) -> VectorIndex:
    from store.vectors import VectorIndex

    key = settings.chroma_url or str(settings.chroma_path)
    with _lock:
        if key not in _indexes:
            _indexes[key] = (
                VectorIndex(url=settings.chroma_url) if settings.chroma_url else VectorIndex(path=settings.chroma_path)
            )
        return _indexes[key]
