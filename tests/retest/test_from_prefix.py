"""``explainer retest --from`` takes a run or collection id as the short prefix the CLI prints, as
``report --run`` and ``runs show`` do; an unknown or ambiguous prefix is a one-line input error."""

from __future__ import annotations

import pytest

from bench.synthetic import store_synthetic_collection
from explainer.errors import InputError
from explainer.llm.chat import LLMConfig
from explainer.pipeline.options import LabelOptions
from explainer.retest.run import resolve_from
from explainer.runtime import get_store
from workers.batch import open_run


def test_run_and_collection_id_prefixes_resolve(settings):
    store = get_store(settings)
    units = store_synthetic_collection(store, 3, collection_id="c0ffee" + "1" * 10)
    opts = LabelOptions(explainer=LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"))
    run_id = open_run(settings, "c0ffee" + "1" * 10, units, opts)

    collection, unit_ids = resolve_from(store, run_id[:8])
    assert collection["id"] == "c0ffee" + "1" * 10 and unit_ids == sorted(units)
    assert resolve_from(store, run_id) == (collection, unit_ids)

    with pytest.raises(InputError, match="unknown run or collection id 'zzzz'"):
        resolve_from(store, "zzzz")
    store_synthetic_collection(store, 1, collection_id="c0ffee" + "2" * 10)
    with pytest.raises(InputError, match="ambiguous"):
        resolve_from(store, "c0ffee")
