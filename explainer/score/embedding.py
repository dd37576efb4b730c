"""Token-embedding simulation: predict each token's activation from how close the token (in
its context) is to the explanation under a local sentence-embedding model.

It is a simulator in the full sense — one prediction per token, scored with the same pooled
correlation, interval and per-domain split as the LLM simulators — but it needs no LLM: one
embedding of the explanation plus cached embeddings of token texts, which repeat across units
(random windows are shared by every unit of a collection). Whitespace-only tokens predict 0.

It cannot see what an embedding of a short text does not hold: position, syntax, counting,
or a token's role that only later context reveals.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from explainer.score.base import ScoreResult, ScorerKind, simulation_result
from store.records import Window


class EmbeddingSimulator:
    """Prediction = (1 − w)·cos(explanation, token) + w·cos(explanation, context ending at the token)."""

    method = "simulation-embedding"
    kind: ScorerKind = "simulation"

    def __init__(
        self, embedder: Any = None, context_tokens: int = 0, context_weight: float = 0.0, cache_size: int = 500_000
    ):
        if not 0.0 <= context_weight <= 1.0:
            raise ValueError("context_weight must be in [0, 1]")
        if embedder is None:
            from store.embedding import (
                LocalEmbedder,  # shares the loaded model within the process
            )

            embedder = LocalEmbedder()
        self.embedder = embedder
        self.context_tokens = context_tokens
        self.context_weight = context_weight if context_tokens > 0 else 0.0
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return getattr(self.embedder, "name", "all-MiniLM-L6-v2")

    @property
    def settings(self) -> dict[str, Any]:
        return {"context_tokens": self.context_tokens, "context_weight": self.context_weight}

    def _vectors(self, texts: list[str]) -> dict[str, Any]:
        import numpy as np

        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vecs = np.asarray(self.embedder.embed(missing), dtype=np.float32)
            with self._lock:
                for t, v in zip(missing, vecs):
                    self._cache[t] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        with self._lock:
            return {t: self._cache[t] for t in texts if t in self._cache}

    def _texts(self, window: Window) -> tuple[list[str], list[str]]:
        tokens = [t.strip() for t in window.tokens]
        contexts = []
        if self.context_weight > 0:
            for i in range(len(window.tokens)):
                ctx = "".join(window.tokens[max(0, i - self.context_tokens) : i + 1])
                contexts.append(" ".join(ctx.split()))
        return tokens, contexts

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:

        per_window = [self._texts(w) for w in windows]
        wanted = [t for toks, ctx in per_window for t in toks + ctx if t]
        vecs = self._vectors([explanation, *wanted])
        e = vecs[explanation]  # cached too: the same explanation is often scored on several units
        out = []
        for toks, ctx in per_window:
            preds = []
            for i, tok in enumerate(toks):
                if not tok:
                    preds.append(0.0)
                    continue
                p = float(vecs[tok] @ e)
                if ctx:
                    p = (1 - self.context_weight) * p + self.context_weight * float(vecs[ctx[i]] @ e) if ctx[i] else p
                preds.append(p)
            out.append(preds)
        return out

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        return simulation_result(
            self, self.simulate(explanation, windows), windows, {"method": self.method, **self.settings}
        )


class EmbeddingScorer:
    """Window-level scorer: cosine similarity, under the local sentence-embedding model, of the
    explanation to each held-out window's text; the value is the AUROC of that similarity for
    activating against non-activating windows (labels as in :mod:`explainer.score.detection`)."""

    method = "embedding"
    kind: ScorerKind = "window"

    def __init__(self, embedder: Any = None):
        if embedder is None:
            from store.embedding import LocalEmbedder

            embedder = LocalEmbedder()
        self.embedder = embedder

    @property
    def model_name(self) -> str:
        return getattr(self.embedder, "name", "all-MiniLM-L6-v2")

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        import numpy as np

        from explainer.score.detection import (
            auroc,
            window_labels,
            window_score,
            window_text,
        )

        labels = window_labels(windows)
        vecs = np.asarray(self.embedder.embed([explanation] + [window_text(w) for w in windows]), dtype=np.float32)
        sims = [float(v @ vecs[0]) for v in vecs[1:]]
        pos = [s for y, s in zip(labels, sims) if y]
        neg = [s for y, s in zip(labels, sims) if not y]
        details = {
            "method": "embedding",
            "fidelity": "embedding",
            "mean_cos_activating": round(sum(pos) / len(pos), 4) if pos else None,
            "mean_cos_other": round(sum(neg) / len(neg), 4) if neg else None,
        }
        return window_score(windows, labels, auroc, sims, self.model_name, details)
