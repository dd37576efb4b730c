"""Case sets for audit tests: a planted failure (the response names an animal) in two domains."""

from __future__ import annotations

import random

from explainer.audit.cases import Case

ANIMALS = ["zebra", "tiger", "horse", "eagle", "shark", "camel", "otter", "whale"]
OTHERS = ["table", "green", "paper", "seven", "river", "stone", "music", "bread"]


def planted_cases(per_class: int = 12, domains: tuple[str, ...] = ("alpha", "beta"), seed: int = 0) -> list[Case]:
    """``per_class`` fail cases (an animal in the answer) and as many pass cases, per domain."""
    rng = random.Random(seed)
    cases = []
    for d in domains:
        for label, words in (("fail", ANIMALS), ("pass", OTHERS)):
            for i in range(per_class):
                w = rng.choice(words)
                cases.append(
                    Case(
                        f"Question {d} {i}: name one thing.\nAnswer:",
                        f" {w}",
                        label,
                        d,
                        (1, 1 + len(w)),
                        (w,),
                        f"{d}-{label}-{i}",
                    )  # type: ignore[arg-type]
                )
    return cases
