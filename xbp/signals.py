"""SIGTERM handled like SIGINT while xbp trains or writes a file.

Python turns SIGINT (Ctrl-C) into :class:`KeyboardInterrupt`, so an
interrupted save removes its temporary file and an interrupted run leaves its
last checkpoint whole. SIGTERM, what a batch scheduler sends to preempt a job,
kills the process outright by default: a save in progress leaves a
checkpoint-sized temporary behind. :func:`terminate_as_interrupt` raises
:class:`xbp.errors.Terminated` (a ``KeyboardInterrupt``) on SIGTERM instead,
for as long as it is entered, so both signals take the same clean-up path.

A handler is installed only in the main thread (the only one Python lets set
one) and only where SIGTERM still has its default action: a program's own
handler is never replaced.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from .errors import Terminated

__all__ = ["terminate_as_interrupt"]


def _raise_terminated(signum: int, frame: Any) -> None:
    # once: a second SIGTERM must not cut short the clean-up the first one started (a
    # temporary file being removed); the block's exit restores the previous handler
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`xbp.errors.Terminated` like Ctrl-C.

    Nested uses keep the outer handler; the previous handler comes back on exit.

    Examples
    --------
    >>> import os, signal
    >>> from xbp.errors import Terminated
    >>> try:
    ...     with terminate_as_interrupt():
    ...         os.kill(os.getpid(), signal.SIGTERM)
    ... except Terminated:
    ...     print("cleaned up")
    cleaned up
    """
    term = getattr(signal, "SIGTERM", None)
    if (
        term is None
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(term) is not signal.SIG_DFL
    ):
        yield
        return
    previous = signal.signal(term, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(term, previous)
