"""The edge of every stage script: logging, and errors turned into one clean line.

Every stage script ends in ``run(main)``, which turns what the user can act on into
one line on stderr, without a traceback:

* ``UserError`` (bad input; the message names the file, key or field):
  ``error: <message>``, exit 1. Raised in a DataLoader worker, it comes back from
  torch with the worker's traceback inside its message; only the original message
  is printed.
* ``OSError`` with an errno (disk full, quota, permissions, read-only file system,
  too many open files, ...): ``error: <path>: no space left on device (<what to
  do>)``, exit 1 too (``EXIT_ERROR``: the stage failed, it says why, a rerun after
  the fix resumes). The path is the error's own (``filename``, and ``filename2`` of a
  rename); an error that carries none (a failed ``write()``) is given the folder of
  the enclosing ``with writing(folder):`` block. Errors from process-pool workers
  arrive as themselves; an OSError from a DataLoader worker is rebuilt from torch's
  message.
* SIGTERM, SIGINT (Ctrl-C) or SIGHUP (``cellblock.cli.interrupt``): ``interrupted:
  SIGTERM to <script>; finished work is kept; run the same command again to resume``,
  exit 128 + the signal's number (143, 130, 129), after the stage's cleanup ran.

``CELLBLOCK_TRACEBACK=1`` in the environment prints the traceback as well, above the
same line and with the same exit code. Anything else (a bug) keeps Python's own
traceback and exit code 1.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cellblock.cli.interrupt import exit_status, handle_signals, message
from cellblock.errors import UserError

__all__ = ["EXIT_ERROR", "describe_os_error", "option_value", "run", "writing"]

log = logging.getLogger("cellblock")

EXIT_ERROR = 1  # a UserError or an OSError, reported in one line
TRACEBACK_ENV = "CELLBLOCK_TRACEBACK"

# What a failed write(), flush(), close() or fsync() reports without a file name:
# errors of the file system being written, so naming the folder being written is right.
# (Network errors, e.g. ECONNREFUSED, are not the folder's fault and stay unnamed.)
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
)

_AGAIN = "then rerun: finished work is kept"
HINTS = {
    errno.ENOSPC: f"free space on that file system or choose another folder, {_AGAIN}",
    errno.EDQUOT: f"free space within your quota, see quota -s, or write elsewhere, {_AGAIN}",
    errno.EFBIG: f"a file outgrew what that file system allows: write elsewhere, {_AGAIN}",
    errno.EACCES: "check its owner and permissions with ls -ld, or choose another folder",
    errno.EPERM: "check its owner and permissions with ls -ld, or choose another folder",
    errno.EROFS: "that file system is mounted read-only: choose a writable folder",
    errno.EIO: f"the disk or network file system failed: check it with dmesg, {_AGAIN}",
    errno.EMFILE: "raise the open-file limit with ulimit -n, or use fewer --workers",
    errno.ENFILE: "the system's open-file table is full: use fewer --workers",
    errno.ENOMEM: "use fewer --workers or a smaller batch",
}

# torch's DataLoader re-raises a worker's exception as ``type(msg)`` with a message
# "Caught X in DataLoader worker process N.\nOriginal Traceback (most recent call last):"
# followed by the formatted traceback; the original message is on its last line(s).
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"
_ERRNO_LINE = re.compile(r"\[Errno (\d+)\] (.*?)(?:: '(.*?)')?(?: -> '(.*)')?")


def option_value(argv: Sequence[str], option: str) -> str | None:
    """The value of ``option`` (e.g. ``--out``) in ``argv``, without parsing the rest.

    For a script that hands its arguments on (``predict_blockwise.py``) but must know
    its output folder first, to name it in an error (``writing``).

    Args:
        argv: Command-line arguments.
        option: The long option, e.g. ``"--out"``.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(option)
    known, _ = p.parse_known_args(list(argv))
    return getattr(known, option.lstrip("-").replace("-", "_"))


@contextmanager
def writing(path: Path | str | None) -> Iterator[None]:
    """Name ``path`` in an OSError raised inside the block that names no file.

    A failed ``write()`` says "No space left on device" but not where; a stage wraps
    the work that writes its output folder in ``with writing(out):`` so that ``run``
    can say which folder filled up. Errors that do name a file keep their own name;
    errors other than the file system's (``WRITE_ERRNOS``) pass unchanged.

    Args:
        path: The folder (or file) the block writes; None names nothing.
    """
    try:
        yield
    except OSError as e:
        if path is not None and e.filename is None and e.errno in WRITE_ERRNOS:
            e.filename = str(path)
        raise


def describe_os_error(e: OSError) -> str:
    """``/data/ds: no space left on device (free space ..., then rerun: ...)``.

    Args:
        e: An OSError with an errno.
    """
    code = e.errno if e.errno in errno.errorcode else None
    what = os.strerror(code) if code is not None else (e.strerror or str(e))
    what = what[:1].lower() + what[1:]
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    where = f"{' -> '.join(paths)}: " if paths else ""
    hint = (HINTS.get(code) if code is not None else None) or (
        "" if paths else f"{type(e).__name__}; {TRACEBACK_ENV}=1 shows where"
    )
    return f"{where}{what}" + (f" ({hint})" if hint else "")


def _original_message(e: BaseException) -> str:
    """A worker-wrapped exception's original message; any other's ``str``."""
    text = str(e)
    if _WORKER_TRACEBACK not in text:
        return text
    kind = type(e)
    for name in (f"{kind.__module__}.{kind.__qualname__}", kind.__qualname__):
        at = text.rfind(f"\n{name}: ")
        if at >= 0:
            return text[at + len(name) + 3 :].strip()
    return text.rstrip().rsplit("\n", 1)[-1]  # the traceback's last line, at least


def _unwrap_os_error(e: OSError) -> OSError:
    """An OSError from a DataLoader worker (errno lost in torch's message), rebuilt."""
    if e.errno is not None or _WORKER_TRACEBACK not in str(e):
        return e
    match = _ERRNO_LINE.fullmatch(_original_message(e))
    if not match:
        return e
    code, text, filename, filename2 = match.groups()
    return OSError(int(code), text, filename, None, filename2)


def _fail(message: str) -> None:
    """Print ``error: message`` (after the traceback, if asked for) and exit."""
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def run(main: Callable[[], int | None]) -> None:
    """Run a script's ``main``: INFO logging, and a one-line error for what the user can fix.

    Exit status: ``main``'s return value (0 for None); 1 (``EXIT_ERROR``) for a
    UserError or an OSError, 128 + the signal's number on SIGTERM, SIGINT or SIGHUP.
    See the module docstring.

    Args:
        main: The script's main function.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # their INFO is noise here (copairs logs every step of every mAP)
    for chatty in ("botocore", "boto3", "s3transfer", "urllib3", "copairs"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        with handle_signals():
            code = main()
    except UserError as e:
        _fail(_original_message(e))
    except OSError as e:
        e = _unwrap_os_error(e)
        if e.errno is None:  # not the OS's: e.g. a library's "cannot identify image"
            raise
        _fail(describe_os_error(e))
    except KeyboardInterrupt as e:  # Ctrl-C, or cellblock.cli.interrupt's Interrupted
        signum = getattr(e, "signum", signal.SIGINT)
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(message(signum, Path(sys.argv[0]).name), file=sys.stderr)
        sys.exit(exit_status(signum))
    sys.exit(code or 0)
