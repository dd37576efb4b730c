"""Simulate: predict each held-out token's activation from the explanation alone.

:class:`LogitSimulator` reads a local causal LM's next-token distribution: the prompt lists
the window's tokens one per line as ``token<TAB>unknown``; at each ``<TAB>`` the model's
probabilities over the digit tokens give the expected activation (0–10), all positions of a
window in one forward pass. The LM head is applied only to the digit rows at the read
positions, never to the full vocabulary.

The digits are read as neuron-explainer reads them: only the exact tokens "0"…"10", their
probabilities renormalised over those tokens. Tokenizers that split "10" into "1" "0" (SmolLM2
does) cannot give a one-token probability for 10; there the expectation runs over 0–9, as
neuron-explainer's own reading would with such a tokenizer. That is not only a change of scale:
a token the model would rate 10 is read as 1, which lowers the correlation (a 4-token case in
``tests/score/test_scoring_parity.py`` goes from 1.0 to about 0.37).
"""

from __future__ import annotations

from typing import Any

from explainer.collect.models import load_model
from explainer.llm.prompts import PromptTemplate
from explainer.score.base import ScoreResult, ScorerKind, simulation_result
from store.records import Window


def display_token(tok: str) -> str:
    return tok.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") or "\\0"


def simulation_prefix(template: PromptTemplate, explanation: str) -> str:
    """The "all at once" prompt up to the target window: header, the worked example, the explanation."""
    ex = template["example"]
    lines = "".join(f"{display_token(t)}\t{a}\n" for t, a in zip(ex["tokens"], ex["activations"]))
    return (
        f"{template['header']}\n\nNeuron 1\nExplanation: {ex['explanation']}\nActivations:\n<start>\n"
        f"{lines}<end>\n\nNeuron 2\nExplanation: {explanation}\nActivations:\n<start>\n"
    )


def simulation_text(
    template: PromptTemplate,
    explanation: str,
    tokens: tuple[str, ...] | list[str],
    placeholder_field: str = "placeholder",
) -> tuple[str, list[int]]:
    """The whole prompt as text (``token<TAB>placeholder`` per line) and, per token, the character
    offset right after its TAB: where the predicted activation would start. ``placeholder_field``
    names the template field that fills the unknown activations."""
    text = simulation_prefix(template, explanation)
    placeholder = f"{template.get(placeholder_field) or template.get('placeholder', 'unknown')}\n"
    offsets = []
    for t in tokens:
        text += f"{display_token(t)}\t"
        offsets.append(len(text))
        text += placeholder
    return text, offsets


class LogitSimulator:
    """Simulation from a local model's logits ("all at once", one pass per window)."""

    method = "simulation-logits"
    kind: ScorerKind = "simulation"

    def __init__(self, template: PromptTemplate, model_path: str = "smollm2-135m", device: str = "cpu"):
        self.template = template
        self.model_path = model_path
        self.device = device

    @property
    def model_name(self) -> str:
        return load_model(self.model_path, self.device).name

    def _ids(self, tok: Any, text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def _digit_ids(self, tok: Any) -> tuple[list[int], list[float]]:
        ids, values = [], []
        for v in range(11):
            piece = self._ids(tok, str(v))
            if len(piece) == 1:
                ids.append(piece[0])
                values.append(float(v))
        return ids, values

    def _prefix(self, explanation: str) -> str:
        return simulation_prefix(self.template, explanation)

    def build_inputs(self, explanation: str, window: Window, tok: Any) -> tuple[list[int], list[int]]:
        """Token ids of the prompt for ``window`` and the positions to read (one per token)."""
        ids = self._ids(tok, self._prefix(explanation))
        placeholder = self._ids(tok, f"{self.template.get('placeholder', 'unknown')}\n")
        reads = []
        for t in window.tokens:
            ids += self._ids(tok, f"{display_token(t)}\t")
            reads.append(len(ids) - 1)
            ids += placeholder
        return ids, reads

    def simulate(self, explanation: str, windows: list[Window]) -> list[list[float]]:
        """Expected activation (0–10 scale) for every token of every window."""
        import torch

        lm = load_model(self.model_path, self.device)
        tok = lm.tokenizer
        digit_ids, values = self._digit_ids(tok)
        head = lm.model.get_output_embeddings().weight[digit_ids]  # [D, hidden]
        vals = torch.tensor(values, device=lm.device)
        built = [self.build_inputs(explanation, w, tok) for w in windows]
        width = max(len(ids) for ids, _ in built)
        input_ids = torch.full((len(built), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(built), width), dtype=torch.long)
        for b, (ids, _) in enumerate(built):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            mask[b, : len(ids)] = 1
        with torch.no_grad():
            hidden = lm.model.model(
                input_ids=input_ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False
            ).last_hidden_state
            out = []
            for b, (_, reads) in enumerate(built):
                logits = hidden[b, reads] @ head.T  # [tokens, D]
                out.append((logits.softmax(-1) @ vals).tolist())
        return out

    def score(self, explanation: str, windows: list[Window]) -> ScoreResult:
        return simulation_result(self, self.simulate(explanation, windows), windows)
