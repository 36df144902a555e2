"""One way to report a user's error: ``error: <what was expected, what was given, where>``.

Every command line (``train.py``, ``sample.py``, ``python -m diffjax.convert``)
runs its entry point through :func:`run_cli`: an error the user can fix (a bad
flag, file, folder or config; every ``ValueError`` and file-system error the
library raises is one) is printed as a single ``error: ...`` line on stderr and
the process exits with status 1, without a traceback. ``--debug`` on the
command line or ``DIFFJAX_DEBUG=1`` in the environment shows the traceback
instead (the flag is removed before the command parses its own flags).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

__all__ = ["UserError", "run_cli", "one_line", "load_json", "debug_requested", "DEBUG_ENV"]

DEBUG_ENV = "DIFFJAX_DEBUG"
# Errors a user fixes by changing what they gave: the library raises ValueError for
# bad values, files and configs; the OS errors are missing or unwritable paths.
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                FileExistsError)


class UserError(ValueError):
    """A mistake in what the user gave (a flag, file, folder or config), with a message saying how to fix it."""


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether tracebacks were asked for (``--debug`` in ``argv`` or ``DIFFJAX_DEBUG`` set and not ``0``)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    return "--debug" in (sys.argv if argv is None else argv)


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (a multi-line list is joined with ``; ``)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return "; ".join(parts)


def run_cli(main: Callable[..., Any], *args, argv: list[str] | None = None) -> Any:
    """Run ``main(*args)``, turning a user error into one ``error:`` line and exit status 1.

    ``--debug`` is removed from ``argv`` (default ``sys.argv``, edited in place)
    before ``main`` runs, so absl and argparse never see it.

    Args:
      main: the command's entry point.
      *args: passed to it.
      argv: the command line to look for ``--debug`` in (edited in place).

    Returns:
      What ``main`` returns.

    Raises:
      SystemExit: status 1 after printing ``error: ...``; any other exception,
        and every exception when debugging was asked for, propagates.
    """
    argv = sys.argv if argv is None else argv
    debug = debug_requested(argv)
    while "--debug" in argv:
        argv.remove("--debug")
    if debug:
        # Child code (and subprocesses) see the request too; restored after, so that an
        # in-process call (tests, notebooks) does not leave every later command in debug mode.
        previous = os.environ.get(DEBUG_ENV)
        os.environ[DEBUG_ENV] = "1"
        try:
            return main(*args)
        finally:
            if previous is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = previous
    try:
        return main(*args)
    except _USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def load_json(path: str) -> Any:
    """Parse the JSON file at ``path``; a file that does not parse is named with its line and column.

    Raises:
      UserError: naming the file, line and column, and what to do.
    """
    from diffjax import workdir_io

    text = workdir_io.read_text(path)  # a local file or a bucket URL
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg}); "
                        "the file is damaged or was edited by hand: repair it or restore it from a copy") from None


def dataclass_from_json(cls, path: str):
    """``cls(**json)`` for the JSON object in ``path`` (e.g. a run's ``model_config.json``), checked.

    Raises:
      UserError: the file does not parse (naming line and column), is not an
        object, or holds keys ``cls`` does not have (naming them and the known ones).
    """
    import dataclasses

    data = load_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{path}: unknown {cls.__name__} field(s) {unknown}; known fields are {sorted(known)} "
                        "(the file was edited by hand or written by another version of diffjax)")
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: not a valid {cls.__name__}: {one_line(err)}") from None
