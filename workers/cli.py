"""The ``explainer`` command: the CLI of :mod:`explainer.cli`, given Celery as its labeling backend.

This is the process's composition root. ``explainer`` (the library and its CLI) cannot import
``workers`` (which imports the pipeline stages), so the command is started here and hands the
CLI a :class:`workers.backend.CeleryBackend`.
"""

from __future__ import annotations

import sys

from explainer.cli.main import main as cli_main
from workers.backend import CeleryBackend


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, backend=CeleryBackend())


if __name__ == "__main__":
    sys.exit(main())
