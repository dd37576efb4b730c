"""``explainer steer UNIT_ID --prompt "…"``: clean and steered continuations side by side, the
next-token KL divergence and the tokens whose probability rose and fell most."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from explainer.intervene.hooks import MODES
from explainer.intervene.service import DEFAULT_TARGET_KL, steer_unit
from explainer.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "steer",
        help="steer, scale, clamp or ablate one unit on a prompt: clean vs steered continuation, KL, token changes",
    )
    p.add_argument("unit_id")
    p.add_argument("--prompt", required=True, help="the text to continue")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--strength", type=float, default=None, help="add: amount; scale: factor; clamp: value")
    how.add_argument(
        "--target-kl",
        type=float,
        default=None,
        help=f"add/scale: find the strength that gives this next-token KL (default {DEFAULT_TARGET_KL:g})",
    )
    p.add_argument("--mode", choices=list(MODES), default="add", help="default: %(default)s")
    p.add_argument("--ablate-to", choices=["zero", "mean"], default="zero", help="ablate: value (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=20, help="greedy tokens generated (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="tokens listed as risen and fallen (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_steer, show=print_steer)


def cmd_steer(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    return steer_unit(
        settings,
        args.unit_id,
        args.prompt,
        mode=args.mode,
        strength=args.strength,
        target_kl=args.target_kl,
        ablate_to=args.ablate_to,
        max_new_tokens=args.new_tokens,
        top=args.top,
    )


def print_steer(r: dict[str, Any], settings: Settings | None = None) -> None:
    strength = f"{r['mode']} {r['strength']:g}" if r["strength"] is not None else f"ablate to {r.get('ablate_to')}"
    found = (
        f" (found by bisection to KL {r['target_kl']:g}, {r['bisection_steps']} steps)" if r["bisection_steps"] else ""
    )
    print(f"{r['unit_id']} [{r['kind']}]  {strength}{found}")
    print(f"KL(clean ‖ steered) of the next token: {r['kl']:.4f} nats")
    width = 48
    left = textwrap.wrap(" ".join(r["clean"].split()), width) or [""]
    right = textwrap.wrap(" ".join(r["steered"].split()), width) or [""]
    print(f"{'clean':<{width}} | steered")
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(f"{a:<{width}} | {b}")
    for label, rows in (("rose", r["risen"]), ("fell", r["fallen"])):
        print(f"{label}: " + ", ".join(f"{t['token']!r} {t['p_clean']:.3f}→{t['p_steered']:.3f}" for t in rows))
