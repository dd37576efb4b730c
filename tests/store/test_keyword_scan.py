"""The in-memory keyword ranking gives FTS5's ranking: the same tokens, the same BM25, the filters inside."""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path

import pytest

from store import keyword
from store.keyword import query_terms
from store.keyword_scan import KeywordScan, tokens
from store.schema import keyword_docs
from store.sql import SQLStore

ROOT = Path(__file__).resolve().parents[2]


def fts5_tokens(texts: list[str]) -> list[list[str]]:
    """What SQLite's FTS5 ``porter unicode61`` tokenizer makes of each text, in order."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61')")
    con.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    con.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", list(enumerate(texts)))
    out: list[list[tuple[int, str]]] = [[] for _ in texts]
    for term, doc, _col, offset in con.execute("SELECT term, doc, col, offset FROM v"):
        out[doc].append((offset, term))
    return [[t for _, t in sorted(toks)] for toks in out]


def test_tokens_are_fts5s_tokens():
    text = " ".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "README.md", ROOT / "bench/concepts.yaml", ROOT / "bench/bench_search.py")
    )
    words = sorted(set(re.findall(r"\S+", text)))[:4000]
    words += [
        "médical",
        "naïve",
        "Ünïcödé",
        "ÆON",
        "日本語",
        "x2",
        "3.11",
        "co-operate",
        "running",
        "ponies",
        "caresses",
    ]
    words += ["Øresund", "ﬁne", "e-mail", "don't", "CamelCase", "snake_case", "a" * 70, "hyperparameterisation"]
    words += ["a" * 64 + "ing", "a" * 61 + "ing"]  # FTS5 stems words of 3 to 64 bytes
    words += ["straße", "größes", "ξs", "Việt", "ΣΊΣΥΦΟΣ", "ガス", "العَرَبِيَّة", "हिन्दी", "\ue000x", "naïve café"]
    expected = fts5_tokens(words)
    assert [tokens(w) for w in words] == expected


def docs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    vocab = (
        "python code function definitions names parenthesis closing opening legal license warranty text numbers "
        "version dotted dates years citations references running runs runner the of in a quotes commas colon"
    ).split()
    rows = []
    for i in range(n):
        words = [rng.choice(vocab) for _ in range(rng.randint(2, 14))]
        domains = rng.sample(["code", "legal", "docs", "médical notes"], rng.randint(1, 2))
        rows.append(
            dict(
                explanation_id=f"e{i:05d}",
                unit_id=f"m{i % 2}/layers.{i % 5}.mlp/{i}",
                collection_id="c",
                model=f"m{i % 2}",
                hookpoint=f"layers.{i % 5}.mlp" if i % 3 else f"layers.{i % 5}",
                layer=i % 5,
                source="mlp" if i % 3 else "resid",
                explainer_model="x",
                domains=keyword.domains_field(sorted(domains)),
                score=-2.0 if i % 7 == 0 else round(rng.uniform(-0.2, 0.9), 3),
                text=" ".join(words),
            )
        )
    return rows


def put_rows(store: SQLStore, rows: list[dict]) -> None:
    """Keyword rows written as they are (no explanations behind them: foreign keys off on this connection)."""
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        ids = [r["explanation_id"] for r in rows]
        conn.execute(keyword_docs.delete().where(keyword_docs.c.explanation_id.in_(ids)))
        conn.execute(keyword_docs.insert(), rows)
        conn.commit()


QUERIES = [
    "python function definitions",
    "closing parenthesis",
    "running the runner",  # three words, one stem: counted three times, as FTS5 counts its three phrases
    "legal license warranty text",
    "dotted version numbers",
    "zebra",
    "the of",
]
FILTERS = [
    {},
    {"model": "m1"},
    {"layer": 3, "source": "mlp"},
    {"min_score": 0.4},
    {"domain": "médical notes"},
    {"model": "m0", "domain": "legal", "min_score": 0.0},
    {"model": "nope"},
]


def assert_same_ranking(store: SQLStore, scan: KeywordScan, limit: int = 25) -> None:
    for q in QUERIES:
        for f in FILTERS:
            sql = keyword.search(store, q, limit=limit, **f)
            mine = scan.top(query_terms(q), limit, **f)
            assert [e for e, _ in mine] == [e for e, _ in sql], (q, f)
            for (_, a), (_, b) in zip(mine, sql):
                assert a == pytest.approx(b, rel=1e-9), (q, f)
    assert any(keyword.search(store, q, limit=limit) for q in QUERIES)  # the comparison was not of empty lists


def test_ranking_equals_fts5_with_filters_and_follows_writes(tmp_path):
    store = SQLStore(f"sqlite:///{tmp_path / 'k.db'}")
    rows = docs(1500)
    put_rows(store, rows)
    scan = store.load_keyword_scan()
    assert len(scan) == 1500
    assert_same_ranking(store, scan)

    # rewrite a third of the rows, delete some, add new ones: in SQL, then refreshed into the scan
    new = docs(2000, seed=1)
    changed = new[:1500:3] + new[1500:]
    put_rows(store, changed)
    gone = [r["explanation_id"] for r in rows[1::10]]
    with store.engine.begin() as conn:
        conn.execute(keyword_docs.delete().where(keyword_docs.c.explanation_id.in_(gone)))
    assert store.refresh_keyword_scan() is not scan  # more than a fifth of the rows changed: rebuilt whole
    scan = store.keyword_scan
    assert scan is not None and scan.n_dead == 0 and len(scan) == 2000 - len(gone)
    assert_same_ranking(store, scan)
    assert store.keyword_search("python", limit=5) == scan.top(["python"], 5)  # auto: the loaded scan
    assert store.keyword_search("python", limit=5, engine="sql") == keyword.search(store, "python", limit=5)


def test_small_updates_without_compaction(tmp_path):
    store = SQLStore(f"sqlite:///{tmp_path / 'k.db'}")
    rows = docs(400)
    put_rows(store, rows)
    scan = store.load_keyword_scan()
    rows[5]["text"] = "zebra crossing"
    put_rows(store, [rows[5]])
    assert store.refresh_keyword_scan() is scan  # re-read from the change log, in place
    assert scan.n_dead == 1
    assert scan.top(["zebra"], 5) and scan.top(["zebra"], 5)[0][0] == rows[5]["explanation_id"]
    assert_same_ranking(store, scan)


def test_empty_and_bad_input(tmp_path):
    store = SQLStore(f"sqlite:///{tmp_path / 'k.db'}")
    scan = store.load_keyword_scan()
    assert scan.top(["python"], 10) == [] and len(scan) == 0
    put_rows(store, docs(3))
    scan = store.refresh_keyword_scan()
    assert scan is not None and len(scan) == 3
    assert scan.top([], 10) == [] and scan.top(["python"], 0) == []
    with pytest.raises(ValueError, match="engine must be auto, sql or scan"):
        store.keyword_search("python", limit=5, engine="fts")


def test_compaction_by_many_small_updates(tmp_path):
    store = SQLStore(f"sqlite:///{tmp_path / 'k.db'}")
    rows = docs(500)
    put_rows(store, rows)
    scan = store.load_keyword_scan()
    for i in range(0, 150, 10):  # each refresh a few rows (in place), over a fifth in all: compacted on the way
        for r in rows[i : i + 10]:
            r["text"] += " zebra"
        put_rows(store, rows[i : i + 10])
        assert store.refresh_keyword_scan() is scan
    assert scan.n_dead < 100 and len(scan) == 500
    assert_same_ranking(store, scan)
    assert len(scan.top(["zebra"], 500)) == 150


def test_a_log_pruned_past_what_the_ranking_read_makes_it_reload(tmp_path):
    from store.schema import keyword_changes

    store = SQLStore(f"sqlite:///{tmp_path / 'k.db'}")
    rows = docs(300)
    put_rows(store, rows)
    scan = store.load_keyword_scan()
    rows[0]["text"] = "zebra"
    put_rows(store, rows[:1])
    with store.engine.begin() as conn:  # as changes_since prunes a long log: entries this ranking never read
        conn.execute(keyword_changes.delete())
    put_rows(store, rows[1:2])  # a later change: the gap before it is visible
    fresh = store.refresh_keyword_scan()
    assert fresh is not scan and fresh is store.keyword_scan
    assert fresh.top(["zebra"], 5)[0][0] == rows[0]["explanation_id"]
    assert_same_ranking(store, fresh)
