"""Input checks shared by every public entry point.

Each check raises an :class:`xbp.errors.XbpError` whose message names the
argument, says what was wrong and how to fix it. Checks run once at the
public boundary, never inside the batch loop.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import array_api_compat
import array_api_compat.numpy as host_xp
import numpy as np

from .backend import Backend, backend
from .errors import XbpTypeError, XbpValueError

__all__ = [
    "as_features",
    "as_targets",
    "check_number",
    "check_int",
    "check_memory",
    "is_host_array",
    "memory_limit",
]


def memory_limit() -> int | None:
    """The most bytes this process could allocate: the machine's physical memory, or
    a lower address-space limit (``ulimit -v``); None where neither can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(int(soft))
    except (ImportError, ValueError, OSError, AttributeError):
        pass
    return min(limits) if limits else None


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} EiB"  # pragma: no cover - the loop always returns


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse, before allocating, what could never fit in this machine's memory.

    ``nbytes`` is counted with Python integers (no overflow); ``what`` says what would be
    allocated and from which arguments, ``fix`` what to do. Sizes that fit are left to
    the allocator (memory other processes use is not counted).

    Examples
    --------
    >>> import xbp
    >>> try:
    ...     check_memory(2**80, "sizes=[3, 2**40]", "use smaller layers")
    ... except xbp.XbpValueError as exc:
    ...     print(str(exc).split(" of memory")[0].split(",")[0])
    sizes=[3
    """
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        raise XbpValueError(
            f"{what} would need {_size(nbytes)}, more than the {_size(limit)} of memory this "
            f"process can have; {fix}"
        )


def is_host_array(data: Any) -> bool:
    """True for data that lives on the host: NumPy arrays, lists, tuples."""
    return isinstance(data, (np.ndarray, list, tuple))


def _host(data: Any, argument: str) -> np.ndarray:
    try:
        host = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise XbpValueError(
            f"{argument} could not be read as an array ({exc}); pass a rectangular numeric array"
        ) from None
    if host.dtype == object:
        raise XbpTypeError(
            f"{argument} has dtype object (ragged rows or mixed types); pass a rectangular "
            "numeric array"
        )
    return host


def _on_backend(be: Backend, data: Any, argument: str) -> tuple[Any, Any, bool]:
    """``(xp, a, on_host)``: host data as a NumPy array with NumPy's namespace, or an
    array of ``be`` with ``be.xp``; foreign arrays and devices are refused.

    The checks read ``a`` only through ``xp``, so each is written once for both:
    bad host data is caught on the host, before it is moved to the device.
    """
    if is_host_array(data):
        return host_xp, _host(data, argument), True
    if not array_api_compat.is_array_api_obj(data):
        raise XbpTypeError(
            f"{argument} is a {type(data).__name__}, not an array; pass a NumPy array or an "
            f"array of the network's backend ({be.name})"
        )
    if not be.owns(data):
        other = backend(data)
        raise XbpTypeError(
            f"{argument} is a {other.name} array but the network runs on {be!r}; pass NumPy "
            f"host data or move the array first (net.to({other.name!r}) or "
            f"xbp.backend({other.name!r}).to_host({argument}))"
        )
    if not be.same_device(data):
        raise XbpValueError(
            f"{argument} is on device {array_api_compat.device(data)!s} but the network is on "
            f"{be.device!s}; move one of them so both are on the same device"
        )
    return be.xp, data, False


def _all_finite(xp: Any, a: Any) -> bool:
    if isinstance(a, np.ndarray):  # host data: NumPy's own method skips a Python wrapper
        return bool(np.isfinite(a).all())
    return bool(xp.all(xp.isfinite(a)))


_KINDS: dict[tuple[int, Any, str], bool] = {}


def _is_kind(xp: Any, dtype: Any, kind: str) -> bool:
    # xp.isdtype is a Python function costing microseconds on NumPy; the answer per
    # (namespace, dtype) never changes, so public calls on tiny data look it up
    try:
        key = (id(xp), dtype, kind)
        found = _KINDS.get(key)
    except TypeError:  # an unhashable dtype object
        return bool(xp.isdtype(dtype, kind))
    if found is None:
        found = _KINDS[key] = bool(xp.isdtype(dtype, kind))
    return found


def _is_float(xp: Any, a: Any) -> bool:
    return _is_kind(xp, a.dtype, "real floating")


def _is_int(xp: Any, a: Any) -> bool:
    return _is_kind(xp, a.dtype, "integral")


def _min_max(xp: Any, a: Any) -> tuple[Any, Any]:
    return xp.min(a), xp.max(a)


def _on_device(be: Backend, xp: Any, a: Any, on_host: bool, dtype: Any) -> Any:
    """The checked ``a`` on ``be``'s device as ``dtype``.

    Host data is moved (and cast) by the backend; device data is cast only when
    its dtype differs, so an array already right is returned as is.
    """
    if on_host:
        return be.asarray(a, dtype)
    return a if a.dtype == dtype else xp.astype(a, dtype)


def as_features(be: Backend, data: Any, dtype: Any, n_features: int, argument: str = "x") -> Any:
    """Check ``x`` and return it on ``be``'s device as ``dtype``, shape ``(n, n_features)``."""
    xp, a, on_host = _on_backend(be, data, argument)
    if a.ndim != 2:
        hint = f"{argument}[None, :]" if a.ndim == 1 else f"{argument}.reshape(n_samples, -1)"
        raise XbpValueError(
            f"{argument} has shape {tuple(a.shape)} but must be 2-D (n_samples, n_features); "
            f"use {hint}"
        )
    if a.shape[0] == 0:
        raise XbpValueError(f"{argument} has no rows; pass at least one sample")
    if a.shape[1] != n_features:
        raise XbpValueError(
            f"{argument} has {a.shape[1]} features per row but the first layer takes "
            f"{n_features}; reshape the data or build the network with n_in={a.shape[1]}"
        )
    if not _is_float(xp, a):
        raise XbpTypeError(
            f"{argument} has dtype {a.dtype}, not floating point; cast it first, e.g. "
            f"{argument}.astype('float32') (and scale it if it holds raw pixel values)"
        )
    if not _all_finite(xp, a):
        raise XbpValueError(
            f"{argument} contains NaN or Inf; remove or impute those values before training"
        )
    return _on_device(be, xp, a, on_host, dtype)


def as_targets(
    be: Backend,
    data: Any,
    dtype: Any,
    n_outputs: int,
    n_rows: int,
    argument: str = "y",
) -> Any:
    """Check targets and return them on the device as ``(n_rows, n_outputs)`` floats.

    Integer class labels of shape ``(n,)`` are one-hot encoded when the network
    has more than one output.
    """
    xp, a, on_host = _on_backend(be, data, argument)
    if a.ndim == 0 or a.ndim > 2:
        raise XbpValueError(
            f"{argument} has shape {tuple(a.shape)}; pass (n_samples, {n_outputs}) targets "
            "or (n_samples,) integer class labels"
        )
    if a.shape[0] != n_rows:
        raise XbpValueError(
            f"{argument} has {a.shape[0]} rows but x has {n_rows}; give one target per sample"
        )
    if a.ndim == 1 and n_outputs > 1:
        if not _is_int(xp, a):
            raise XbpTypeError(
                f"{argument} is 1-D with dtype {a.dtype}; 1-D targets must be integer class "
                f"labels 0..{n_outputs - 1}, otherwise pass a 2-D (n_samples, {n_outputs}) array"
            )
        lo, hi = (int(v) for v in _min_max(xp, a))
        if lo < 0 or hi >= n_outputs:
            raise XbpValueError(
                f"{argument} holds class labels from {lo} to {hi} but the network has "
                f"{n_outputs} outputs; labels must lie in 0..{n_outputs - 1}"
            )
        labels = be.asarray(a) if on_host else a
        dxp = be.xp  # the one-hot matrix is built on the device
        classes = dxp.arange(n_outputs, device=be.device)
        return dxp.astype(dxp.reshape(labels, (-1, 1)) == dxp.reshape(classes, (1, -1)), dtype)
    if not (_is_float(xp, a) or _is_int(xp, a)):
        raise XbpTypeError(f"{argument} has dtype {a.dtype}; pass numeric targets")
    if a.ndim == 1:
        a = xp.reshape(a, (-1, 1))
    if a.shape[1] != n_outputs:
        raise XbpValueError(
            f"{argument} has {a.shape[1]} columns but the network has {n_outputs} outputs; "
            f"pass (n_samples, {n_outputs}) targets"
        )
    if not _all_finite(xp, a):
        raise XbpValueError(f"{argument} contains NaN or Inf; clean the targets first")
    return _on_device(be, xp, a, on_host, dtype)


def check_number(
    value: Any,
    argument: str,
    *,
    low: float | None = 0.0,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = False,
) -> float:
    """A finite real number in the given range, else an error naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise XbpTypeError(f"{argument}={value!r} must be a number")
    v = float(value)
    if not math.isfinite(v):
        raise XbpValueError(f"{argument}={value!r} must be finite")
    if low is not None and (v <= low if low_open else v < low):
        op = ">" if low_open else ">="
        raise XbpValueError(f"{argument}={value!r} must be {op} {low:g}")
    if high is not None and (v >= high if high_open else v > high):
        op = "<" if high_open else "<="
        raise XbpValueError(f"{argument}={value!r} must be {op} {high:g}")
    return v


def check_int(value: Any, argument: str, *, low: int = 1) -> int:
    """An integer >= ``low``, else an error naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise XbpTypeError(f"{argument}={value!r} must be an integer")
    if int(value) < low:
        raise XbpValueError(f"{argument}={value!r} must be an integer >= {low}")
    return int(value)
