"""What every command shares: the labeling backend it was given, and how results print for people."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from explainer.errors import ConfigError
from explainer.pipeline.backend import LabelBackend
from explainer.settings import Settings


def ci(ci: Any) -> str:
    """``[low, high]`` of a 95% interval, or ``[no interval]`` where none could be computed."""
    if not ci or ci[0] is None or ci[1] is None:
        return "[no interval]"
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def notice(message: str) -> None:
    """A one-line note for the person waiting (stderr: stdout is the command's result)."""
    print(message, file=sys.stderr)


def backend_of(args: argparse.Namespace) -> LabelBackend:
    if args.backend is None:
        raise ConfigError(
            "labeling needs a backend: run the `explainer` command (workers.cli), or pass main(backend=...)"
        )
    return args.backend


def print_fields(result: Any, settings: Settings | None = None) -> None:
    """The default human output: one ``key: value`` line per field."""
    for k, v in result.items():
        print(f"{k}: {v}")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[low, high]`` (a huge one must not reach SQL or a tensor)."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {n}")
        return n

    return parse


def add_explainer_args(p: argparse.ArgumentParser) -> None:
    """``--explainer-model`` and ``--explainer-base-url``, as every command that explains units takes them."""
    p.add_argument(
        "--explainer-model", default=None, help="explainer LLM (default: EXPLAINER_LLM_MODEL or the packaged SmolLM2)"
    )
    p.add_argument(
        "--explainer-base-url",
        default=None,
        help="OpenAI-compatible endpoint (default: EXPLAINER_LLM_BASE_URL; unset = in-process)",
    )


def explainer_llm(settings: Settings, args: argparse.Namespace) -> Any:
    """The explainer's :class:`~explainer.llm.chat.LLMConfig`: the command line's model and endpoint,
    else the deployment's (``EXPLAINER_LLM_MODEL``, ``EXPLAINER_LLM_BASE_URL``)."""
    from explainer.llm.chat import LLMConfig

    return LLMConfig(
        model=args.explainer_model or settings.llm_model,
        base_url=args.explainer_base_url or settings.llm_base_url,
        timeout_s=settings.llm_timeout_s,
        device=settings.device,
    )


INTERVENTION_FLAGS = {
    "intervention_target_kl": "--intervention-target-kl",
    "intervention_prompts": "--intervention-prompts",
    "intervention_prompts_n": "--intervention-prompts-n",
    "intervention_new_tokens": "--intervention-new-tokens",
}
"""Settings field → the flag that replaces it for one command (as ``EXPLAINER_INTERVENTION_*`` set it)."""


def add_intervention_args(p: argparse.ArgumentParser) -> None:
    """The intervention scorers' flags (``label``, ``retest``, ``import``: the commands that can run them;
    ``calibrate`` scores windows of a corpus and takes none)."""
    g = p.add_argument_group("intervention scorers (intervention, intervention-embedding, intervention-endpoint)")
    g.add_argument(
        "--intervention-target-kl",
        default=None,
        metavar="NATS",
        help="mean next-token KL the steering strength is bisected to (default: EXPLAINER_INTERVENTION_TARGET_KL, "
        "else 1.0)",
    )
    g.add_argument(
        "--intervention-prompts",
        default=None,
        metavar="FILE",
        help="neutral prompts: a name in prompts/ or a YAML file with 'prompts' and 'judge_prefix' "
        "(default: EXPLAINER_INTERVENTION_PROMPTS, else neutral_prompts)",
    )
    g.add_argument(
        "--intervention-prompts-n",
        default=None,
        metavar="N",
        help="how many of the prompts are steered (default: EXPLAINER_INTERVENTION_PROMPTS_N, else 8)",
    )
    g.add_argument(
        "--intervention-new-tokens",
        default=None,
        metavar="N",
        help="tokens generated per continuation (default: EXPLAINER_INTERVENTION_NEW_TOKENS, else 8)",
    )


def intervention_overrides(args: argparse.Namespace) -> tuple[tuple[str, Any], ...]:
    """``(settings field, value)`` of each ``--intervention-*`` flag given, checked; a bad value is a
    one-line :class:`ConfigError` naming the flag."""
    from explainer.llm.prompts import load_template
    from explainer.settings import check_intervention

    out = []
    for field, flag in INTERVENTION_FLAGS.items():
        if (raw := getattr(args, field, None)) is None:
            continue
        value = check_intervention(field, raw, flag)
        if field == "intervention_prompts":  # a template name must exist now, not after collecting
            try:
                load_template(str(value))
            except ConfigError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
        out.append((field, value))
    return tuple(out)


def with_intervention(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with the command's ``--intervention-*`` flags in place."""
    import dataclasses

    overrides = intervention_overrides(args)
    return dataclasses.replace(settings, **dict(overrides)) if overrides else settings
