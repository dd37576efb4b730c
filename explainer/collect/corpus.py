"""Text corpora that units are run over.

* :func:`default_corpus`: a deterministic, offline corpus with three domains, built only
  from text that exists wherever the project installs: ``code`` (source of a fixed list of
  standard-library modules), ``docs`` (the docstrings of those modules) and ``legal``
  (CPython's ``LICENSE.txt`` plus license files of installed distributions).
* :func:`load_corpus`: the user's own corpus, a ``.txt`` file, a ``.jsonl`` file (one object
  with a string ``text`` a line, optional ``domain`` and ``id``) or a directory of them.

:func:`resolve_corpus` picks one from a CLI/config spec and :func:`corpus_fingerprint`
gives a short, stable hash for caching. Every deliberate failure is a :class:`CorpusError`.

:func:`stream_corpus` is what collection uses: the same documents, read lazily, so that a corpus
far larger than ``--max-tokens`` needs costs no more memory or time than the part that is used.
A ``.txt`` file is read in pieces of at most :data:`PIECE_CHARS` characters, cut before a space
(each piece keeps the file's document id); a ``.jsonl`` file a line at a time. Errors in the
part of a corpus that is never reached are not reported.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import itertools
import json
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from explainer.collect.paths import is_symlink_loop, loops_under
from explainer.errors import CorpusError
from store.records import Document

__all__ = ["default_corpus", "load_corpus", "corpus_fingerprint", "resolve_corpus", "stream_corpus", "split_at_space"]

T = TypeVar("T")

CODE_MODULES: tuple[str, ...] = tuple(
    sorted(
        (
            "bisect.py",
            "calendar.py",
            "colorsys.py",
            "csv.py",
            "dataclasses.py",
            "difflib.py",
            "fractions.py",
            "heapq.py",
            "ipaddress.py",
            "json/decoder.py",
            "json/encoder.py",
            "pprint.py",
            "random.py",
            "shlex.py",
            "statistics.py",
            "string.py",
            "textwrap.py",
        )
    )
)
"""Standard-library files (relative to the stdlib directory) used for ``code``/``docs``."""

CODE_CHUNK_CHARS = 3000
DOCS_CHUNK_CHARS = 1500
LEGAL_CHUNK_CHARS = 3000
USER_SUFFIXES = (".txt", ".jsonl")
PIECE_CHARS = 1 << 18
"""Largest piece of a ``.txt`` file held in memory at once while streaming."""
READ_BYTES = 1 << 16
DOMAIN_RE = re.compile(r"^[^\x00-\x1f\x7f,]{1,200}$")
"""What a corpus domain may be; search's ``--domain`` accepts exactly the same."""
DOMAIN_RULE = "a non-empty string of up to 200 characters without a comma or control characters (search filters on it)"

# Preferred cut points, best first: before a top-level def/class/decorator, before any
# unindented line after a blank line, after any blank line, after any newline.
_CUTS = (
    re.compile(r"\n[ \t]*\n(?=(?:async\s+def|def|class)\b|@)"),
    re.compile(r"\n[ \t]*\n(?=\S)"),
    re.compile(r"\n[ \t]*\n"),
    re.compile(r"\n"),
)


def _split(text: str, limit: int) -> list[str]:
    """Cut ``text`` into non-blank pieces of at most ``limit`` chars at the best boundaries."""
    pieces, start = [], 0
    while len(text) - start > limit:
        window = text[start : start + limit + 1]  # one extra char for the look-aheads
        cut = 0
        for pattern in _CUTS:
            ends = [m.end() for m in pattern.finditer(window) if m.end() <= limit]
            if ends:
                cut = ends[-1]
                break
        cut = cut or limit
        pieces.append(text[start : start + cut])
        start += cut
    pieces.append(text[start:])
    return [re.sub(r"\A(?:[ \t]*\n)+", "", p).rstrip() for p in pieces if p.strip()]


def _pack(texts: Iterable[str], limit: int) -> list[str]:
    """Join short texts with blank lines into groups of at most ``limit`` chars."""
    groups: list[str] = []
    for text in texts:
        for piece in _split(text, limit):
            if groups and len(groups[-1]) + 2 + len(piece) <= limit:
                groups[-1] += "\n\n" + piece
            else:
                groups.append(piece)
    return groups


def _round_robin(groups: Iterable[list[T]]) -> list[T]:
    return [x for batch in itertools.zip_longest(*groups) for x in batch if x is not None]


def _take(docs: Iterable[Document], cap: int) -> list[Document]:
    """Documents in order until ``cap`` chars; the one that overflows is cut at a newline."""
    out: list[Document] = []
    used = 0
    for doc in docs:
        room = max(cap - used, 0)
        if len(doc.text) > room:
            cut = doc.text.rfind("\n", 0, room)
            text = doc.text[: cut if cut > 0 else room].rstrip()
            if text:
                out.append(replace(doc, text=text))
            break
        out.append(doc)
        used += len(doc.text)
    return out


def _read_text_quietly(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _docstring(node: ast.AST) -> str | None:
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return ast.get_docstring(node, clean=True) if isinstance(node, documented) else None


def _defs(node: ast.AST) -> Iterable[ast.AST]:
    """Class and function definitions in source order (statements only: fast)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.stmt, ast.excepthandler)):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                yield child
            yield from _defs(child)


def _code_and_docs(stdlib: Path) -> tuple[list[Document], list[Document]]:
    code: list[list[Document]] = []
    docs: list[list[Document]] = []  # one list per module, interleaved below
    for rel in CODE_MODULES:
        source = _read_text_quietly(stdlib / rel)
        if source is None:
            continue
        code.append([Document(f"code:{rel}#{i}", "code", t) for i, t in enumerate(_split(source, CODE_CHUNK_CHARS))])
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        nodes = [tree, *_defs(tree)]
        strings = [s for s in (_docstring(n) for n in nodes) if s and s.strip()]
        docs.append([Document(f"docs:{rel}#{i}", "docs", t) for i, t in enumerate(_pack(strings, DOCS_CHUNK_CHARS))])
    return _round_robin(code), _round_robin(docs)


def _is_license(parts: tuple[str, ...]) -> bool:
    """``parts`` is a path relative to a ``*.dist-info`` folder."""
    if len(parts) >= 2 and parts[0] == "licenses":
        return True
    return len(parts) == 1 and parts[0].upper().startswith(("LICENSE", "LICENCE", "COPYING"))


def _license_files(dist: importlib.metadata.Distribution) -> list[Path]:
    root = getattr(dist, "_path", None)  # fast path: the dist-info folder itself
    if isinstance(root, Path) and root.is_dir() and root.name.endswith(".dist-info"):
        found = [p for p in root.rglob("*") if p.is_file() and _is_license(p.relative_to(root).parts)]
    else:
        found = [
            Path(str(dist.locate_file(f)))
            for f in dist.files or ()
            if f.parts and f.parts[0].endswith(".dist-info") and _is_license(f.parts[1:])
        ]
    return sorted(found, key=lambda p: p.as_posix())


def _legal(stdlib: Path) -> list[Document]:
    sources: list[tuple[str, list[str]]] = []
    cpython = _read_text_quietly(stdlib / "LICENSE.txt")
    if cpython:
        sources.append(("LICENSE.txt", [cpython]))
    named: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        found = re.search(r"^Name:[ \t]*(\S+)", meta, re.M)  # cheaper than dist.metadata
        name = re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else ""
        if name and name not in named:  # first on sys.path wins, like import does
            named[name] = dist
    for name in sorted(named):
        texts = [t for t in map(_read_text_quietly, _license_files(named[name])) if t]
        sources.append((name, texts))
    seen: set[str] = set()
    groups: list[list[Document]] = []
    for label, texts in sources:
        chunks: list[str] = []  # de-duplicated by content hash, per chunk (many share Apache-2.0)
        for chunk in (c for text in texts for c in _split(text, LEGAL_CHUNK_CHARS)):
            digest = hashlib.sha256(" ".join(chunk.split()).encode()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                chunks.append(chunk)
        if chunks:
            groups.append([Document(f"legal:{label}#{i}", "legal", t) for i, t in enumerate(chunks)])
    return _round_robin(groups)


def default_corpus(max_chars_per_domain: int = 60_000) -> list[Document]:
    """The built-in ``code``/``docs``/``legal`` corpus, domains interleaved round-robin."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code, docs = _code_and_docs(stdlib)
    domains = [_take(d, max_chars_per_domain) for d in (code, docs, _legal(stdlib))]
    result = _round_robin(domains)
    if not result:
        raise CorpusError(f"corpus is empty: default corpus (stdlib {stdlib}, cap {max_chars_per_domain})")
    return result


def split_at_space(text: str, limit: int) -> int:
    """Where to cut ``text`` so that the first part has at most ``limit`` chars: before the last
    whitespace in it (a word keeps its leading space, as byte-level BPE tokenizers split), else
    at ``limit``; ``len(text)`` when it fits."""
    if len(text) <= limit:
        return len(text)
    cut = max(text.rfind(" ", 1, limit + 1), text.rfind("\n", 1, limit + 1), text.rfind("\t", 1, limit + 1))
    return cut if cut > 0 else limit


def _read_decoded(path: Path) -> Iterator[str]:
    """The file's text in blocks (UTF-8, a BOM dropped); an undecodable byte names its offset."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(READ_BYTES)
                held = len(decoder.getstate()[0])  # bytes of a character cut by the previous block
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as exc:
                    at = offset - held + exc.start
                    raise CorpusError(f"{path}: not valid UTF-8 (undecodable byte at offset {at})") from exc
                offset += len(raw)
                if text:
                    yield text
                if not raw:
                    return
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read corpus file: {exc}") from exc


def _iter_txt(path: Path, rel: str, domain: str) -> Iterator[Document]:
    buf = ""
    for block in _read_decoded(path):
        buf += block
        while len(buf) > PIECE_CHARS:
            cut = split_at_space(buf, PIECE_CHARS)
            if buf[:cut].strip():
                yield Document(rel, domain, buf[:cut])
            buf = buf[cut:]
    if buf.strip():
        yield Document(rel, domain, buf)


def _iter_jsonl(path: Path, rel: str, default_domain: str | None) -> Iterator[Document]:
    offset = 0
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, also when the reader stops early
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read corpus file: {exc}") from exc
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}: not valid UTF-8 (undecodable byte at offset {offset + exc.start})") from exc
            offset += len(raw)
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from exc
            except RecursionError as exc:
                raise CorpusError(f"{where}: JSON nested too deeply") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise CorpusError(f"{where}: expected a JSON object with a string 'text' field")
            domain = obj.get("domain", default_domain or "default")
            doc_id = obj.get("id", f"{rel}#{lineno}")
            if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
                raise CorpusError(f"{where}: 'domain' must be {DOMAIN_RULE}")
            if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
                raise CorpusError(f"{where}: 'id' must be a string or an integer")
            if obj["text"].strip():
                yield Document(str(doc_id), domain, obj["text"])


def _corpus_files(path: Path) -> list[tuple[Path, str]]:
    """The corpus files under ``path`` with their names relative to it; bad paths fail here."""
    if not path.exists():
        if is_symlink_loop(path):
            raise CorpusError(f"corpus path {path} is a symlink loop")
        raise CorpusError(f"corpus path does not exist: {path}")
    if path.is_dir():
        entries = list(path.rglob("*"))
        loops = loops_under(path, entries)
        if loops:
            raise CorpusError(f"corpus directory {path}: symlink loop at {', '.join(loops[:5])}")
        files = sorted(
            (p for p in entries if p.is_file() and p.suffix.lower() in USER_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise CorpusError(f"no .txt or .jsonl files in corpus directory {path}")
        return [(p, p.relative_to(path).as_posix()) for p in files]
    if path.suffix.lower() in USER_SUFFIXES:
        return [(path, path.name)]
    raise CorpusError(
        f"unsupported corpus file type {path.suffix or '(none)'!r}: {path}; expected a .txt or .jsonl file or a directory"
    )


def _iter_corpus(path: Path, pairs: list[tuple[Path, str]], default_domain: str | None) -> Iterator[Document]:
    seen: dict[str, Path] = {}
    for file, rel in pairs:
        if file.suffix.lower() == ".txt":
            domain = default_domain or file.stem
            if not DOMAIN_RE.match(domain):
                what = "the domain given" if default_domain else "its file name, the domain of a .txt file,"
                raise CorpusError(f"{file}: {what} must be {DOMAIN_RULE}: {domain!r}")
            docs = _iter_txt(file, rel, domain)
        else:
            docs = _iter_jsonl(file, rel, default_domain)
        first = True
        for doc in docs:
            if first or file.suffix.lower() != ".txt":  # later pieces of a .txt keep its id
                if doc.doc_id in seen:
                    raise CorpusError(f"{file}: duplicate document id {doc.doc_id!r} (first in {seen[doc.doc_id]})")
                seen[doc.doc_id] = file
            first = False
            yield doc
    if not seen:
        raise CorpusError(f"corpus is empty: {path} holds no non-blank documents")


def iter_corpus(path: str | Path, default_domain: str | None = None) -> Iterator[Document]:
    """The documents of a user corpus (see :func:`load_corpus`), read lazily; a missing path or an
    unsupported file type fails at once, errors inside the files when they are reached."""
    path = Path(path)
    return _iter_corpus(path, _corpus_files(path), default_domain)


def load_corpus(path: str | Path, default_domain: str | None = None) -> list[Document]:
    """Load a user corpus from a ``.txt``/``.jsonl`` file or a directory of them (a ``.txt`` larger
    than :data:`PIECE_CHARS` comes as several pieces with the file's id)."""
    return list(iter_corpus(path, default_domain))


def corpus_fingerprint(docs: list[Document]) -> str:
    """First 16 hex chars of a sha256 over ids, domains and texts, in order."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(json.dumps([doc.doc_id, doc.domain, doc.text]).encode() + b"\n")
    return h.hexdigest()[:16]


def stream_corpus(spec: str | None, max_chars_per_domain: int = 60_000) -> tuple[str, Iterator[Document]]:
    """Like :func:`resolve_corpus`, with the documents read lazily (the built-in corpus is small)."""
    if spec is None or not spec.strip() or spec.strip() == "default":
        return "default", iter(default_corpus(max_chars_per_domain))
    path = Path(spec).expanduser()
    return str(path), iter_corpus(path)


def resolve_corpus(spec: str | None, max_chars_per_domain: int = 60_000) -> tuple[str, list[Document]]:
    """``None``, ``""`` or ``"default"`` → the built-in corpus; anything else is a path."""
    if spec is None or not spec.strip() or spec.strip() == "default":
        return "default", default_corpus(max_chars_per_domain)
    path = Path(spec).expanduser()
    return str(path), load_corpus(path)
