"""An explainer endpoint that never answers is a failure, even when the no-LLM baseline could stand in:
the explanation is recorded as failed with the connection error, the run counts it failed, `runs show`
lists the reason, and `--retry-failed` redoes it once the endpoint answers."""

from __future__ import annotations

from conftest import free_port

from bench.fake_openai import FakeOpenAI, ServerThread
from bench.synthetic import store_synthetic_collection
from explainer.llm.chat import LLMConfig
from explainer.pipeline import stages as pipeline
from explainer.pipeline.options import LabelOptions
from explainer.runtime import get_store
from store import runs
from workers.batch import label_units
from workers.cli import main


def _opts(base_url: str, **kw) -> LabelOptions:
    return LabelOptions(
        explainer=LLMConfig(model="some-model", base_url=base_url, max_retries=0, timeout_s=5),
        baseline_candidate=True,
        **kw,
    )


def test_unreachable_endpoint_is_a_failed_explanation_not_the_baseline(settings):
    store = get_store(settings)
    unit_id = store_synthetic_collection(store, 2)[0]
    eid = pipeline.explain_stage(settings, "synthetic", unit_id, _opts("http://127.0.0.1:9/v1"))
    expl = store.get_explanation(eid)
    assert expl.status == "failed" and expl.text is None
    assert "some-model" in expl.error and "llm-0" in expl.error and "127.0.0.1:9" in expl.error
    # the baseline was still computed and kept as a candidate, never as the explanation
    assert [c["source"] for c in expl.settings["candidates"]] == ["llm-0", "baseline"]


def test_run_counts_it_failed_and_retry_failed_redoes_it(settings, capsys):
    store = get_store(settings)
    units = store_synthetic_collection(store, 2)
    port = free_port()  # nothing listens there yet
    opts = _opts(f"http://127.0.0.1:{port}/v1")
    first = label_units(settings, "synthetic", units, opts, progress=False)
    assert (first.counts["done"], first.counts["failed"]) == (0, 2)
    reasons = [f["reason"] for f in runs.failures(store, first.run_id)]
    assert len(reasons) == 2 and all("never answered" in r for r in reasons)

    assert main(["runs", "show", first.run_id[:8]]) == 0
    out = capsys.readouterr().out
    assert "0 done, 2 failed" in out and "never answered" in out

    with ServerThread(FakeOpenAI(latency=0.0), port):
        again = label_units(settings, "synthetic", units, opts, progress=False)
        assert again.submitted == 0 and again.counts["failed"] == 2  # without the flag, failures stay
        retried = label_units(
            settings, "synthetic", units, _opts(opts.explainer.base_url, retry_failed=True), progress=False
        )
    assert retried.run_id == first.run_id and retried.submitted == 2
    assert (retried.counts["done"], retried.counts["failed"]) == (2, 0)
    for uid in units:
        expl = store.explanations_for([uid])[0]
        assert expl.status == "ok" and expl.explainer_model == "some-model"
        assert expl.settings["selected"] in ("llm-0", "baseline")
