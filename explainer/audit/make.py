"""``explainer cases make``: an offline factual case set, built from data this machine has.

Five domains, each question with its accepted answers:

- ``capitals`` and ``elements``: the small data file ``data/facts.json`` shipped with the package;
- ``arithmetic``: sums, differences and products in three bands of difficulty (operands up to 5,
  up to 9, sums and differences up to 30), a third each, answered by Python;
- ``python``: results of built-in string operations, computed by running them (``'abc'.upper()``);
- ``dates``: the week and the calendar from the standard library (``calendar``).

The subject model answers each question ``samples`` times (sampled at ``temperature``) after a
two-example prompt; a question answered right every time becomes a ``pass`` case, wrong every
time a ``fail`` case (the consistency filter of the H-neurons paper), anything mixed is dropped.
An answer is right when its normalised text starts with a normalised accepted answer.
"""

from __future__ import annotations

import calendar
import json
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainer.audit.cases import Case

FACTS = Path(__file__).resolve().parent / "data" / "facts.json"
DOMAINS = ("capitals", "elements", "arithmetic", "python", "dates")


@dataclass(frozen=True)
class Question:
    domain: str
    text: str
    truth: tuple[str, ...]


_SHOTS = {
    "capitals": [("What is the capital of Spain?", "Madrid"), ("What is the capital of Japan?", "Tokyo")],
    "elements": [("What is the chemical symbol of Oxygen?", "O"), ("What is the chemical symbol of Iron?", "Fe")],
    "arithmetic": [("What is 3 + 4?", "7"), ("What is 6 * 2?", "12")],
    "python": [("In Python, what does 'cat'.upper() return?", "'CAT'"), ("In Python, what is len('hello')?", "5")],
    "dates": [("What day comes after Monday?", "Tuesday"), ("What month comes after June?", "July")],
}


def normalise(text: str) -> str:
    """Lower case, accents and punctuation removed (except digits, letters, spaces), spaces collapsed."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9 ]+", " ", text.lower())
    return " ".join(text.split())


def is_right(answer: str, truth: tuple[str, ...] | list[str]) -> bool:
    """Whether ``answer`` starts with one of the accepted answers (normalised, on a word boundary)."""
    a = normalise(answer)
    for t in truth:
        n = normalise(t)
        if n and (a == n or a.startswith(n + " ")):
            return True
    return False


def _questions(rng: random.Random, per_domain: int) -> list[Question]:
    facts = json.loads(FACTS.read_text(encoding="utf-8"))
    shot_q = {q for shots in _SHOTS.values() for q, _ in shots}
    out: list[Question] = []
    caps = [
        Question("capitals", f"What is the capital of {c['country']}?", tuple(c["aliases"])) for c in facts["capitals"]
    ]
    els = [
        Question("elements", f"What is the chemical symbol of {e['name']}?", (e["symbol"],)) for e in facts["elements"]
    ]
    arith = _arithmetic(rng, per_domain, shot_q)
    words = ["dog", "apple", "house", "river", "python", "green", "table", "music", "tiger", "cloud", "stone"]
    py = []
    for w in words:
        py.append(Question("python", f"In Python, what does '{w}'.upper() return?", (f"'{w.upper()}'", w.upper())))
        py.append(Question("python", f"In Python, what is len('{w}')?", (str(len(w)),)))
        py.append(Question("python", f"In Python, what does '{w}'[0] return?", (f"'{w[0]}'", w[0])))
        py.append(Question("python", f"In Python, what does '{w}'.capitalize() return?", (f"'{w.capitalize()}'",)))
    dates = []
    days, months = list(calendar.day_name), list(calendar.month_name)[1:]
    for i, d in enumerate(days):
        dates.append(Question("dates", f"What day comes after {d}?", (days[(i + 1) % 7],)))
        dates.append(Question("dates", f"What day comes before {d}?", (days[(i - 1) % 7],)))
    for i, m in enumerate(months):
        dates.append(Question("dates", f"What month comes after {m}?", (months[(i + 1) % 12],)))
        dates.append(Question("dates", f"What month comes before {m}?", (months[(i - 1) % 12],)))
        n = calendar.monthrange(2023, i + 1)[1]
        dates.append(Question("dates", f"How many days are there in {m} 2023?", (str(n),)))
    for group in (caps, els, arith, py, dates):
        uniq = list({q.text: q for q in group if q.text not in shot_q}.values())
        rng.shuffle(uniq)
        out.extend(uniq[:per_domain])
    return out


# The three arithmetic bands, asked in equal shares: the larger operand at most 5, 6 to 9, 10 to 30
# (the last without products). Sampled 4 times at temperature 0.7, SmolLM2-135M answered 11 of 24
# sums of 1-5 right every time and 3 wrong; 3 and 9 of 24 single-digit questions; 0 and 15 of 24
# sums and differences up to 30: the easy band gives the domain its right answers, the hard one
# its failures.
ARITHMETIC_BANDS = ((1, 5, "+-*"), (6, 9, "+-*"), (10, 30, "+-"))


def arithmetic_band(text: str) -> int:
    """Which band of ``ARITHMETIC_BANDS`` the question ``What is A op B?`` belongs to."""
    top = max(int(t) for t in text.removeprefix("What is ").rstrip("?").split()[::2])
    return next(i for i, (lo, hi, _) in enumerate(ARITHMETIC_BANDS) if lo <= top <= hi)


def _arithmetic(rng: random.Random, n: int, skip: set[str]) -> list[Question]:
    """``n`` distinct questions, a third from each band (the easy band has about 50 distinct
    questions; past that the others fill in)."""
    bands: list[list[Question]] = []
    for lo, hi, ops in ARITHMETIC_BANDS:
        seen: dict[str, Question] = {}
        for _ in range(20 * n + 100):
            a, b = rng.randint(1, hi), rng.randint(2, hi)
            if max(a, b) < lo:
                continue
            op = rng.choice(ops)
            a, b = (a, b) if op != "-" or a >= b else (b, a)
            text = f"What is {a} {op} {b}?"
            if text not in skip:
                seen.setdefault(text, Question("arithmetic", text, (str(eval(f"{a}{op}{b}")),)))
            if len(seen) >= n:
                break
        bands.append(list(seen.values()))
    out: list[Question] = []
    while len(out) < n and any(bands):
        for band in bands:
            if band and len(out) < n:
                out.append(band.pop(0))
    return out


def prompt_of(q: Question) -> str:
    shots = "".join(f"Question: {sq}\nAnswer: {sa}\n\n" for sq, sa in _SHOTS[q.domain])
    return f"{shots}Question: {q.text}\nAnswer:"


def _answers(lm: Any, prompts: list[str], samples: int, temperature: float, max_new_tokens: int) -> list[list[str]]:
    import torch

    tok = lm.tokenizer
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True).to(lm.device)
    with torch.no_grad():
        out = lm.model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            num_return_sequences=samples,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
        )
    tok.padding_side = "right"
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    cut = [t.split("\n")[0].rstrip() for t in texts]
    return [cut[i * samples : (i + 1) * samples] for i in range(len(prompts))]


def make_cases(
    lm: Any,
    *,
    per_domain: int = 36,
    samples: int = 4,
    temperature: float = 0.7,
    seed: int = 0,
    batch: int = 24,
    max_new_tokens: int = 6,
) -> tuple[list[Case], dict[str, dict[str, int]]]:
    """The consistent cases and, per domain, how many questions were ``asked``, answered
    ``right`` and ``wrong`` every time, or ``mixed``, and the share of right samples."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    questions = _questions(rng, per_domain)
    stats: dict[str, dict[str, Any]] = {}
    cases: list[Case] = []
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        answers = _answers(lm, [prompt_of(q) for q in chunk], samples, temperature, max_new_tokens)
        for q, ans in zip(chunk, answers, strict=True):
            s = stats.setdefault(q.domain, {"asked": 0, "right": 0, "wrong": 0, "mixed": 0, "right_samples": 0})
            s["asked"] += 1
            rights = [is_right(a, q.truth) for a in ans]
            s["right_samples"] += sum(rights)
            nonempty = [a for a in ans if a.strip()]
            if not nonempty or (any(rights) and not all(rights)):
                s["mixed"] += 1
                continue
            label = "pass" if all(rights) else "fail"
            s["right" if label == "pass" else "wrong"] += 1
            response = Counter(nonempty).most_common(1)[0][0]
            lead = len(response) - len(response.lstrip())
            span = (lead, len(response)) if lead else None
            cid = f"{q.domain}-{len([c for c in cases if c.domain == q.domain]) + 1}"
            cases.append(Case(prompt_of(q), response, label, q.domain, span, q.truth, cid))  # type: ignore[arg-type]
    for s in stats.values():
        s["sample_accuracy"] = round(s.pop("right_samples") / max(1, s["asked"] * samples), 3)
    return cases, stats
