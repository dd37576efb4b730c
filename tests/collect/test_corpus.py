"""Tests for explainer.collect.corpus: the built-in corpus, user corpora, fingerprints."""

from __future__ import annotations

import json
import re
import sysconfig
from pathlib import Path

import pytest

from explainer.collect.corpus import corpus_fingerprint, default_corpus, load_corpus, resolve_corpus
from explainer.errors import CorpusError, InputError
from store.records import Document

DOMAINS = {"code", "docs", "legal"}
STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return default_corpus()


def _chars(docs: list[Document], domain: str) -> int:
    return sum(len(d.text) for d in docs if d.domain == domain)


# --- default corpus -------------------------------------------------------------------


def test_default_corpus_is_deterministic(corpus):
    again = default_corpus()
    assert again == corpus
    assert corpus_fingerprint(again) == corpus_fingerprint(corpus)


def test_default_corpus_covers_all_domains_and_prefix_interleaves(corpus):
    assert {d.domain for d in corpus} == DOMAINS
    assert {d.domain for d in corpus[:3]} == DOMAINS
    for domain in DOMAINS:
        assert _chars(corpus, domain) > 10_000


def test_default_corpus_ids_unique_and_tagged(corpus):
    ids = [d.doc_id for d in corpus]
    assert len(ids) == len(set(ids))
    for doc in corpus:
        assert re.fullmatch(r"(code|docs|legal):[^#\s]+#\d+", doc.doc_id), doc.doc_id
        assert doc.doc_id.split(":", 1)[0] == doc.domain
        assert doc.text.strip()
    assert "code:json/decoder.py#0" in ids
    if (STDLIB / "LICENSE.txt").exists():
        assert "legal:LICENSE.txt#0" in ids


def test_default_corpus_respects_default_cap_and_chunk_sizes(corpus):
    for domain in DOMAINS:
        assert _chars(corpus, domain) <= 60_000
    limits = {"code": 3000, "docs": 1500, "legal": 3000}
    for doc in corpus:
        assert len(doc.text) <= limits[doc.domain], doc.doc_id


@pytest.mark.parametrize("cap", [500, 5_000, 20_000])
def test_default_corpus_respects_small_caps(cap):
    docs = default_corpus(max_chars_per_domain=cap)
    assert {d.domain for d in docs} == DOMAINS
    for domain in DOMAINS:
        assert 0 < _chars(docs, domain) <= cap


def test_default_corpus_zero_cap_is_an_error():
    with pytest.raises(CorpusError, match="corpus is empty"):
        default_corpus(max_chars_per_domain=0)


def test_code_documents_are_verbatim_source(corpus):
    for doc in (d for d in corpus if d.domain == "code"):
        rel = doc.doc_id.removeprefix("code:").split("#")[0]
        assert doc.text in (STDLIB / rel).read_text(encoding="utf-8"), doc.doc_id


def test_docs_documents_are_cleaned_docstrings(corpus):
    docs = [d for d in corpus if d.domain == "docs"]
    assert any("textwrap.py" in d.doc_id or "bisect.py" in d.doc_id for d in docs)
    for doc in docs:
        assert not doc.text.startswith(('"""', "'''"))
        assert doc.text == doc.text.rstrip() and not doc.text.startswith("\n")


# --- user corpora ---------------------------------------------------------------------


def test_load_txt(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Hello world.\n\nSecond paragraph.\n", encoding="utf-8")
    assert load_corpus(path) == [Document("notes.txt", "notes", "Hello world.\n\nSecond paragraph.\n")]
    assert load_corpus(str(path), default_domain="prose")[0].domain == "prose"


def test_load_jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"text": "first", "domain": "news", "id": "a"}),
        "",
        "   ",
        json.dumps({"text": "second"}),
        json.dumps({"text": "   "}),  # blank document: skipped
        json.dumps({"text": "third", "id": 7}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs = load_corpus(path)
    assert docs == [
        Document("a", "news", "first"),
        Document("data.jsonl#4", "default", "second"),
        Document("7", "default", "third"),
    ]
    assert [d.domain for d in load_corpus(path, default_domain="web")] == ["news", "web", "web"]


def test_load_directory_recursive_and_sorted(tmp_path):
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_text('{"text": "sea"}\n', encoding="utf-8")
    (tmp_path / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "readme.md").write_text("ignored", encoding="utf-8")
    docs = load_corpus(tmp_path)
    assert [(d.doc_id, d.domain, d.text) for d in docs] == [
        ("a.txt", "a", "ay"),
        ("b.txt", "b", "bee"),
        ("sub/c.jsonl#1", "default", "sea"),
    ]
    assert load_corpus(tmp_path) == docs


# --- errors ---------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match=r"does not exist: .*nope\.txt"):
        load_corpus(tmp_path / "nope.txt")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"unsupported corpus file type '\.csv'.*data\.csv"):
        load_corpus(path)


@pytest.mark.parametrize("name", ["bad.txt", "bad.jsonl"])
def test_undecodable_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=re.escape(name) + r".*not valid UTF-8"):
        load_corpus(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: not valid JSON"),
        ('{"domain": "x"}', r"line 2: expected a JSON object with a string 'text' field"),
        ('{"text": 42}', r"line 2: expected a JSON object with a string 'text' field"),
        ('["text"]', r"line 2: expected a JSON object"),
    ],
)
def test_bad_jsonl_line(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"rows\.jsonl, " + message):
        load_corpus(path)


def test_directory_without_corpus_files(tmp_path):
    (tmp_path / "readme.md").write_text("nothing here", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no \.txt or \.jsonl files"):
        load_corpus(tmp_path)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt or \.jsonl files in corpus directory .*empty_dir"):
        load_corpus(empty)


def test_all_empty_corpus(tmp_path):
    (tmp_path / "blank.txt").write_text(" \n\t\n", encoding="utf-8")
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n\n{"text": "  "}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="corpus is empty"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusError, match=r"corpus is empty: .*blank\.txt"):
        load_corpus(tmp_path / "blank.txt")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus is empty: .*empty\.jsonl"):
        load_corpus(empty)


def test_corpus_error_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load_corpus(tmp_path / "missing")


# --- fingerprint and resolve ----------------------------------------------------------


def test_fingerprint_changes_with_content():
    docs = [Document("a", "x", "hello"), Document("b", "y", "world")]
    fp = corpus_fingerprint(docs)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert corpus_fingerprint(list(docs)) == fp
    assert corpus_fingerprint([Document("a", "x", "hello!"), docs[1]]) != fp
    assert corpus_fingerprint([Document("a", "z", "hello"), docs[1]]) != fp
    assert corpus_fingerprint([Document("c", "x", "hello"), docs[1]]) != fp
    assert corpus_fingerprint(docs[::-1]) != fp


def test_resolve_corpus(tmp_path):
    for spec in (None, "default"):
        name, docs = resolve_corpus(spec, max_chars_per_domain=2_000)
        assert name == "default"
        assert {d.domain for d in docs} == DOMAINS
    path = tmp_path / "one.txt"
    path.write_text("text", encoding="utf-8")
    assert resolve_corpus(str(path)) == (str(path), [Document("one.txt", "one", "text")])
    with pytest.raises(CorpusError, match="does not exist"):
        resolve_corpus(str(tmp_path / "missing.jsonl"))
