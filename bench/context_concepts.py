"""Generated planted concepts for training the ``simulation-trained`` head.

Token-level concepts (words, keywords, punctuation, word shapes) and contextual ones (a target —
a word, a name, a number, a capitalised word — right before, right after or between context
markers, made with regex lookarounds), each with several descriptions written from templates that
name the target and the context in varied words. Everything is deterministic.

The public sets (bench/concepts.yaml, bench/concepts_context.yaml) are never trained on: a
generated concept whose tokens overlap a public concept's on the corpus (intersection over union
≥ ``MAX_IOU``) is dropped, so a near-copy of a public concept cannot slip in under another regex.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from explainer.collect.planted import Concept, TokenizedWindow, concept_activations

MAX_IOU = 0.3
"""Largest token overlap (intersection over union) a generated concept may have with a public one."""


@dataclass(frozen=True)
class Generated:
    concept: Concept
    descriptions: tuple[str, ...]
    kind: str
    """``token`` or ``context``."""
    group: str
    """Concepts of one group (same context marker) are held out together."""


TARGETS: dict[str, tuple[str, list[str]]] = {
    "word": (r"[A-Za-z]+", ["a word", "the word", "any word", "whichever word comes"]),
    "name": (r"[A-Za-z_]\w*", ["a name", "an identifier", "the name", "a variable or function name"]),
    "number": (r"\d+", ["a number", "the number", "digits", "an integer"]),
    "cap": (r"[A-Z][a-z]+", ["a capitalised word", "a word starting with a capital letter", "a Capitalised word"]),
    "lower": (r"[a-z]+", ["a lower-case word", "a word in small letters"]),
}

SYMBOLS: dict[str, list[str]] = {
    "(": ["an opening parenthesis", "a (", "an open paren"],
    ")": ["a closing parenthesis", "a )", "a close paren"],
    "[": ["an opening square bracket", "a [", "a left bracket"],
    "]": ["a closing square bracket", "a ]", "a right bracket"],
    "{": ["an opening brace", "a {", "a curly brace"],
    "}": ["a closing brace", "a }"],
    ",": ["a comma", "a ,"],
    ".": ["a dot", "a period", "a ."],
    ":": ["a colon", "a :"],
    ";": ["a semicolon"],
    "=": ["an equals sign", "a =", "the assignment sign"],
    "==": ["a double equals sign", "==", "an equality test"],
    "+": ["a plus sign", "a +"],
    "-": ["a minus sign", "a dash", "a hyphen"],
    "*": ["an asterisk", "a star", "a *"],
    "/": ["a slash", "a /"],
    "%": ["a percent sign"],
    "<": ["a less-than sign"],
    ">": ["a greater-than sign"],
    '"': ["a double quote", 'a " mark'],
    "'": ["a single quote", "an apostrophe"],
    "`": ["a backtick"],
    "_": ["an underscore"],
}

WORDS_AFTER = (
    "in of to and or is as with by the this that any such under all each no may shall will must be was are "
    "an at on into raise except lambda yield assert del elif while print len isinstance os sys it has have "
    "can should would which when where than then also other see use"
).split()
WORDS_BEFORE = "in is of and or to as if else not for the be are was has may shall will".split()

REL_AFTER = [
    "right after {c}",
    "immediately after {c}",
    "following {c}",
    "preceded by {c}",
    "that comes just after {c}",
    "directly behind {c}",
    "coming after {c}",
]
REL_BEFORE = [
    "right before {c}",
    "immediately before {c}",
    "followed by {c}",
    "that comes just before {c}",
    "in front of {c}",
    "preceding {c}",
    "that is followed by {c}",
]
WORD_NAMES = ['the word "{w}"', "the word {w}", "{w}", '"{w}"']


def _word_marker(w: str) -> list[str]:
    return [t.format(w=w) for t in WORD_NAMES]


def _describe(rng: random.Random, target: list[str], rels: list[str], ctx: list[str], n: int = 4) -> tuple[str, ...]:
    out: set[str] = set()
    for _ in range(n * 4):
        rel = rng.choice(rels).format(c=rng.choice(ctx))
        t = rng.choice(target)
        out.add(f"{t} {rel}" if rng.random() < 0.8 else f"{rel[0].upper()}{rel[1:]}: {t}")
        if len(out) >= n:
            break
    return tuple(sorted(out))


def _contextual(rng: random.Random) -> list[tuple[str, str, str, list[str], list[str], list[str]]]:
    """(name, regex, group, target phrases, relations, context phrases) of every contextual concept."""
    out = []
    for tname, (tre, tphr) in TARGETS.items():
        for sym, names in SYMBOLS.items():
            esc = re.escape(sym)
            key = f"sym{ord(sym[0])}{len(sym)}"
            out.append((f"{tname}_after_{key}", rf"(?<={esc}){tre}\b", f"after:{sym}", tphr, REL_AFTER, names))
            out.append((f"{tname}_after_{key}_sp", rf"(?<={esc} ){tre}\b", f"after:{sym}", tphr, REL_AFTER, names))
            out.append((f"{tname}_before_{key}", rf"\b{tre}(?={esc})", f"before:{sym}", tphr, REL_BEFORE, names))
        for w in WORDS_AFTER:
            out.append((f"{tname}_after_{w}", rf"(?<=\b{w} ){tre}\b", f"after:{w}", tphr, REL_AFTER, _word_marker(w)))
        for w in WORDS_BEFORE:
            out.append((f"{tname}_before_{w}", rf"\b{tre}(?= {w}\b)", f"before:{w}", tphr, REL_BEFORE, _word_marker(w)))
        out.append(
            (
                f"{tname}_line_start",
                rf"(?:^|(?<=^    )|(?<=^        )){tre}\b",
                "line_start",
                tphr,
                ["at the start of a line", "that begins a line", "first on its line"],
                [""],
            )
        )
        out.append(
            (
                f"{tname}_line_end",
                rf"\b{tre}(?=[ \t]*$)",
                "line_end",
                tphr,
                ["at the end of a line", "that ends a line", "last on its line", "right before a line break"],
                [""],
            )
        )
    for (a, b), names in {
        ("(", ")"): ["inside parentheses", "between ( and )", "alone in brackets ( )"],
        ("[", "]"): ["inside square brackets", "between [ and ]"],
        ('"', '"'): ["inside double quotes", 'between two " marks'],
        ("`", "`"): ["inside backticks", "between backticks"],
        ("(", ","): ["as the first argument, after ( and before a comma"],
        (", ", ")"): ["as the last argument, after a comma and before )"],
        (", ", ","): ["between two commas", "in the middle of a comma-separated list"],
        ("the ", " of"): ['between "the" and "of"', "after the and before of"],
        (".", "("): ["between a dot and an opening parenthesis", "as a method name called after a dot"],
    }.items():
        for tname in ("word", "name", "number"):
            tre, tphr = TARGETS[tname]
            key = f"{ord(a[0])}_{ord(b[-1])}_{len(a)}{len(b)}"
            out.append(
                (
                    f"{tname}_between_{key}",
                    rf"(?<={re.escape(a)}){tre}(?={re.escape(b)})",
                    f"between:{a}{b}",
                    tphr,
                    ["{c}"],
                    names,
                )
            )
    return out


TOKEN_WORDS: dict[str, list[str]] = {
    "python keywords": "class lambda yield with as pass break continue assert global del async await".split(),
    "builtins": "print len range open dict set int float bool object type isinstance".split(),
    "file and path words": "file files path paths directory filename".split(),
    "words about data": "data value values key keys item items".split(),
    "words about arguments": "argument arguments parameter parameters args kwargs".split(),
    "words about modules": "module modules package packages".split(),
    "words about functions": "function functions method methods call calls".split(),
    "legal parties": "party parties licensor licensee contributor contributors".split(),
    "permission words": "permission permitted grant granted rights".split(),
    "distribution words": "distribute distribution redistribute redistribution copies copy".split(),
    "modal verbs": "may must should would could can".split(),
    "conjunctions": "and or but".split(),
    "pronouns": "it they he she we you this".split(),
    "prepositions": "of to in on at by with from".split(),
    "articles": "the".split(),
    "text words": "text line lines character characters word words".split(),
    "size words": "size length number count".split(),
}
SINGLE_WORDS = (
    "class lambda yield with pass break assert print len range open dict set int object type file path data "
    "value key item argument module function method party permission distribute may must should and or of to "
    "in on by the this that which test name default result error use"
).split()
SHAPES: dict[str, tuple[str, list[str]]] = {
    "ing": (r"\b[a-z]{2,}ing\b", ["words ending in -ing", "present participles ending in ing", "-ing forms of verbs"]),
    "ed": (r"\b[a-z]{2,}ed\b", ["words ending in -ed", "past tense verbs ending in ed"]),
    "tion": (r"\b[a-z]+tion\b", ["words ending in -tion", "nouns ending in tion"]),
    "ly": (r"\b[a-z]{2,}ly\b", ["adverbs ending in -ly", "words ending in ly"]),
    "allcaps": (r"\b[A-Z]{2,}\b", ["words in all capital letters", "upper-case words", "acronyms in capitals"]),
    "underscore": (r"\b\w*_\w*\b", ["names with an underscore", "snake_case identifiers"]),
    "dunder": (r"\b__\w+__\b", ["dunder names like __init__", "names with double underscores on both sides"]),
    "long": (r"\b[A-Za-z]{11,}\b", ["very long words", "words of more than ten letters"]),
    "single_letter": (r"\b[a-z]\b", ["single letters", "one-letter names such as x or i"]),
    "float": (r"\b\d+\.\d+\b", ["decimal numbers such as 1.5", "floating point numbers"]),
    "hex": (r"\b0x[0-9a-fA-F]+\b", ["hexadecimal numbers such as 0xff"]),
    "camel": (r"\b[a-z]+[A-Z]\w*\b", ["camelCase names", "names with a capital letter inside"]),
    "pascal": (r"\b[A-Z][a-z]+[A-Z]\w*\b", ["CamelCase class names", "names made of capitalised parts"]),
}
TOKEN_TEMPLATES_ONE = ["the word {w}", 'the word "{w}"', "occurrences of {w}", "the token {w}", "{w}"]
TOKEN_TEMPLATES_LIST = ["{cat} such as {ex}", "{cat}", "words like {ex}", "{cat}, e.g. {ex}"]
SYMBOL_TEMPLATES = ["{n}", "{n} characters", "the symbol {s}", "{n} in code"]


def _token_level(rng: random.Random) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(name, regex, group, descriptions) of every token-level concept."""
    out = []
    for w in SINGLE_WORDS:
        descs = {t.format(w=w) for t in rng.sample(TOKEN_TEMPLATES_ONE, 3)}
        out.append((f"tok_{w}", rf"\b{w}\b", f"tok:{w}", tuple(sorted(descs))))
    for cat, ws in TOKEN_WORDS.items():
        if len(ws) < 2:
            continue
        descs = set()
        for t in TOKEN_TEMPLATES_LIST:
            ex = rng.sample(ws, min(3, len(ws)))
            descs.add(t.format(cat=cat, ex=", ".join(ex[:-1]) + " and " + ex[-1]))
        regex = r"(?i)\b(?:" + "|".join(ws) + r")\b"
        out.append((f"cat_{cat.replace(' ', '_')}", regex, f"cat:{cat}", tuple(sorted(descs))[:3]))
    for sym, names in SYMBOLS.items():
        descs = {t.format(n=rng.choice(names).removeprefix("a ").removeprefix("an "), s=sym) for t in SYMBOL_TEMPLATES}
        out.append((f"sym_{ord(sym[0])}_{len(sym)}", re.escape(sym), f"sym:{sym}", tuple(sorted(descs))[:3]))
    for key, (regex, descs) in SHAPES.items():
        out.append((f"shape_{key}", regex, f"shape:{key}", tuple(descs)))
    return out


def holdout(group: str, share: float) -> bool:
    """Whether ``group`` is held out (a stable hash of its name)."""
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def generate(
    windows: list[TokenizedWindow],
    public: list[Concept],
    seed: int = 0,
    min_tokens: int = 12,
    min_windows: int = 4,
    max_density: float = 0.15,
) -> tuple[list[Generated], dict[str, str]]:
    """Every generated concept that fires often enough over ``windows`` and overlaps no public
    concept; and, per dropped concept, why."""
    rng = random.Random(seed)
    raw: list[tuple[str, str, str, str, tuple[str, ...]]] = []
    for name, regex, group, descs in _token_level(rng):
        raw.append(("token", name, regex, group, descs))
    for name, regex, group, tphr, rels, ctx in _contextual(rng):
        raw.append(("context", name, regex, group, _describe(rng, tphr, rels, ctx)))
    public_sets = [(c.name, _active(c, windows)) for c in public]
    out, dropped = [], {}
    for kind, name, regex, group, descs in raw:
        concept = Concept(name, descs[0], re.compile(regex, re.MULTILINE))
        active = _active(concept, windows)
        n_win = len({w for w, _ in active})
        if len(active) < min_tokens or n_win < min_windows:
            dropped[name] = f"too rare ({len(active)} tokens in {n_win} windows)"
            continue
        if len(active) > max_density * sum(len(w.tokens) for w in windows):
            dropped[name] = "too dense"
            continue
        clash = [(p, len(active & a) / len(active | a)) for p, a in public_sets if active & a]
        clash = [(p, iou) for p, iou in clash if iou >= MAX_IOU]
        if clash:
            dropped[name] = f"overlaps public concept {clash[0][0]} (IoU {clash[0][1]:.2f})"
            continue
        out.append(Generated(concept, descs, kind, group))
    return out, dropped


def _active(concept: Concept, windows: list[TokenizedWindow]) -> set[tuple[int, int]]:
    return {(w, i) for w, win in enumerate(windows) for i, a in enumerate(concept_activations(concept, win)) if a > 0}
