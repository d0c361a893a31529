"""The xbp exception hierarchy.

Every error a user can cause is an :class:`XbpError`; each concrete class also
derives from the matching built-in (``ValueError``, ``TypeError``,
``FileNotFoundError``) so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "XbpError",
    "XbpValueError",
    "XbpTypeError",
    "XbpFileNotFoundError",
    "XbpFileError",
    "BackendUnavailableError",
    "GradcheckError",
    "DivergenceError",
    "CollectiveError",
    "Terminated",
]


class XbpError(Exception):
    """Base class of every error raised by xbp for a user's input."""


class XbpValueError(XbpError, ValueError):
    """An argument has the right type but a wrong value (shape, range, name)."""


class XbpTypeError(XbpError, TypeError):
    """An argument has the wrong type (dtype, array library, Python type)."""


class XbpFileNotFoundError(XbpError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class XbpFileError(XbpValueError):
    """A file exists but is not what xbp expects (wrong kind, truncated, unsafe)."""


class BackendUnavailableError(XbpValueError):
    """An array library is not installed or cannot be used on this machine."""


class GradcheckError(XbpValueError):
    """Backprop and finite differences disagree beyond the tolerance."""


class DivergenceError(XbpValueError):
    """Training produced a NaN or Inf loss or gradient."""


class CollectiveError(XbpValueError):
    """An error every process of a data-parallel run raises at the same point.

    It follows from settings the processes were checked to agree on (the
    handshake before the first step), so no process is left waiting in a
    collective for another: each raises it, none is aborted, and a script can
    catch it on every rank (e.g. ``compile=True`` refused under MPI)."""


class Terminated(KeyboardInterrupt):
    """A run ended by SIGTERM (what a preempting scheduler sends), raised like Ctrl-C.

    While :func:`xbp.fit` trains or :func:`xbp.save` writes, SIGTERM raises this
    :class:`KeyboardInterrupt` subclass instead of killing the process at once, so
    the same clean-up runs as for Ctrl-C: a file being written is left as it was
    (its temporary removed), the last checkpoint stays whole and resumable, and
    run locks are released. ``xbp`` commands exit with status 143 (128 + 15).
    """

    signal_number = 15
