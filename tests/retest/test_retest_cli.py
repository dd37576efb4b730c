"""`explainer retest --relabel` labels with the deployment's explainer (or the one given on the
command line), as `explainer label` does; the re-test itself is replaced by one that reports a
broken unit, so that only the command's wiring is under test."""

from __future__ import annotations

import json

import pytest

from explainer.cli.main import main


class RecordingBackend:
    def __init__(self):
        self.opts = []

    def label_units(self, settings, collection_id, unit_ids, opts, progress=True):
        from explainer.pipeline.backend import BatchResult

        self.opts.append(opts)
        return BatchResult("run-1", list(unit_ids), {}, 0.1, submitted=len(unit_ids))


@pytest.fixture
def one_broken_unit(monkeypatch):
    def fake_retest(settings, ref, opts, progress=True, relabel=None):
        return {"summary": {"units": 1, "broken": 1}, "relabel": relabel("new-cid", ["m/layers.1.mlp/3"])}

    monkeypatch.setattr("explainer.retest.run.retest", fake_retest)


def relabel_options(argv):
    backend = RecordingBackend()
    code = main(["retest", "--from", "cid", "--model", "new", "--relabel", "--json", *argv], backend=backend)
    assert code == 0
    [opts] = backend.opts
    return opts


def test_relabel_uses_the_deployments_explainer(one_broken_unit, monkeypatch, capsys):
    monkeypatch.setenv("EXPLAINER_LLM_MODEL", "served-explainer")
    monkeypatch.setenv("EXPLAINER_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    opts = relabel_options(["--scorer", "embedding"])
    assert (opts.explainer.model, opts.explainer.base_url) == ("served-explainer", "http://127.0.0.1:9/v1")
    assert opts.scorers == ("embedding",)
    assert json.loads(capsys.readouterr().out)["relabel"]["submitted"] == 1


def test_relabel_explainer_from_the_command_line(one_broken_unit, monkeypatch):
    monkeypatch.setenv("EXPLAINER_LLM_MODEL", "served-explainer")
    monkeypatch.delenv("EXPLAINER_LLM_BASE_URL", raising=False)
    opts = relabel_options(["--explainer-model", "other", "--explainer-base-url", "http://127.0.0.1:8/v1"])
    assert (opts.explainer.model, opts.explainer.base_url) == ("other", "http://127.0.0.1:8/v1")
