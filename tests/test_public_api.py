"""The public API named in ``explainer.__all__``: every name resolves, and importing the package is cheap."""

from __future__ import annotations

import subprocess
import sys

import explainer


def test_every_public_name_resolves_to_what_its_module_defines():
    import importlib

    assert explainer.__all__ == sorted(explainer._EXPORTS)
    for name, module in explainer._EXPORTS.items():
        value = getattr(explainer, name)
        assert value is getattr(importlib.import_module(module), name), name


def test_the_typed_records_are_public_and_are_the_stores_own_classes():
    """One shape per concept: a unit record, an explanation, a score and a calibration are the
    store's classes, importable from ``explainer`` (the CLI, the API and the reports use them)."""
    import store.records

    for name in ("UnitRecord", "Window", "Explanation", "Score", "Calibration"):
        assert name in explainer.__all__
        assert getattr(explainer, name) is getattr(store.records, name)


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        explainer.nope  # noqa: B018


def test_importing_the_package_loads_no_stage_and_no_torch():
    code = "import sys, explainer; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('explainer.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
