"""The xbp exception hierarchy.

Every error a user can cause is an :class:`XbpError`; each concrete class also
derives from the matching built-in (``ValueError``, ``TypeError``,
``FileNotFoundError``) so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from typing import Any

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
    """Base class of every error raised by xbp for a user's input.

    Examples
    --------
    >>> import xbp
    >>> try:
    ...     xbp.mlp([2, 0, 1])
    ... except xbp.XbpError as err:  # also a ValueError
    ...     print(err)
    Dense.n_out=0 must be an integer >= 1
    """


class XbpValueError(XbpError, ValueError):
    """An argument has the right type but a wrong value (shape, range, name).

    Examples
    --------
    >>> import xbp
    >>> try:
    ...     xbp.mlp([2, 1], backend="nosuch")
    ... except ValueError as err:
    ...     print(type(err).__name__, err)
    XbpValueError backend='nosuch' is not known; use one of [...]
    """


class XbpTypeError(XbpError, TypeError):
    """An argument has the wrong type (dtype, array library, Python type).

    Examples
    --------
    >>> import xbp
    >>> try:
    ...     xbp.mlp([2, 1], dtype="int8")
    ... except TypeError as err:
    ...     print(type(err).__name__, str(err).split(";")[0])
    XbpTypeError dtype='int8' is not supported
    """


class XbpFileNotFoundError(XbpError, FileNotFoundError):
    """A file or directory the user named does not exist.

    Examples
    --------
    >>> import xbp
    >>> try:
    ...     xbp.load("missing.npz")
    ... except FileNotFoundError as err:
    ...     print(type(err).__name__, err)
    XbpFileNotFoundError path='missing.npz' does not exist; check the path
    """


class XbpFileError(XbpValueError):
    """A file exists but is not what xbp expects (wrong kind, truncated, unsafe).

    Examples
    --------
    >>> import xbp
    >>> _ = open("notes.txt", "w").write("not a model")
    >>> try:
    ...     xbp.load("notes.txt")
    ... except xbp.errors.XbpFileError as err:
    ...     print(type(err).__name__)
    XbpFileError
    """


class BackendUnavailableError(XbpValueError):
    """An array library is not installed or cannot be used on this machine.

    Examples
    --------
    >>> import xbp
    >>> usable = {info.name: info.usable for info in xbp.available_backends()}
    >>> try:
    ...     xbp.backend("cupy")  # no CUDA device on a CPU-only machine
    ... except xbp.errors.BackendUnavailableError:
    ...     assert not usable["cupy"]
    ... else:
    ...     assert usable["cupy"]
    """


class GradcheckError(XbpValueError):
    """Backprop and finite differences disagree beyond the tolerance.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> net = xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", seed=0)
    >>> x, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
    >>> try:
    ...     xbp.tools.gradcheck(net, x, y, tol=1e-300)  # no finite difference is that exact
    ... except xbp.errors.GradcheckError as err:
    ...     print(str(err).splitlines()[1].split()[0], "...")
    layer0.W ...
    """


class DivergenceError(XbpValueError):
    """Training produced a NaN or Inf loss or gradient.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> x = np.linspace(0, 100, 20).reshape(-1, 1)
    >>> net = xbp.mlp([1, 1], dtype="float32", seed=0)
    >>> try:
    ...     xbp.fit(net, x, 3 * x, epochs=20, batch_size=20, learning_rate=10.0, progress=False)
    ... except xbp.errors.DivergenceError as err:
    ...     print(str(err).split(":")[0])
    training diverged at epoch 5, step 5 (batch 1 of the epoch)
    >>> bool(np.isfinite(net.host_params()[0]["W"]).all())  # the last good weights
    True
    """


class CollectiveError(XbpValueError):
    """An error every process of a data-parallel run raises at the same point.

    It follows from settings the processes were checked to agree on (the
    handshake before the first step), so no process is left waiting in a
    collective for another: each raises it, none is aborted, and a script can
    catch it on every rank (e.g. ``compile=True`` refused under MPI).

    Examples
    --------
    >>> import xbp
    >>> issubclass(xbp.errors.CollectiveError, xbp.XbpError)  # caught like any xbp error
    True
    """


# -- how an error names the caller's arguments -------------------------------------
# A library message names its keyword (``loss='quadratic'``); a front end that spells
# its arguments otherwise (the command line's ``--loss quadratic``) installs its own
# table for the duration of a call, and the same message reads in its words. No
# message is ever rewritten after the fact.
_NO_VALUE = object()
_Table = Mapping[str, tuple[str, "Mapping[Any, str] | Callable[[Any], str]"]]
_SPELLING: contextvars.ContextVar[_Table | None] = contextvars.ContextVar(
    "xbp_argument_spelling", default=None
)


def arg(name: str, value: Any = _NO_VALUE) -> str:
    """The caller's spelling of keyword ``name`` (with ``value``), for error messages.

    Examples
    --------
    >>> from xbp.errors import arg, spelled
    >>> arg("loss", "quadratic")
    "loss='quadratic'"
    >>> with spelled({"loss": ("--loss", {})}):
    ...     arg("loss", "quadratic")
    '--loss quadratic'
    """
    spelling = (_SPELLING.get() or {}).get(name)
    if spelling is None:
        return name if value is _NO_VALUE else f"{name}={value!r}"
    flag, values = spelling
    if value is _NO_VALUE:
        return flag
    if callable(values):
        return f"{flag} {values(value)}"
    try:
        return f"{flag} {values.get(value, value)}"
    except TypeError:  # an unhashable value
        return f"{flag} {value}"


@contextlib.contextmanager
def spelled(table: _Table) -> Iterator[None]:
    """Spell keywords as ``table`` says (``{"loss": ("--loss", {})}``) within the block."""
    token = _SPELLING.set({**(_SPELLING.get() or {}), **table})
    try:
        yield
    finally:
        _SPELLING.reset(token)


class Terminated(KeyboardInterrupt):
    """A run ended by SIGTERM (what a preempting scheduler sends), raised like Ctrl-C.

    While :func:`xbp.fit` trains or :func:`xbp.save` writes, SIGTERM raises this
    :class:`KeyboardInterrupt` subclass instead of killing the process at once, so
    the same clean-up runs as for Ctrl-C: a file being written is left as it was
    (its temporary removed), the last checkpoint stays whole and resumable, and
    run locks are released. ``xbp`` commands exit with status 143 (128 + 15).

    Examples
    --------
    >>> import xbp
    >>> issubclass(xbp.errors.Terminated, KeyboardInterrupt)
    True
    >>> try:  # a job script that checkpoints can tell preemption from Ctrl-C
    ...     raise xbp.errors.Terminated("SIGTERM")
    ... except KeyboardInterrupt as stop:
    ...     print("preempted" if isinstance(stop, xbp.errors.Terminated) else "interrupted")
    preempted
    """

    signal_number = 15
