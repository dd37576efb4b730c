"""Shared test data and helpers (not tests): importable as ``builders.<area>`` because pytest puts
``tests/`` on the import path (``pythonpath`` in pyproject.toml). Fixtures live in ``tests/conftest.py``."""
