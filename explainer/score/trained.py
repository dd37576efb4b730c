"""Trained contextual simulation (``simulation-trained``): a small head, trained here on generated
planted concepts, that predicts each token's activation from the explanation and the token's
window, both read through the local sentence-embedding model.

:mod:`explainer.score.contextual` mixes fixed cosine similarities; when a description names the
context ("a name right before an opening parenthesis"), the context tokens themselves (the ``(``)
are close to it and predict high. Here the same span embeddings — the token alone, the token with
its 4 preceding tokens, the token centred between 2 tokens on each side — plus the previous and
the next token alone (free: they are other tokens' own texts) go through a learned head:

    logit = w · cos + MLP([cos_k, (P_k e) ⊙ (Q_k s_k) for each span k])

with ``e`` the explanation's embedding, ``s_k`` the span's, ``P_k``/``Q_k`` low-rank projections
per span and ``cos_k = e · s_k``; the prediction is ``10 · sigmoid(logit)``. The head learns which
part of a description names the marked token and which names its neighbours.

The weights are a small versioned file in this package (``weights/``), written by
``bench/train_context_scorer.py`` from concepts it generates over the default corpus — never the
public sets of ``bench/``; ``details.weights`` names the file and its version. Span embeddings are
cached as in :mod:`explainer.score.embedding`, so a simulation is one explanation embedding and a
few small matrix products. Whitespace-only tokens predict 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from explainer.errors import ScoreError
from explainer.score.base import ScoreResult, ScorerKind, simulation_result
from explainer.score.contextual import span_text
from explainer.score.embedding import EmbeddingSimulator
from store.records import Window

__all__ = ["SPANS", "WEIGHTS_FILE", "ContextHead", "TrainedSimulator", "neighbour_text", "token_span_texts"]

WEIGHTS_FILE = Path(__file__).resolve().parent / "weights" / "context_head_v1.npz"
"""The shipped head (see ``bench/train_context_scorer.py``)."""

SPANS = ("token", "previous", "next", "preceding", "centred")
"""The spans each token is read through, in the order of the head's inputs."""

PARAMS = ("P", "Q", "W1", "b1", "w2", "b2", "wc")
"""Arrays of a weights file: P, Q (spans × dim × rank), W1 (hidden × inputs), b1, w2 (hidden), b2
(1), wc (spans: the linear term on the cosines)."""


def neighbour_text(tokens: tuple[str, ...] | list[str], j: int) -> str:
    """Token ``j`` alone as a neighbour: stripped, ``newline``/``space`` for whitespace, ``""`` when
    outside the window (embedded as a zero vector)."""
    if j < 0 or j >= len(tokens):
        return ""
    t = tokens[j]
    if t.strip():
        return " ".join(t.split())
    return "newline" if "\n" in t else "space"


def token_span_texts(tokens: tuple[str, ...] | list[str]) -> list[tuple[str, ...] | None]:
    """Per token: its span texts in the order of :data:`SPANS`, or ``None`` for whitespace."""
    return [
        (
            span_text(tokens, i, 0, 0),
            neighbour_text(tokens, i - 1),
            neighbour_text(tokens, i + 1),
            span_text(tokens, i, 4, 0),
            span_text(tokens, i, 2, 2),
        )
        if tok.strip()
        else None
        for i, tok in enumerate(tokens)
    ]


class ContextHead:
    """The trained head: numpy forward pass over precomputed embeddings."""

    def __init__(self, path: str | Path = WEIGHTS_FILE):
        import zipfile

        import numpy as np

        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in (*PARAMS, "version")}
        except FileNotFoundError as exc:
            raise ScoreError(
                f"weights of the trained scorer not found: {self.path} (run bench/train_context_scorer.py)"
            ) from exc
        except KeyError as exc:
            raise ScoreError(f"weights file {self.path} lacks array {exc}: not a context-head file") from exc
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ScoreError(f"weights file {self.path} is unreadable or corrupt: {exc}") from exc
        f32 = {k: arrays[k].astype(np.float32) for k in PARAMS}
        n, dim, rank = f32["P"].shape if f32["P"].ndim == 3 else (0, 0, 0)
        hidden = f32["W1"].shape[0] if f32["W1"].ndim == 2 else 0
        expected = {
            "P": (len(SPANS), dim, rank),
            "Q": (len(SPANS), dim, rank),
            "W1": (hidden, len(SPANS) * (rank + 1)),
            "b1": (hidden,),
            "w2": (hidden,),
            "b2": (1,),
            "wc": (len(SPANS),),
        }
        bad = [k for k, shape in expected.items() if f32[k].shape != shape]
        if n != len(SPANS) or not dim or not rank or not hidden or bad:
            raise ScoreError(f"weights file {self.path} has arrays of the wrong shape: {', '.join(bad) or 'P'}")
        if not all(np.isfinite(a).all() for a in f32.values()):
            raise ScoreError(f"weights file {self.path} holds non-finite weights")
        self.params = f32
        self.dim = dim
        self.version = str(arrays["version"])
        self.sha256 = hashlib.sha256(raw).hexdigest()[:12]

    @property
    def info(self) -> dict[str, str]:
        """What ``details.weights`` records: file name, version and content hash."""
        return {"file": self.path.name, "version": self.version, "sha256": self.sha256}

    def logits(self, e: Any, spans: Any) -> Any:
        """Logits for one explanation vector ``e`` (dim) and span vectors ``spans`` (tokens × spans × dim)."""
        import numpy as np

        p = self.params
        cos = np.einsum("tkd,d->tk", spans, e)  # tokens × spans
        u = np.einsum("d,kdr->kr", e, p["P"])  # spans × rank
        v = np.einsum("tkd,kdr->tkr", spans, p["Q"])  # tokens × spans × rank
        x = np.concatenate([cos, (v * u[None]).reshape(len(spans), -1)], axis=1)
        h = np.maximum(x @ p["W1"].T + p["b1"], 0.0)
        return h @ p["w2"] + p["b2"][0] + cos @ p["wc"]


class TrainedSimulator:
    """Prediction = 10 · sigmoid(head(explanation, spans of the token's window))."""

    method = "simulation-trained"
    kind: ScorerKind = "simulation"

    def __init__(self, vectors: EmbeddingSimulator | None = None, weights: str | Path = WEIGHTS_FILE):
        self.head = ContextHead(weights)
        # the span-embedding cache: shared with simulation-context when the registry hands it over
        self.vectors = vectors if vectors is not None else EmbeddingSimulator()

    @property
    def model_name(self) -> str:
        return self.vectors.model_name

    @property
    def settings(self) -> dict[str, Any]:
        return {"spans": list(SPANS), "weights": self.head.info}

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:
        import numpy as np

        per_window = [token_span_texts(w.tokens) for w in windows]
        wanted = [t for texts in per_window for row in texts if row for t in row if t]
        vecs = self.vectors._vectors([explanation, *wanted])
        e = vecs[explanation]
        if e.shape != (self.head.dim,):
            raise ScoreError(f"embedding size {e.shape} does not match the trained head's ({self.head.dim})")
        zero = np.zeros(self.head.dim, dtype=np.float32)
        out = []
        for texts in per_window:
            rows = [i for i, row in enumerate(texts) if row]
            preds = [0.0] * len(texts)
            if rows:
                spans = np.stack([np.stack([vecs[t] if t else zero for t in texts[i] or ()]) for i in rows])
                logit = self.head.logits(e, spans)
                for i, z in zip(rows, logit):
                    preds[i] = float(10.0 / (1.0 + np.exp(-z)))
            out.append(preds)
        return out

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        return simulation_result(
            self, self.simulate(explanation, windows), windows, {"method": self.method, **self.settings}
        )
