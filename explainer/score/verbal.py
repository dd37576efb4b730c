"""Verbalised context: each token's surroundings said in plain English, for the sentence-embedding
simulators to compare with an explanation.

Explanations name context in words ("a name before an opening parenthesis", "the first word after
a full stop"), while a span of raw text shows the ``(`` or the ``.`` as a character, which a
sentence-embedding model reads poorly, and a sub-word token (``ere`` of ``saferepr``) is not even
next to the ``(``. :func:`render_contexts` reads a window at the level of whole words and writes,
for every token, one short sentence of facts about where it stands::

    the word saferepr, right after the word is, right before an opening parenthesis

Guard against fitting the benchmarks: the renderer is generic and concept-agnostic. Its facts are
the same for every token and every explanation — the word the token belongs to (a number, a
capitalised word or a word), the nearest item on each side (a word by itself, punctuation by its
ordinary English name from :data:`PUNCTUATION`, a line break as the start or end of a line), and
whether that punctuation ends or starts its line. It never looks at a concept, a regex or a
description; its vocabulary is the ordinary names of characters and of line positions, not
phrases copied from the planted sets (``bench/concepts*.yaml``), and its fixed connectives
("right after", "right before") are the plain English for adjacency. It is measured on the public
planted sets and on the generated held-out concepts of ``bench/context_concepts.py``, whose
descriptions come from templates written apart from it.
"""

from __future__ import annotations

import re

__all__ = ["PUNCTUATION", "RENDER_VERSION", "render_contexts"]

RENDER_VERSION = "1"
"""Stored in each score's ``details.verbal``: bump it whenever a rendered sentence changes."""

PUNCTUATION: dict[str, str] = {
    "==": "a double equals sign",
    "!=": "a not-equals sign",
    "<=": "a less-or-equal sign",
    ">=": "a greater-or-equal sign",
    "->": "an arrow",
    "**": "a double asterisk",
    "//": "a double slash",
    "+=": "a plus-equals sign",
    '"""': "triple quotes",
    "'''": "triple quotes",
    "(": "an opening parenthesis",
    ")": "a closing parenthesis",
    "[": "an opening square bracket",
    "]": "a closing square bracket",
    "{": "an opening brace",
    "}": "a closing brace",
    "<": "a less-than sign",
    ">": "a greater-than sign",
    ",": "a comma",
    ";": "a semicolon",
    ":": "a colon",
    "=": "an equals sign",
    "+": "a plus sign",
    "-": "a hyphen",
    "*": "an asterisk",
    "/": "a slash",
    "\\": "a backslash",
    "%": "a percent sign",
    "&": "an ampersand",
    "|": "a vertical bar",
    "^": "a caret",
    "~": "a tilde",
    "!": "an exclamation mark",
    "?": "a question mark",
    "#": "a hash sign",
    "@": "an at sign",
    "$": "a dollar sign",
    "'": "a quote",
    '"': "a double quote",
    "`": "a backtick",
}
"""Ordinary English names of punctuation, longest first where one is a prefix of another. A dot is
named apart (a full stop when whitespace or the end follows it, else a dot)."""

_WORD = re.compile(r"\w+")
_LONGEST = sorted(PUNCTUATION, key=len, reverse=True)


def _word(w: str) -> str:
    if w.isdigit():
        return f"the number {w}"
    if w[0].isupper():
        return f"the capitalised word {w}" if any(c.islower() for c in w) else f"the upper-case word {w}"
    return f"the word {w}"


def _symbol_at(text: str, i: int, backwards: bool) -> tuple[str, int]:
    """The punctuation mark ending at ``i`` (``backwards``) or starting at ``i``: (name, length)."""
    if text[i] == ".":
        full_stop = i + 1 >= len(text) or text[i + 1].isspace()
        return ("a full stop" if full_stop else "a dot"), 1
    for p in _LONGEST:
        if (text.startswith(p, i + 1 - len(p)) if backwards else text.startswith(p, i)) and len(p) <= (
            i + 1 if backwards else len(text) - i
        ):
            return PUNCTUATION[p], len(p)
    return f"the symbol {text[i]}", 1


def _line_ends_at(text: str, i: int) -> bool:
    """Whether only spaces and then a line break (or the end of the text) follow position ``i``."""
    j = i
    while j < len(text) and text[j] in " \t\r":
        j += 1
    return j >= len(text) or text[j] == "\n"


def _line_starts_before(text: str, i: int) -> bool | None:
    """Whether only spaces and then a line break come before ``i``; ``None`` at the window's start."""
    j = i - 1
    while j >= 0 and text[j] in " \t\r":
        j -= 1
    if j < 0:
        return None
    return text[j] == "\n"


def _before(text: str, start: int) -> str | None:
    """What stands right before position ``start`` (a word's first character), in words."""
    starts = _line_starts_before(text, start)
    if starts:
        return "at the start of a line"
    if starts is None:
        return None
    j = start - 1
    while text[j] in " \t\r":
        j -= 1
    if _WORD.match(text[j]):
        k = j
        while k > 0 and _WORD.match(text[k - 1]):
            k -= 1
        return f"right after {_word(text[k : j + 1])}"
    name, n = _symbol_at(text, j, backwards=True)
    tail = " at the start of a line" if _line_starts_before(text, j + 1 - n) else ""
    return f"right after {name}{tail}"


def _after(text: str, end: int) -> str | None:
    """What stands right after position ``end`` (one past a word's last character), in words."""
    if end >= len(text):
        return None
    if _line_ends_at(text, end):
        j = end
        while j < len(text) and text[j] in " \t\r":
            j += 1
        return "at the end of a line" if j < len(text) else None
    j = end
    while text[j] in " \t\r":
        j += 1
    if _WORD.match(text[j]):
        m = _WORD.match(text, j)
        assert m is not None
        return f"right before {_word(m.group())}"
    name, n = _symbol_at(text, j, backwards=False)
    tail = " at the end of a line" if _line_ends_at(text, j + n) and j + n < len(text) else ""
    return f"right before {name}{tail}"


def _symbols(text: str, lo: int, hi: int) -> str:
    """Punctuation-only ``text[lo:hi]`` named mark by mark (``).`` → "a closing parenthesis and a dot")."""
    names, i = [], lo
    while i < hi:
        if text[i].isspace():
            i += 1
            continue
        name, n = _symbol_at(text[:hi], i, backwards=False) if text[i] != "." else _symbol_at(text, i, False)
        names.append(name)
        i += n
    return " and ".join(names)


def render_contexts(tokens: tuple[str, ...] | list[str]) -> list[str | None]:
    """Per token: a sentence of where it stands, or ``None`` for a whitespace-only token.

    A token with word characters is described through the whole word it belongs to (``\\w+``: a
    name with underscores is one word, ``3.11`` is two numbers) and that word's neighbours; a
    punctuation-only token is named mark by mark."""
    text = "".join(tokens)
    out: list[str | None] = []
    pos = 0
    for tok in tokens:
        lo, hi = pos, pos + len(tok)
        pos = hi
        if not tok.strip():
            out.append(None)
            continue
        m = _WORD.search(tok)
        if m is None:
            out.append(_symbols(text, lo, hi))
            continue
        a, b = lo + m.start(), lo + m.end()
        while a > 0 and _WORD.match(text[a - 1]):
            a -= 1
        while b < len(text) and _WORD.match(text[b]):
            b += 1
        facts = [_word(text[a:b])]
        facts += [f for f in (_before(text, a), _after(text, b)) if f]
        out.append(", ".join(facts))
    return out
