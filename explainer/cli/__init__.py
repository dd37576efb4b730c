"""Entry point: the ``explainer`` command line, one module per group of commands."""
