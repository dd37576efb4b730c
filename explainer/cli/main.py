"""Command line: thin adapters over the pipeline, search, views and report functions.

Every command has ``--help`` and ``--json``; expected errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from explainer import runtime
from explainer.cli import audit, browse, formats, labeling, reports, retest, steer
from explainer.cli.common import print_fields
from explainer.llm.ratelimit import configure as configure_limits
from explainer.pipeline.backend import LabelBackend
from explainer.progress import LOGGER as PROGRESS_LOGGER
from explainer.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explainer",
        description="Explain what units inside a language model do, score the explanations, search and report them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (labeling, browse, reports, formats, steer, retest, audit):
        module.register(sub)
    for p in sub.choices.values():  # also after the command: explainer search "..." --data-dir DIR
        p.add_argument("--data-dir", default=argparse.SUPPRESS, help=DATA_DIR_HELP)
    return parser


DATA_DIR_HELP = "where the embedded store lives (default: $EXPLAINER_DATA_DIR, else the platform's user data folder)"


def main(argv: list[str] | None = None, backend: LabelBackend | None = None) -> int:
    """Run one command. ``backend`` runs labeling chains and remote collections (the ``explainer``
    command passes Celery's, :class:`workers.backend.CeleryBackend`). No exception escapes: see
    :mod:`explainer.cli.guard`."""
    from explainer.cli.guard import run_guarded

    return run_guarded(lambda: _main(argv, backend))


def _main(argv: list[str] | None, backend: LabelBackend | None) -> int:
    args = build_parser().parse_args(argv)
    args.backend = backend
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    show_progress(not args.json)
    settings = load_settings(data_dir=args.data_dir)
    configure_limits(settings)
    runtime.configure(settings)
    result = args.func(settings, args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        getattr(args, "show", print_fields)(result, settings)
    return int(getattr(args, "exit_status", lambda _: 0)(result))  # e.g. check: 1 when out of sync (2 = errors)


class _ProgressHandler(logging.StreamHandler):
    """Prints the ``explainer.progress`` lines (what is loading, and how long it took) on stderr,
    above a progress bar that is showing rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's rule: a failed message never breaks the command
            self.handleError(record)


def show_progress(enabled: bool) -> None:
    """Print what slow steps are doing on stderr (one line each), or not (``--json``: stdout is for
    machines, and stderr stays quiet too). Idempotent: ``main`` may run many times in one process."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _ProgressHandler)]:
        logger.removeHandler(handler)
    if enabled:
        handler = _ProgressHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
