"""Intervention scorers: does the explanation describe what the unit *does* to the output?

Per unit (after delphi's unmerged PR #151): the unit is steered (``add``) with the strength that
bisection finds for a target mean next-token KL on neutral prompts (``prompts/neutral_prompts.yaml``);
each prompt is continued greedily, clean and steered; the score is

    mean over prompts [ s(explanation, steered text) − s(explanation, clean text) ] / (KL reached + ε)

with ``s`` = log P(explanation | text) under the local judge model (``intervention``) or under an
OpenAI-compatible endpoint's model, read from echoed prompt logprobs (``intervention-endpoint``), or
the cosine similarity of sentence embeddings (``intervention-embedding``, cheap). The 95% interval is a
bootstrap over prompts. The strength, the KL reached, the prompts and both texts per prompt are
recorded in the score's details. A target KL that no strength in range reaches raises
:class:`~explainer.errors.InterventionError`, which the score stage stores as a failed score with
that reason, never as 0.

These scorers need the unit, not its windows (:meth:`InterventionScorer.score_unit`), and run where
the subject model lives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from explainer.errors import ConfigError, InterventionError
from explainer.intervene.effects import bisect_strength, generate
from explainer.intervene.hooks import Edit
from explainer.score.base import ScoreResult, ScorerKind
from store.records import Window

EPS = 1e-3
"""Added to the KL reached before dividing."""

Loader = Callable[[str], tuple[Any, Any]]
"""unit id → (loaded subject model, :class:`~explainer.intervene.units.UnitTarget`)."""


@dataclass(frozen=True)
class InterventionConfig:
    target_kl: float = 1.0
    """Mean next-token KL (nats) over the neutral prompts that the strength is bisected to."""
    tolerance: float = 0.1
    """Accepted distance from ``target_kl``."""
    max_steps: int = 15
    """Bisection steps after the doubling phase."""
    n_prompts: int = 8
    """Neutral prompts used (the first n of the file)."""
    new_tokens: int = 8
    """Greedy tokens generated per continuation."""
    prompts_file: str = "neutral_prompts"
    """Prompt file in ``prompts/`` (or a path to a YAML file with ``prompts`` and ``judge_prefix``)."""
    n_boot: int = 1000


def measured_output(lm: Any, prompts: list[str], edits: list[Edit], k: int = 10) -> dict[str, Any]:
    """The output side as measured: the ``k`` next tokens whose probability, averaged over
    ``prompts``, the edits raise most and lower most (``{"method": "steering", "promoted",
    "suppressed"}``, each token with ``p_clean`` and ``p_steered``)."""
    from explainer.intervene.effects import next_token_logprobs, token_changes

    clean = next_token_logprobs(lm, prompts).exp().mean(0).log()
    steered = next_token_logprobs(lm, prompts, edits).exp().mean(0).log()
    risen, fallen = token_changes(lm, clean, steered, k)

    def rows(changes: list[Any]) -> list[dict[str, Any]]:
        return [{"token": c.token, "p_clean": round(c.p_clean, 6), "p_steered": round(c.p_steered, 6)} for c in changes]

    return {"method": "steering", "promoted": rows(risen), "suppressed": rows(fallen)}


class InterventionScorer:
    """The ``intervention`` (judge log-probability) and ``intervention-embedding`` scorers."""

    kind: ScorerKind = "window"

    def __init__(
        self,
        loader: Loader,
        variant: Literal["logprob", "embedding", "endpoint"] = "logprob",
        judge_model: str = "smollm2-135m",
        device: str = "cpu",
        config: InterventionConfig | None = None,
        embedder: Any = None,
        remote: Any = None,
    ):
        """``remote`` (the ``endpoint`` variant): an object with ``continuation_logprob(prefix, text)``
        and ``model_name``, e.g. :class:`explainer.score.endpoint.RemoteSimulator`."""
        from explainer.llm.prompts import load_template

        self.loader, self.variant, self.judge_model, self.device = loader, variant, judge_model, device
        self.config = config or InterventionConfig()
        self.method = {"logprob": "intervention", "embedding": "intervention-embedding"}.get(
            variant, "intervention-endpoint"
        )
        if variant == "endpoint" and remote is None:
            raise InterventionError("the intervention-endpoint scorer needs an endpoint to judge with")
        self.remote = remote
        try:
            self.template = load_template(self.config.prompts_file)
        except ConfigError as exc:
            raise ConfigError(f"intervention prompts (EXPLAINER_INTERVENTION_PROMPTS): {exc}") from None
        listed, prefix = self.template.get("prompts"), self.template.get("judge_prefix")
        if not isinstance(listed, list) or not isinstance(prefix, str) or "{text}" not in prefix:
            raise ConfigError(
                f"intervention prompts {self.template.key}: need a list 'prompts' and a 'judge_prefix' holding {{text}}"
            )
        prompts = [str(p) for p in listed][: self.config.n_prompts]
        if not prompts or not all(p.strip() for p in prompts):
            raise InterventionError(f"{self.template.key}: no usable neutral prompts")
        self.prompts = prompts
        self._embedder = embedder

    @property
    def model_name(self) -> str:
        if self.variant == "embedding":
            return str(getattr(self._embedder, "name", "all-MiniLM-L6-v2"))
        if self.variant == "endpoint":
            return str(self.remote.model_name)
        return self.judge_model

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        raise InterventionError(f"the {self.method} scorer needs the unit: call score_unit(explanation, unit_id)")

    # -- the two texts per prompt ---------------------------------------------------------

    def continuations(self, unit_id: str) -> dict[str, Any]:
        """Strength by bisection, then clean and steered continuations of every prompt; the
        explanation-independent half of a score (the benchmark reuses it across explanations)."""
        started = time.perf_counter()
        lm, target = self.loader(unit_id)
        cfg = self.config

        def edits(s: float) -> list[Edit]:
            return [Edit(target, "add", s)]

        cal = bisect_strength(lm, edits, self.prompts, cfg.target_kl, tolerance=cfg.tolerance, max_steps=cfg.max_steps)
        measured = measured_output(lm, self.prompts, edits(cal.strength))
        clean = [generate(lm, p, None, cfg.new_tokens) for p in self.prompts]
        steered = [generate(lm, p, edits(cal.strength), cfg.new_tokens) for p in self.prompts]
        n = len(self.prompts)
        return {
            "unit_id": unit_id,
            "strength": cal.strength,
            "kl": cal.kl,
            "bisection_steps": cal.steps,
            "prompts": list(self.prompts),
            "clean": clean,
            "steered": steered,
            "measured_output": {
                **measured,
                "details": {"strength": cal.strength, "kl": cal.kl, "target_kl": cfg.target_kl, "prompts": n},
            },
            "forward_passes": n * (3 + cal.steps) + 2 * n * cfg.new_tokens,
            "generated_tokens": 2 * n * cfg.new_tokens,
            "seconds": time.perf_counter() - started,
        }

    # -- judging ----------------------------------------------------------------------------

    def _logprob(self, explanation: str, texts: list[str]) -> list[float]:
        """log P(explanation | text) under the judge model, summed over the explanation's tokens."""
        import torch

        from explainer.collect.models import load_model

        judge = load_model(self.judge_model, self.device)
        tok, out = judge.tokenizer, []
        prefix_tmpl = str(self.template["judge_prefix"])
        with torch.no_grad():
            for text in texts:
                prefix = prefix_tmpl.replace("{text}", " ".join(text.split()) or "(nothing)")
                p_ids = tok(prefix)["input_ids"]
                ids = tok(prefix + " " + explanation.strip())["input_ids"]
                start = len(p_ids)
                if len(ids) <= start:
                    raise InterventionError("the explanation adds no tokens to the judge prompt")
                x = torch.tensor([ids], device=judge.device)
                logp = torch.log_softmax(judge.model(input_ids=x, use_cache=False).logits[0].float(), -1)
                targets = x[0, start:]
                out.append(float(logp[start - 1 : len(ids) - 1].gather(1, targets[:, None]).sum()))
        return out

    def _endpoint_logprob(self, explanation: str, texts: list[str]) -> list[float]:
        """log P(explanation | text) under the endpoint's model, with the local judge's prompt."""
        prefix_tmpl = str(self.template["judge_prefix"])
        return [
            self.remote.continuation_logprob(
                prefix_tmpl.replace("{text}", " ".join(text.split()) or "(nothing)"), " " + explanation.strip()
            )
            for text in texts
        ]

    def _similarity(self, explanation: str, texts: list[str]) -> list[float]:
        import numpy as np

        if self._embedder is None:
            from store.embedding import LocalEmbedder

            self._embedder = LocalEmbedder()
        vecs = np.asarray(self._embedder.embed([explanation] + [" ".join(t.split()) or "(nothing)" for t in texts]))
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return [float(v) for v in vecs[1:] @ vecs[0]]

    def judge(self, explanation: str, texts: dict[str, Any]) -> ScoreResult:
        """Score ``explanation`` against the texts :meth:`continuations` produced."""
        import numpy as np

        if not explanation or not explanation.strip():
            raise InterventionError("the explanation is empty")
        measure = {"logprob": self._logprob, "endpoint": self._endpoint_logprob}.get(self.variant, self._similarity)
        clean = np.asarray(measure(explanation, texts["clean"]))
        steered = np.asarray(measure(explanation, texts["steered"]))
        deltas = steered - clean
        norm = texts["kl"] + EPS
        value = float(deltas.mean() / norm)
        rng = np.random.default_rng(0)
        n = len(deltas)
        ci_low = ci_high = None
        if n > 1 and self.config.n_boot:
            boots = deltas[rng.integers(0, n, size=(self.config.n_boot, n))].mean(axis=1) / norm
            ci_low, ci_high = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
        details = {
            "kind": "intervention",
            "method": self.method,
            "score": "mean[s(expl | steered) - s(expl | clean)] / (KL + eps)",
            "measure": "cosine(explanation, text)" if self.variant == "embedding" else "log P(explanation | text)",
            **({"judge": "endpoint, echoed prompt logprobs"} if self.variant == "endpoint" else {}),
            "prompt_file": self.template.key,
            "target_kl": self.config.target_kl,
            "tolerance": self.config.tolerance,
            "new_tokens": self.config.new_tokens,
            "strength": texts["strength"],
            "kl": texts["kl"],
            "bisection_steps": texts["bisection_steps"],
            "forward_passes": texts["forward_passes"] + (2 * n if self.variant == "logprob" else 0),
            "generated_tokens": texts["generated_tokens"],
            "per_prompt": [
                {"prompt": p, "clean": c, "steered": s, "delta": float(d)}
                for p, c, s, d in zip(texts["prompts"], texts["clean"], texts["steered"], deltas)
            ],
            **({"measured_output": texts["measured_output"]} if "measured_output" in texts else {}),
        }
        return ScoreResult(value, ci_low, ci_high, {}, int(texts["generated_tokens"]), self.model_name, details)

    def score_unit(self, explanation: str, unit_id: str) -> ScoreResult:
        """The score of ``explanation`` for the unit ``unit_id`` (steered on the neutral prompts)."""
        if not explanation or not explanation.strip():
            raise InterventionError("the explanation is empty")
        return self.judge(explanation, self.continuations(unit_id))
