"""Every CLI command under a fuzz test of its arguments: whatever hypothesis draws for each option
the parser declares (hostile numbers, paths that are missing, directories, binary or deeply nested
files, odd text), the command ends with exit 0, 1 or 2 and no traceback; an error is one line.

The draws are bounded so that the test stays fast: the subject model is the tiny LLaMA (or a bad
path), corpora are small files, labeling goes to a backend that records the run instead of
explaining, and `serve` has no API keys (so it never starts listening)."""

from __future__ import annotations

import argparse
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explainer.cli.main import build_parser, main
from explainer.pipeline.backend import BatchResult

EXAMPLES = int(os.environ.get("CLI_FUZZ_EXAMPLES", "12"))
"""Draws per command (a deeper search: CLI_FUZZ_EXAMPLES=200)."""
NUMBERS = st.one_of(
    st.sampled_from([-(10**30), -1, 0, 1, 2, 3, 4, 8, 33, 64, 10**6, 10**9, 10**30]).map(str),
    st.integers(-5, 100).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "", " ", "1_000", "٣"]),
)
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24),
    st.sampled_from(["../../etc/passwd", "-", "--", "%s%n", "<script>", "a/b/c", "x/layers.1.mlp/0", "é" * 40]),
)


PROGRESS = re.compile(r"(loading .* \.\.\.|loaded .* in \d+\.\d s|output sides: .*)$")
"""What the ``explainer.progress`` logger prints on stderr while a command works (not an error line)."""


class RecordingBackend:
    """Labeling without workers: the run is acknowledged, nothing is explained."""

    def label_units(self, settings, collection_id, unit_ids, opts, progress=True):
        n = len(unit_ids)
        counts = {"done": 0, "failed": 0, "pending": n, "units": n, "tokens": 0}
        return BatchResult("0" * 64, list(unit_ids), {}, 0.0, submitted=n, counts=counts)

    def collect_on_worker(self, *args, **kwargs):
        raise AssertionError("no broker is configured in these tests")

    def collect_sharded(self, settings, model, hookpoint, corpus, config, sae, directions, n_shards, notice=None):
        """Shards are accepted and nothing is collected (sharding itself: tests/collect/test_shards.py)."""
        return "0" * 16


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One isolated embedded deployment holding the searchable test units, shared by every command
    (indexing them takes longer than fuzzing a command)."""
    import os

    from builders.search import write_units

    from explainer.settings import load_settings

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("EXPLAINER_"):
                mp.delenv(key)
        mp.setenv("EXPLAINER_DATA_DIR", str(tmp_path_factory.mktemp("fuzz") / "data"))
        settings = load_settings()
        write_units(settings)
        yield settings


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_model_dir):
    """Files the draws pick from."""
    tmp_path = tmp_path_factory.mktemp("fuzz-files")
    (tmp_path / "small.txt").write_text("the cat sat on the mat while it rained all day long " * 30)
    (tmp_path / "rows.jsonl").write_text('{"text": "hello world, say hello again and again", "domain": "a b"}\n' * 20)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    deep = tmp_path / "deep_sae"
    deep.mkdir()
    (deep / "cfg.json").write_text("[" * 50_000 + "]" * 50_000)
    (tmp_path / "dir").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return {
        "model": [str(tiny_model_dir), "/nonexistent/model", str(tmp_path / "dir"), str(tmp_path / "small.txt")],
        "corpus": [str(tmp_path / n) for n in ("small.txt", "rows.jsonl", "empty.txt", "binary.txt", "dir", "loop")]
        + ["/nonexistent.txt"],
        "file": [str(tmp_path / n) for n in ("deep_sae", "dir", "loop", "binary.txt", "deep_sae/cfg.json")]
        + ["/nonexistent"],
        "output": [str(tmp_path / n) for n in ("r.html", "r.md", "r.json", "r.docx", "dir", "loop", "new/r.pdf")],
    }


def _value(name: str, action: argparse.Action, paths: dict) -> st.SearchStrategy[str]:
    if action.choices is not None:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), TEXT)
    if name == "--model":
        return st.sampled_from(paths["model"])
    if name in ("--corpus",):
        return st.sampled_from(paths["corpus"])
    if name in ("--sae", "--directions"):
        return st.sampled_from(paths["file"])
    if name in ("-o", "--output"):
        return st.one_of(st.sampled_from(paths["output"]), TEXT)
    if action.type in (int, float):
        return NUMBERS
    return st.one_of(TEXT, NUMBERS)


def _argv(draw, command: str, sub: argparse.ArgumentParser, paths: dict) -> list[str]:
    argv = command.split()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in ("json", "data_dir"):
            continue  # --data-dir would scatter stores over the disk; the deployment fixture sets it
        name = action.option_strings[-1] if action.option_strings else None
        if name is None:  # positional
            if action.nargs == "?" and draw(st.booleans()):
                continue
            argv.append(draw(_value(action.dest, action, paths)))
            continue
        if name == "--model" and action.default is not None:
            argv += [name, draw(st.sampled_from(paths["model"]))]  # never the default (a 135M model)
            continue
        if name == "--corpus" and command in ("collect", "label"):
            argv += [name, draw(st.sampled_from(paths["corpus"]))]  # never the built-in corpus
            continue
        if not draw(st.booleans()):
            continue
        if action.nargs == 0:
            argv.append(name)
        elif action.nargs in ("+", "*"):
            argv += [name, *draw(st.lists(_value(name, action, paths), min_size=1, max_size=3))]
        else:
            argv += [name, draw(_value(name, action, paths))]
    if draw(st.booleans()):
        argv.append("--json")
    return argv


def _subparsers(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command the parser runs, nested ones by their full words (``cases make``)."""
    parser = parser or build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, argparse.ArgumentParser] = {}
    for name, p in sub.choices.items():
        if any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            out.update(_subparsers(p, f"{prefix}{name} "))
        else:
            out[f"{prefix}{name}"] = p
    return out


COMMANDS = sorted(_subparsers())


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_ever_shows_a_traceback(deployment, paths, capsys, monkeypatch, tmp_path, command):
    monkeypatch.chdir(tmp_path)  # relative report paths land in a scratch folder
    sub = _subparsers()[command]
    seen: list[list[str]] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.data())
    def check(data):
        argv = data.draw(st.composite(lambda d: _argv(d, command, sub, paths))())
        seen.append(argv)
        try:
            code = main(argv, backend=RecordingBackend())
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out = capsys.readouterr()
        assert "Traceback" not in out.err and "Traceback" not in out.out, (argv, out.err)
        assert code in (0, 1, 2), (argv, code, out.err)
        if code == 2 and "usage:" not in out.err:
            lines = [
                ln
                for ln in out.err.splitlines()
                if ln.strip() and not ln.startswith(("WARNING", "INFO")) and not PROGRESS.match(ln)
            ]
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, out.err)
            assert "error: unexpected" not in lines[0], (argv, lines[0])  # the guard caught a bug

    check()
    assert len(seen) >= 1
