"""The CLI's last line of defence: whatever a command raises, the user sees one line and an exit code.

- a project error (:class:`explainer.errors.ExplainerError`): ``error: MESSAGE``, exit 2 (every
  message on one line, control characters escaped);
- input nested too deeply to read (``RecursionError``), memory exhausted (``MemoryError``), a file
  the system refuses (``OSError``): one line naming what happened, exit 2;
- anything else: ``error: unexpected TYPE: MESSAGE`` on one line, exit 2 (``--verbose`` logs the
  traceback for a bug report);
- Ctrl-C: ``interrupted``, exit 130; a closed pipe (``explainer show ... | head``): silent, exit 0.

Argparse's own usage errors (exit 2) pass through untouched.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from explainer.errors import ExplainerError

log = logging.getLogger("explainer.cli")

ERROR_EXIT = 2


def one_line(text: object, limit: int = 2000) -> str:
    """``text`` on one line: whitespace runs folded to a space, other control characters (which a
    user's argument may carry into a message: terminal escapes, separators) shown escaped, at most
    ``limit`` characters."""
    s = " ".join(str(text).split())
    s = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _fail(message: str) -> int:
    print(f"error: {one_line(message)}", file=sys.stderr)
    return ERROR_EXIT


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so that the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass


def run_guarded(command: Callable[[], int]) -> int:
    """Run ``command`` (it prints its own output) and turn every exception into one line and an exit code."""
    try:
        return command()
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ExplainerError as exc:
        return _fail(str(exc))
    except RecursionError:
        log.info("recursion limit", exc_info=True)
        return _fail("the input is nested too deeply to read (a JSON file of thousands of levels?)")
    except MemoryError:
        log.info("out of memory", exc_info=True)
        return _fail(
            "out of memory: lower --top-k, --context, --window or --max-tokens, or use a machine with more memory"
        )
    except OSError as exc:
        log.info("system error", exc_info=True)
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(one_line(f"{exc.strerror or exc}{where}"))
    except Exception as exc:  # noqa: BLE001 - the last resort: never a traceback on the terminal
        log.info("unexpected error", exc_info=True)
        return _fail(one_line(f"unexpected {type(exc).__name__}: {exc} (run with --verbose for details)"))
