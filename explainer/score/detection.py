"""Window-level scores: does the explanation tell activating held-out windows from the others?

Labels: a held-out window is *activating* when it was drawn from the unit's activating
sequences (``top`` and ``quantile`` windows) or, for a ``random`` window, when its largest
activation reaches half of the largest one among the held-out windows; the other random
windows are *non-activating*.

The **detection** scorer asks an LLM, per window, whether the unit fires on it given the
explanation (``prompts/detect.yaml``): locally the probability of "yes" against "no" from the
model's next-token logits; from an endpoint from ``top_logprobs``, else the plain answer. Its
value is the balanced accuracy of "yes" (P(yes) ≥ 0.5) against the labels; the AUROC of P(yes)
is recorded in ``details`` when probabilities exist.
"""

from __future__ import annotations

import math
import random
import re
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from explainer.errors import ExplainerError, ParseError, PermanentLLMError
from explainer.llm.prompts import PromptTemplate, load_template
from explainer.score.base import ScoreResult, ScorerKind
from store.records import Window

POSITIVE_SHARE = 0.5
"""A random window counts as activating when its max reaches this share of the held-out max."""


def window_labels(windows: list[Window]) -> list[int]:
    """1 for activating held-out windows, 0 for the others (see the module docstring)."""
    top = max((w.max_activation for w in windows), default=0.0)
    return [1 if w.kind != "random" or (top > 0 and w.max_activation >= POSITIVE_SHARE * top) else 0 for w in windows]


def auroc(labels: list[int], scores: list[float]) -> float:
    """Probability that a random activating window outscores a random other one (ties half)."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    if not pos or not neg:
        return float("nan")
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def balanced_accuracy(labels: list[int], predicted: list[int]) -> float:
    pos = [p for y, p in zip(labels, predicted) if y]
    neg = [p for y, p in zip(labels, predicted) if not y]
    if not pos or not neg:
        return float("nan")
    return 0.5 * (sum(pos) / len(pos) + sum(1 - p for p in neg) / len(neg))


def window_score(
    windows: list[Window],
    labels: list[int],
    figure: Callable[[list[int], list[Any]], float],
    values: list[Any],
    model: str,
    details: dict[str, Any],
    n_boot: int = 1000,
    seed: int = 0,
) -> ScoreResult:
    """A ScoreResult of ``figure(labels, values)`` with a bootstrap interval over windows and
    per-domain figures (domains holding both classes only)."""
    if not windows:
        raise ExplainerError("no held-out windows to score on")
    if len(set(labels)) < 2:
        kind = "activating" if labels[0] else "non-activating"
        raise ExplainerError(f"every held-out window is {kind}: a window-level score needs both kinds")
    value = figure(labels, values)
    rng = random.Random(seed)
    idx = range(len(windows))
    boots = []
    for _ in range(n_boot):
        s = [rng.choice(idx) for _ in idx]
        v = figure([labels[i] for i in s], [values[i] for i in s])
        if not math.isnan(v):
            boots.append(v)
    boots.sort()
    lo = boots[int(0.025 * (len(boots) - 1))] if boots else None
    hi = boots[int(math.ceil(0.975 * (len(boots) - 1)))] if boots else None
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, w in enumerate(windows):
        by_domain[w.domain].append(i)
    per_domain = {}
    for d, ids in sorted(by_domain.items()):
        v = figure([labels[i] for i in ids], [values[i] for i in ids])
        if not math.isnan(v):
            per_domain[d] = v
    details = {
        **details,
        "kind": "window",
        "n_windows": len(windows),
        "n_activating": sum(labels),
        "n_boot_used": len(boots),
    }
    return ScoreResult(value, lo, hi, per_domain, sum(len(w.tokens) for w in windows), model, details)


def window_text(window: Window, max_chars: int = 400) -> str:
    return " ".join("".join(window.tokens).split())[:max_chars]


class _Detector:
    """Shared scoring of per-window P(yes); subclasses provide ``p_yes`` and ``fidelity``."""

    method = "detection"
    kind: ScorerKind = "window"

    def __init__(self, template: PromptTemplate | None = None):
        self.template = template or load_template("detect")

    def messages(self, explanation: str, window: Window) -> list[tuple[str, str]]:
        return [
            ("system", self.template["system"]),
            ("user", self.template.render("user", explanation=explanation, text=window_text(window))),
        ]

    @property
    def model_name(self) -> str:
        raise NotImplementedError

    def p_yes(self, explanation: str, windows: list[Window]) -> tuple[list[float], str]:
        raise NotImplementedError

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        labels = window_labels(windows)
        probs, fidelity = self.p_yes(explanation, windows)
        said_yes = [int(p >= 0.5) for p in probs]
        details: dict[str, Any] = {
            "method": "detection",
            "fidelity": fidelity,
            "prompt": self.template.key,
            "auroc": auroc(labels, probs) if fidelity == "logprobs" else None,
            "said_yes": sum(said_yes),
            "p_yes": [round(p, 4) for p in probs],
        }
        if details["auroc"] is not None and math.isnan(details["auroc"]):
            details["auroc"] = None
        return window_score(
            windows,
            labels,
            lambda y, v: balanced_accuracy(y, [int(p >= 0.5) for p in v]),
            probs,
            self.model_name,
            details,
        )


_YES, _NO = ("yes", "Yes", " yes", " Yes", "YES"), ("no", "No", " no", " No", "NO")


class LocalDetector(_Detector):
    """Detection from a local causal LM: P("yes") vs P("no") at the answer's first token."""

    def __init__(self, model_path: str = "smollm2-135m", device: str = "cpu", template: PromptTemplate | None = None):
        super().__init__(template)
        self.model_path, self.device = model_path, device

    @property
    def model_name(self) -> str:
        from explainer.collect.models import load_model

        return f"{load_model(self.model_path, self.device).name} [yes/no logits]"

    def _word_ids(self, tok: Any, words: tuple[str, ...]) -> list[int]:
        ids = {tok(w, add_special_tokens=False)["input_ids"][0] for w in words}
        return sorted(ids)

    def p_yes(self, explanation: str, windows: list[Window]) -> tuple[list[float], str]:
        import torch

        from explainer.collect.models import load_model

        lm = load_model(self.model_path, self.device)
        tok = lm.tokenizer
        yes, no = self._word_ids(tok, _YES), self._word_ids(tok, _NO)
        head = lm.model.get_output_embeddings().weight[yes + no]
        out = []
        with torch.no_grad():
            for w in windows:
                chat = [{"role": r, "content": c} for r, c in self.messages(explanation, w)]
                enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
                hidden = lm.model.model(input_ids=enc["input_ids"].to(lm.device), use_cache=False).last_hidden_state
                p = (hidden[0, -1] @ head.T).softmax(-1)
                out.append(float(p[: len(yes)].sum()))
        return out, "logprobs"


class RemoteDetector(_Detector):
    """Detection over an OpenAI-compatible chat endpoint: top_logprobs of the first answer token
    where the server gives them, else the plain yes/no answer (fidelity ``low``)."""

    _no_logprobs: set[str] = set()
    _lock = threading.Lock()

    def __init__(self, client: Any, model: str, template: PromptTemplate | None = None, top_logprobs: int = 5):
        super().__init__(template)
        from explainer.provenance import clean_url

        self.client, self.model, self.top_logprobs = client, model, top_logprobs
        self.base_url = str(getattr(client, "base_url", "endpoint")).rstrip("/")
        self.shown_url = clean_url(self.base_url)
        """The endpoint as errors and details name it: no credentials or query string."""

    @property
    def model_name(self) -> str:
        return f"{self.model} [yes/no]"

    def _ask(self, explanation: str, window: Window) -> tuple[float, bool]:
        from explainer.llm.chat import call_endpoint

        msgs = [{"role": r, "content": c} for r, c in self.messages(explanation, window)]
        want_lp = self.base_url not in self._no_logprobs
        extra = {"logprobs": True, "top_logprobs": self.top_logprobs} if want_lp else {}
        try:
            resp = call_endpoint(
                "detection endpoint",
                self.base_url,
                sum(len(m["content"]) for m in msgs) // 4 + 2,
                lambda: self.client.chat.completions.create(
                    model=self.model, messages=msgs, temperature=0, max_tokens=2, **extra
                ),
            )
        except PermanentLLMError as err:
            if want_lp and err.status in (400, 422):
                with self._lock:
                    self._no_logprobs.add(self.base_url)  # the server rejects logprobs: ask plainly
                return self._ask(explanation, window)
            raise
        choice = (resp.get("choices") or [{}])[0]
        content = (choice.get("logprobs") or {}).get("content") or []
        if content and content[0].get("top_logprobs"):
            alts = {
                a["token"]: math.exp(a["logprob"]) for a in content[0]["top_logprobs"] if a.get("logprob") is not None
            }
            py = sum(p for t, p in alts.items() if t.strip().lower() == "yes")
            pn = sum(p for t, p in alts.items() if t.strip().lower() == "no")
            if py + pn > 0:
                return py / (py + pn), True
        text = ((choice.get("message") or {}).get("content") or "").strip().lower()
        word = re.fullmatch(r"\W*(yes|no)\b\W*", text)  # "no idea" is not an answer
        if word:
            return float(word.group(1) == "yes"), False
        raise ParseError(
            f"detection endpoint {self.shown_url} (model {self.model}) answered neither yes nor no: {text[:80]!r}"
        )

    def p_yes(self, explanation: str, windows: list[Window]) -> tuple[list[float], str]:
        answers = [self._ask(explanation, w) for w in windows]
        return [p for p, _ in answers], "logprobs" if all(lp for _, lp in answers) else "low"
