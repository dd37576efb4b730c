"""The corpus is streamed: memory stays flat as the file grows, only what ``--max-tokens`` uses is
tokenised, and the fingerprint covers what is used (measured in this process with tracemalloc)."""

from __future__ import annotations

import tracemalloc

import pytest

from explainer.collect.collector import CollectConfig, make_sequences, sequences_fingerprint
from explainer.collect.corpus import stream_corpus
from explainer.errors import CorpusError

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()


def _one_line_file(path, n_bytes: int):
    """A single-line .txt of ``n_bytes`` (no newline anywhere, like the file the issue names)."""
    line = " ".join(WORDS[(i * 7) % len(WORDS)] + str(i % 97) for i in range(2000)) + " "
    block = (line * (1 + (1 << 20) // len(line)))[: 1 << 20]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_bytes >> 20):
            f.write(block)
    return path


def _peak_bytes(path, tokenizer, cfg) -> tuple[int, str, int]:
    tracemalloc.start()
    try:
        _, docs = stream_corpus(str(path))
        seqs = make_sequences(docs, tokenizer, cfg)
        fp = sequences_fingerprint(seqs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, fp, sum(len(s.token_ids) for s in seqs)


def test_memory_is_flat_as_the_file_grows(tmp_path, smol_tokenizer):
    cfg = CollectConfig(max_tokens=3000)
    (tmp_path / "small").mkdir()
    (tmp_path / "big").mkdir()
    small = _one_line_file(tmp_path / "small" / "text.txt", 2 << 20)
    big = _one_line_file(tmp_path / "big" / "text.txt", 16 << 20)
    peak_small, fp_small, n_small = _peak_bytes(small, smol_tokenizer, cfg)
    peak_big, fp_big, n_big = _peak_bytes(big, smol_tokenizer, cfg)
    assert n_small == n_big >= 3000
    # the same prefix is used (same file name, so same ids and domain): the same fingerprint,
    # whatever follows the part that is used
    assert fp_small == fp_big
    # a 16 MB file read whole would take > 16 MB as text alone, and ~100 MB once tokenised
    assert peak_big < 4 << 20, f"peak {peak_big / 2**20:.1f} MiB"
    assert peak_big < peak_small * 1.5 + (1 << 20)


def test_fingerprint_covers_what_is_used(tmp_path, smol_tokenizer):
    cfg = CollectConfig(max_tokens=500)
    a = _one_line_file(tmp_path / "corpus.txt", 1 << 20)
    _, fp1, _ = _peak_bytes(a, smol_tokenizer, cfg)
    with open(a, "a", encoding="utf-8") as f:  # text past what 500 tokens use
        f.write("a new ending that no sequence reaches")
    _, fp2, _ = _peak_bytes(a, smol_tokenizer, cfg)
    assert fp1 == fp2
    text = a.read_text(encoding="utf-8")
    a.write_text("changed " + text[8:], encoding="utf-8")  # text inside what is used
    _, fp3, _ = _peak_bytes(a, smol_tokenizer, cfg)
    assert fp3 != fp1


def test_streamed_jsonl_and_errors_are_lazy_but_reported(tmp_path, smol_tokenizer):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "hello there general kenobi you are a bold one"}\n' * 50 + "{broken\n", encoding="utf-8")
    seqs = make_sequences(stream_corpus(str(path))[1], smol_tokenizer, CollectConfig(max_tokens=40, window=8))
    assert sum(len(s.token_ids) for s in seqs) >= 40  # the broken line is never reached
    with pytest.raises(CorpusError, match=r"rows\.jsonl, line 51: not valid JSON"):
        list(stream_corpus(str(path))[1])
    path.write_text('{"id": 1, "text": "a b"}\n{"id": 1, "text": "c d"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="duplicate document id"):
        list(stream_corpus(str(path))[1])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok " * 10 + b"caf\xe9")
    with pytest.raises(CorpusError, match=r"bad\.txt.*not valid UTF-8 \(undecodable byte at offset 33\)"):
        list(stream_corpus(str(bad))[1])
    empty = tmp_path / "blank.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus is empty: .*blank\.txt"):
        list(stream_corpus(str(empty))[1])
