"""The no-LLM baseline explainer: the unit's most frequent strongly activating tokens.

Every LLM explanation should beat it; when it does not, the LLM added nothing.
"""

from __future__ import annotations

from collections import Counter

from store.records import UnitRecord, scale_0_10


def baseline_explanation(record: UnitRecord, threshold: int = 5, n_tokens: int = 3) -> str | None:
    """E.g. ``the tokens "if", "elif" (often after "    ")``; None when nothing activates."""
    tokens: Counter[str] = Counter()
    before: Counter[str] = Counter()
    for w in record.windows_for("explain", "top"):
        for i, a in enumerate(scale_0_10(w.activations, record.stats.max)):
            tok = w.tokens[i].strip()
            if a >= threshold and tok:
                tokens[tok] += 1
                if i > 0 and w.tokens[i - 1].strip():
                    before[w.tokens[i - 1].strip()] += 1
    if not tokens:
        return None
    words = ", ".join(f'"{t}"' for t, _ in tokens.most_common(n_tokens))
    text = f"the token{'s' if len(tokens) > 1 else ''} {words}"
    if before:
        ctx, count = before.most_common(1)[0]
        if count >= 2:
            text += f' (often after "{ctx}")'
    return text
