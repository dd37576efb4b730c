"""Paths the user names (corpus, SAE and directions): say what is wrong with one that cannot be read.

A symlink loop makes ``Path.exists()`` and ``is_dir()`` answer ``False``, so without this the user is
told a folder they can see "does not exist" or "is not a folder".
"""

from __future__ import annotations

import errno
from pathlib import Path


def is_symlink_loop(path: Path) -> bool:
    """Whether resolving ``path`` (or one of its parents) runs into a symlink loop."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def missing_reason(path: Path) -> str:
    """Why ``path`` cannot be opened, for a message: a symlink loop, or that it does not exist."""
    return "is a symlink loop" if is_symlink_loop(path) else "does not exist"


def loops_under(folder: Path, entries: list[Path]) -> list[str]:
    """The ``entries`` of ``folder`` that are symlink loops, as names relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in entries if p.is_symlink() and is_symlink_loop(p))
