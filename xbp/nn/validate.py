"""Input checks shared by every public entry point.

Each check raises an :class:`xbp.errors.XbpError` whose message names the
argument, says what was wrong and how to fix it. Checks run once at the
public boundary, never inside the batch loop.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import array_api_compat
import array_api_compat.numpy as host_xp
import numpy as np

from ..backends.select import Backend, backend
from ..errors import XbpTypeError, XbpValueError

__all__ = [
    "as_features",
    "as_targets",
    "check_number",
    "check_values",
    "check_int",
    "check_memory",
    "dtype_limit",
    "host_array",
    "is_host_array",
    "is_rows",
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
    ... except xbp.errors.XbpValueError as exc:
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


def is_rows(data: Any) -> bool:
    """True for a plain list (or tuple) of rows: ``[[1.0, 2.0], [3.0, 4.0]]``, a list of
    1-D arrays, or a list of numbers; False for a list of batches or ``(x, y)`` pairs."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    first = data[0]
    if isinstance(first, numbers.Number):
        return True
    if isinstance(first, np.ndarray):
        return first.ndim <= 1
    return isinstance(first, (list, tuple)) and all(isinstance(v, numbers.Number) for v in first)


def host_array(data: Any, argument: str) -> np.ndarray:
    """Host data (array, masked array, list of rows) as a NumPy array, or a one-line error
    naming ``argument`` (ragged rows, objects, masked values)."""
    return _host(data, argument)


def _host(data: Any, argument: str) -> np.ndarray:
    if type(data) is np.ndarray:  # the common case, without a conversion call
        host = data
    elif isinstance(data, np.ma.MaskedArray):
        host = _unmasked(data, argument)
    else:
        try:
            host = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise XbpValueError(
                f"{argument} could not be read as an array ({exc}); pass a rectangular numeric "
                "array"
            ) from None
    if host.dtype == object:
        raise XbpTypeError(
            f"{argument} has dtype object (ragged rows or mixed types); pass a rectangular "
            "numeric array"
        )
    return host


def _unmasked(data: np.ma.MaskedArray, argument: str) -> np.ndarray:
    """A masked array's values when nothing is masked; masked values are refused.

    xbp has no notion of a missing value, and training on the values hidden
    under a mask (often fill values such as 1e20) would be silent nonsense.
    """
    masked = int(np.ma.count_masked(data))
    if masked:
        raise XbpValueError(
            f"{argument} is a NumPy masked array with {masked} masked value(s); xbp does not "
            f"train on missing values: drop those rows or fill them ({argument}.filled(value)) "
            "and pass a plain array"
        )
    return np.asarray(data.data)


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
    return be.xp, be.library.detach(data), False


#: (namespace id, dtype) -> (NumPy dtype, largest finite value squared, largest finite
#: value) for backends whose arrays are host NumPy arrays: data already in that dtype needs
#: no conversion, and ``x . x < limit**2`` (False for NaN and Inf) clears its values in one
#: dot product; targets whose range a loss restricts are cleared by their min and max
_FAST: dict[tuple[int, Any], tuple[np.dtype[Any], float, float]] = {}


def _fast_path(be: Backend, dtype: Any) -> None:
    peak = dtype_limit(be, dtype)[0]
    _FAST.setdefault((id(be.xp), dtype), (np.dtype(dtype), peak * peak, peak))


_LIMITS: dict[tuple[int, Any], tuple[float, str]] = {}


def dtype_limit(be: Backend, dtype: Any) -> tuple[float, str]:
    """``(largest finite value, name)`` of ``be``'s floating ``dtype`` (cached)."""
    key = (id(be.xp), dtype)
    found = _LIMITS.get(key)
    if found is None:
        found = _LIMITS[key] = (float(be.xp.finfo(dtype).max), be.dtype_name(dtype))
    return found


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


def _value_range(be: Backend, xp: Any, a: Any) -> tuple[float, float]:
    """``(min, max)`` of ``a`` (host or device) as Python floats, in one read from the device."""
    if isinstance(a, np.ndarray):
        return float(np.minimum.reduce(a, axis=None)), float(np.maximum.reduce(a, axis=None))
    lo, hi = (float(v) for v in be.to_host(xp.stack((xp.min(a), xp.max(a)))))
    return lo, hi


def _check_range(lo: float, hi: float, argument: str, limit: float, into: str) -> None:
    """:func:`_check_values` from the values' range (NaN propagates into min and max)."""
    _refuse(argument, math.isfinite(lo) and math.isfinite(hi), max(-lo, hi), limit, into)


def _refuse(argument: str, finite: bool, peak: float, limit: float, into: str) -> None:
    """The value checks' errors: NaN or Inf anywhere, or a magnitude ``peak`` above ``limit``."""
    if not finite:
        raise XbpValueError(
            f"{argument} contains NaN or Inf; remove or impute those values before training"
        )
    if peak > limit:
        raise XbpValueError(
            f"{argument} holds values up to {peak:.4g} in magnitude but the network computes "
            f"in {into} (largest finite value {limit:.5g}): they would become Inf; scale the "
            "values (e.g. standardise them) or use a wider dtype"
        )


def _check_values(xp: Any, a: Any, argument: str, limit: float, into: str) -> None:
    """Refuse NaN, Inf and magnitudes above ``limit`` (the largest finite value of the
    type ``a`` is computed in, named by ``into``), reading ``a`` once when it is clean.

    On the host one dot product answers both questions for clean data: ``a . a`` is
    finite and at most ``limit**2`` only when every value is finite and within the
    limit. Anything else (or a device array) takes the exact path, which also says
    which rule failed.
    """
    if isinstance(a, np.ndarray):
        s = float(np.vdot(a, a))
        if s <= limit * limit and math.isfinite(s):
            return
        finite = bool(np.isfinite(a).all())
        peak = float(np.abs(a).max()) if finite else math.nan
    else:
        peak = float(xp.max(xp.abs(a)))  # NaN propagates; one value read from the device
        finite = math.isfinite(peak)
    _refuse(argument, finite, peak, limit, into)


def check_values(a: np.ndarray, argument: str, limit: tuple[float, str]) -> None:
    """Refuse NaN, Inf and values beyond ``limit = (largest finite value, type name)`` in
    the host array ``a`` (a streamed batch, before its cast)."""
    _check_values(host_xp, a, argument, *limit)


def _no_complex(xp: Any, a: Any, argument: str) -> None:
    if _is_kind(xp, a.dtype, "complex floating"):
        raise XbpTypeError(
            f"{argument} has complex dtype {a.dtype}; networks compute on real numbers and a "
            f"cast would drop the imaginary part: pass {argument}.real and {argument}.imag as "
            "separate feature columns"
        )


def _on_device(be: Backend, xp: Any, a: Any, on_host: bool, dtype: Any) -> Any:
    """The checked ``a`` on ``be``'s device as ``dtype``.

    Host data is moved (and cast) by the backend; device data is cast only when
    its dtype differs, so an array already right is returned as is.
    """
    if on_host:
        return be.asarray(a, dtype)
    return a if a.dtype == dtype else xp.astype(a, dtype)


def as_features(
    be: Backend,
    data: Any,
    dtype: Any,
    n_features: int,
    argument: str = "x",
    limit: tuple[float, str] | None = None,
) -> Any:
    """Check ``x`` and return it on ``be``'s device as ``dtype``, shape ``(n, n_features)``.

    ``limit`` is ``(largest finite value, type name)`` of the type the network
    computes in (float16 under ``precision='fp16'``); by default ``dtype``'s.
    Values beyond it are refused: the cast would turn them into Inf.
    """
    fast = _FAST.get((id(be.xp), dtype)) if type(data) is np.ndarray else None
    if fast is not None and data.dtype is fast[0]:
        # the common call (host data already in the network's host dtype and shape):
        # one dot product checks the values and the array is used as it is
        shape = data.shape
        if len(shape) == 2 and shape[1] == n_features and shape[0]:
            bound = fast[1] if limit is None else limit[0] * limit[0]
            if float(np.vdot(data, data)) < bound:
                return data
            # else: the exact checks below say which value is wrong
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
        _no_complex(xp, a, argument)
        raise XbpTypeError(
            f"{argument} has dtype {a.dtype}, not floating point; cast it first, e.g. "
            f"{argument}.astype('float32') (and scale it if it holds raw pixel values)"
        )
    peak, into = dtype_limit(be, dtype) if limit is None else limit
    _check_values(xp, a, argument, peak, into)
    if on_host and be.is_host:
        _fast_path(be, dtype)
    return _on_device(be, xp, a, on_host, dtype)


def as_targets(
    be: Backend,
    data: Any,
    dtype: Any,
    n_outputs: int,
    n_rows: int,
    argument: str = "y",
    rule: Callable[[int, float | None, float | None, str], None] | None = None,
) -> Any:
    """Check targets and return them on the device as ``(n_rows, n_outputs)`` floats.

    Integer class labels of shape ``(n,)`` are one-hot encoded when the network
    has more than one output. ``rule(width, lo, hi, argument)`` is the loss's
    rule on its targets (:func:`xbp.nn.losses.check_target_range`): given
    targets with rows, it gets their smallest and largest values, read once
    together with the NaN/Inf check (one-hot rows made from labels hold only
    0 and 1, which every rule takes).
    """
    fast = _FAST.get((id(be.xp), dtype)) if type(data) is np.ndarray else None
    if fast is not None and data.dtype is fast[0] and data.shape == (n_rows, n_outputs):
        # float targets in the right shape, in one read when clean
        if rule is None:
            if float(np.vdot(data, data)) < fast[1]:
                return data
        elif n_rows:
            lo, hi = _value_range(be, host_xp, data)
            if -fast[2] <= lo and hi <= fast[2]:  # finite and within range (False for NaN)
                rule(n_outputs, lo, hi, argument)
                return data
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
    is_float = _is_float(xp, a)
    if not (is_float or _is_int(xp, a)):
        _no_complex(xp, a, argument)
        raise XbpTypeError(f"{argument} has dtype {a.dtype}; pass numeric targets")
    if a.ndim == 1:
        a = xp.reshape(a, (-1, 1))
    if a.shape[1] != n_outputs:
        raise XbpValueError(
            f"{argument} has {a.shape[1]} columns but the network has {n_outputs} outputs; "
            f"pass (n_samples, {n_outputs}) targets"
        )
    if on_host and a.ndim == 2 and be.is_host:
        _fast_path(be, dtype)
    if rule is not None and a.shape[0]:  # one read for the value check and the loss's rule
        lo, hi = _value_range(be, xp, a)
        if is_float:
            _check_range(lo, hi, argument, *dtype_limit(be, dtype))
        rule(n_outputs, lo, hi, argument)
    elif is_float:  # integer targets are finite and within every float type's range
        peak, into = dtype_limit(be, dtype)
        _check_values(xp, a, argument, peak, into)
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
