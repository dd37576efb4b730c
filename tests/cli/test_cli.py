"""CLI behaviour on bad input: one clear line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import json

import pytest

from workers.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def test_every_command_has_help(capsys):
    for cmd in ("collect", "label", "search", "show", "report"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "--json" in capsys.readouterr().out


def test_unknown_model_path(settings, capsys):
    code, _, err = run(capsys, "collect", "--model", "/nonexistent/model")
    assert code == 2
    assert "unknown model '/nonexistent/model'" in err and "smollm2-135m" in err


def test_empty_corpus(settings, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("  \n\n")
    code, _, err = run(capsys, "collect", "--corpus", str(tmp_path / "empty.txt"))
    assert code == 2 and "empty" in err


def test_undecodable_corpus(settings, tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf-8 \xc3\x28")
    code, _, err = run(capsys, "collect", "--corpus", str(tmp_path / "bad.txt"))
    assert code == 2 and "bad.txt" in err


def test_unknown_unit(settings, capsys):
    code, _, err = run(capsys, "show", "smollm2-135m/layers.15.mlp/99999")
    assert code == 2 and "unknown unit id(s): smollm2-135m/layers.15.mlp/99999" in err


def test_empty_store_search_and_report(settings, tmp_path, capsys):
    code, out, _ = run(capsys, "search", "anything", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "report", "-o", str(tmp_path / "r.html"), "--json")
    assert code == 0 and json.loads(out)["units"] == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_empty_query_is_an_error(settings, capsys):
    code, _, err = run(capsys, "search", "   ")
    assert code == 2 and "empty" in err


def test_bad_collect_numbers(settings, capsys):
    code, _, err = run(capsys, "collect", "--window", "2")
    assert code == 2 and "--window" in err


def test_serve_runs_the_api_app_with_uvicorn(settings, capsys, monkeypatch):
    import uvicorn
    from fastapi import FastAPI

    served = {}
    monkeypatch.setenv("EXPLAINER_API_READ_KEYS", "reader-key-123")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    code, out, err = run(capsys, "serve", "--host", "127.0.0.2", "--port", "8123", "--json")
    assert code == 0, err
    assert json.loads(out) == {"stopped": True}
    assert isinstance(served["app"], FastAPI) and (served["host"], served["port"]) == ("127.0.0.2", 8123)
