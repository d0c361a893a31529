"""The ``xbp`` console script's entry point, outside the ``xbp`` package.

Importing :mod:`xbp.cli` imports the whole library (NumPy, every module):
Ctrl-C during that second or so would print a long traceback, and no handler
inside ``xbp`` exists yet to stop it. This module imports nothing heavy, so
it can catch an interrupt during start-up and say so in one line (exit status
130, as for Ctrl-C in a command); SIGTERM during start-up ends the process
before any file is written.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["main"]


def main() -> int:
    """Import the command line and run it; Ctrl-C at any moment gives one line, status 130.

    Examples
    --------
    >>> import sys, xbp_start
    >>> sys.argv = ["xbp", "--help"]
    >>> xbp_start.main()  # doctest: +SKIP
    """
    # Ctrl-C during the import is recorded, not raised: an interrupt inside a C
    # extension's import (NumPy's) would come out as an ImportError with a traceback
    pressed: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    except ValueError:  # not the main thread: no handler can be set
        previous = None
    try:
        from xbp.cli import main as run
    except KeyboardInterrupt:
        pressed.append(signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if pressed:
        print("xbp: interrupted while starting (exit status 130); nothing was run", file=sys.stderr)
        return 130
    try:
        return run()
    except KeyboardInterrupt:  # outside a command's own handler (parsing the arguments)
        print("xbp: interrupted (exit status 130)", file=sys.stderr)
        return 130
