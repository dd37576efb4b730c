"""``explainer export`` and ``explainer import``: explanations out to and in from neuron-explainer,
Neuronpedia and delphi files (:mod:`explainer.formats`)."""

from __future__ import annotations

import argparse
from typing import Any

from explainer.cli.common import add_intervention_args, with_intervention
from explainer.formats import FORMATS
from explainer.settings import Settings


def cmd_export(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.formats.exchange import export_explanations

    return export_explanations(settings, args.format, args.output, run=args.run, units=args.units, force=args.force)


def cmd_import(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from explainer.formats.exchange import import_explanations

    result = import_explanations(
        with_intervention(settings, args),  # the --intervention-* flags, for --rescore
        args.format,
        args.path,
        args.collection,
        file_model=args.file_model,
        rescore=tuple(args.rescore or ()),
        index=not args.no_index,
    )
    if not args.json:
        result.pop("explanation_ids")
    return result


def register(sub: Any) -> None:
    """Register ``export`` and ``import`` on the CLI's subparsers."""
    p = sub.add_parser("export", help="write explanations and scores as neuron-explainer, Neuronpedia or delphi files")
    p.add_argument("--format", required=True, choices=FORMATS)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--run", default=None, help="the run whose explanations to export (default: every unit)")
    scope.add_argument("--units", nargs="+", default=None, help="unit ids whose explanations to export")
    p.add_argument("-o", "--output", required=True, help="folder to write (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="read neuron-explainer, Neuronpedia or delphi explanations into a collection (searchable at once)",
    )
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("path", help="the file or folder to read")
    p.add_argument(
        "--collection", required=True, help="the collection (id) of the same model and layer to attach them to"
    )
    p.add_argument(
        "--file-model",
        default=None,
        help="the file's name for the collection's model, when it differs (e.g. gpt2-small)",
    )
    p.add_argument(
        "--rescore",
        action="append",
        default=None,
        metavar="SCORER",
        help="also score them with this scorer of ours (repeatable)",
    )
    add_intervention_args(p)
    p.add_argument("--no-index", action="store_true", help="do not index them for search now")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_import)
