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

from ..errors import Terminated

__all__ = ["raise_if_terminated", "terminate_as_interrupt"]

# set when SIGTERM arrived inside terminate_as_interrupt: an exception raised by a signal
# handler while a finalizer runs (a generator closed by the garbage collector) is
# printed and dropped by Python, so the loop asks again at every step
_pending = False


def _raise_terminated(signum: int, frame: Any) -> None:
    global _pending
    # once: a second SIGTERM must not cut short the clean-up the first one started (a
    # temporary file being removed); the block's exit restores the previous handler
    signal.signal(signum, _remember)
    _pending = True
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


def _remember(signum: int, frame: Any) -> None:
    global _pending
    _pending = True


def raise_if_terminated() -> None:
    """Raise :class:`xbp.errors.Terminated` if SIGTERM arrived and its exception was
    lost (raised inside a finalizer); the training loop calls it at every step."""
    if _pending:
        raise Terminated("terminated by signal 15 (SIGTERM)")


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
    global _pending
    previous = signal.signal(term, _raise_terminated)
    _pending = False
    try:
        yield
    finally:
        signal.signal(term, previous)
        _pending = False
