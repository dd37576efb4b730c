"""Case sets: what an audit learns from. A JSONL file, one case per line::

    {"prompt": "...", "response": "...", "label": "fail" | "pass", "domain": "capitals",
     "answer_span": [start, end],      # optional: characters of the answer inside the response
     "truth": ["Paris"],               # optional: accepted right answers (the causal test needs them)
     "id": "capitals-3"}               # optional

Reading checks every line and names the line at fault. :func:`usable_domains` applies the
fitting rules: two classes overall, and a domain with fewer than ``min_per_class`` cases of
either class is warned about and left out of the per-domain fits (never silently fitted).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from explainer.errors import InputError

Label = Literal["fail", "pass"]
LABELS: tuple[str, ...] = ("fail", "pass")
MIN_PER_CLASS = 6
"""Fewest cases of each class a domain needs to get its own probe, threshold and calibration."""


class CaseSetError(InputError):
    """A case set cannot be read or cannot be audited (a missing field, one class only, ...)."""


@dataclass(frozen=True)
class Case:
    """One prompt/response pair and whether the response is a failure."""

    prompt: str
    response: str
    label: Label
    domain: str
    answer_span: tuple[int, int] | None = None
    """Characters ``[start, end)`` of the answer inside ``response``; ``None`` means the whole response."""
    truth: tuple[str, ...] = field(default_factory=tuple)
    """Accepted right answers, when known."""
    id: str = ""

    @property
    def failed(self) -> bool:
        return self.label == "fail"

    @property
    def span(self) -> tuple[int, int]:
        return self.answer_span if self.answer_span is not None else (0, len(self.response))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["answer_span"] = list(self.answer_span) if self.answer_span is not None else None
        d["truth"] = list(self.truth)
        return {k: v for k, v in d.items() if v not in (None, [], "")}


def parse_case(obj: Any, where: str) -> Case:
    """One case from a decoded JSON object; errors start with ``where``."""
    if not isinstance(obj, dict):
        raise CaseSetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("prompt", "response", "label", "domain") if k not in obj]
    if missing:
        raise CaseSetError(f"{where}: missing field(s) {', '.join(missing)}")
    for k in ("prompt", "response", "domain"):
        if not isinstance(obj[k], str):
            raise CaseSetError(f"{where}: {k} must be a string")
    if not obj["response"].strip():
        raise CaseSetError(f"{where}: the response is empty")
    if not obj["domain"].strip():
        raise CaseSetError(f"{where}: the domain is empty")
    label = obj["label"]
    if label not in LABELS:
        raise CaseSetError(f"{where}: label must be 'fail' or 'pass', not {label!r}")
    span = obj.get("answer_span")
    if span is not None:
        ok = isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)
        if not ok or not 0 <= span[0] < span[1] <= len(obj["response"]):
            raise CaseSetError(
                f"{where}: answer_span must be [start, end] with 0 <= start < end <= {len(obj['response'])}, "
                f"not {span!r}"
            )
    truth = obj.get("truth", [])
    if isinstance(truth, str):
        truth = [truth]
    if not isinstance(truth, list) or not all(isinstance(t, str) for t in truth):
        raise CaseSetError(f"{where}: truth must be a string or a list of strings")
    return Case(
        obj["prompt"],
        obj["response"],
        label,
        obj["domain"].strip(),
        tuple(span) if span is not None else None,
        tuple(truth),
        str(obj.get("id", "")),
    )


def read_cases(path: str | Path) -> list[Case]:
    """Every case of a JSONL file; a line that is not a valid case is a :class:`CaseSetError`
    naming its line number. Blank lines are skipped."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseSetError(f"cannot read case set {p}: {exc}") from exc
    cases = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaseSetError(f"{p} line {n}: not JSON ({exc.msg})") from None
        cases.append(parse_case(obj, f"{p} line {n}"))
    if not cases:
        raise CaseSetError(f"{p}: no cases")
    return cases


def write_cases(path: str | Path, cases: list[Case]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")


def case_set_hash(cases: list[Case]) -> str:
    """sha256 of the cases' canonical JSON (independent of file formatting)."""
    h = hashlib.sha256()
    for c in cases:
        h.update(json.dumps(c.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def class_counts(cases: list[Case]) -> dict[str, dict[str, int]]:
    """``{domain: {"fail": n, "pass": m}}``."""
    out: dict[str, Counter[str]] = {}
    for c in cases:
        out.setdefault(c.domain, Counter())[c.label] += 1
    return {d: {lab: cnt.get(lab, 0) for lab in LABELS} for d, cnt in sorted(out.items())}


def usable_domains(cases: list[Case], min_per_class: int = MIN_PER_CLASS) -> tuple[list[str], list[str]]:
    """``(domains that can be fitted, warnings)``. The whole set must hold both classes with at
    least ``min_per_class`` cases each, else :class:`CaseSetError`; a domain short of either class
    is left out with a warning."""
    counts = class_counts(cases)
    total: Counter[str] = Counter(c.label for c in cases)
    if len(total) < 2:
        only = next(iter(total))
        raise CaseSetError(f"the case set has only one class ({only!r}, {total[only]} cases): a probe needs both")
    short = [lab for lab in LABELS if total[lab] < min_per_class]
    if short:
        raise CaseSetError(
            f"too few cases to fit: {', '.join(f'{total[lab]} {lab!r}' for lab in LABELS)} (at least "
            f"{min_per_class} of each class are needed)"
        )
    usable, warnings = [], []
    for d, cnt in counts.items():
        if min(cnt.values()) < min_per_class:
            warnings.append(
                f"domain {d!r} left out of per-domain fits: {cnt['fail']} fail / {cnt['pass']} pass "
                f"(needs {min_per_class} of each)"
            )
        else:
            usable.append(d)
    return usable, warnings
