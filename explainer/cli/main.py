"""Command line: thin adapters over the pipeline, search, views and report functions.

Every command has ``--help`` and ``--json``; expected errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from explainer.cli import audit, browse, labeling, reports, steer
from explainer.cli.common import print_fields
from explainer.errors import ExplainerError
from explainer.llm.ratelimit import configure as configure_limits
from explainer.pipeline.backend import LabelBackend
from explainer.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explainer",
        description="Explain what units inside a language model do, score the explanations, search and report them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (labeling, browse, reports, steer, audit):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, backend: LabelBackend | None = None) -> int:
    """Run one command. ``backend`` runs labeling chains and remote collections (the ``explainer``
    command passes Celery's, :class:`workers.backend.CeleryBackend`)."""
    args = build_parser().parse_args(argv)
    args.backend = backend
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        configure_limits(settings)
        result = args.func(settings, args)
    except ExplainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        getattr(args, "show", print_fields)(result)
    if args.command == "check" and not result["in_sync"]:
        return 1  # differences found (2 stays for errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
