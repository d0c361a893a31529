"""NumPy: the host backend, and the format every other backend moves data to and from."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ..errors import XbpValueError
from . import Library, extended_namespace


class NumpyLibrary(Library):
    """NumPy on the CPU; its arrays are the host arrays, so moving data is free."""

    name = "numpy"
    module = "numpy"
    extra = None
    aliases = ("np",)
    host_arrays = True

    def owns_namespace(self, xp: Any) -> bool:
        return bool(array_api_compat.is_numpy_namespace(xp))

    def resolve_device(self, spec: Any) -> Any:
        if spec is None or str(spec) == "cpu":
            return "cpu"
        raise XbpValueError(
            f"device={spec!r}: the numpy backend runs on the CPU only; "
            "use device='cpu' (or None), or backend='cupy'/'torch' for a GPU"
        )

    def devices(self) -> list[str]:
        return ["cpu"]

    def kernel_namespace(self, xp: Any) -> Any:
        return _kernel_namespace(xp)

    def asarray(self, xp: Any, data: Any, dtype: Any, device: Any, copy: bool) -> Any:
        # plain NumPy calls: the compat namespace's asarray adds per-call overhead
        return np.array(data, dtype=dtype, copy=True) if copy else np.asarray(data, dtype=dtype)


LIBRARY = NumpyLibrary()


# np.sum, np.max and np.min are Python wrappers (argument handling, then the ufunc's
# reduce); on a tiny network's arrays the wrapper costs more than the sum itself (about
# 1 us of a 2-4-1 backprop's 25). The kernel calls the reductions directly: the same
# ufunc reduce with the same arguments, so the same bits.
def _sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)  # type: ignore[call-overload]


def _max(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]


def _min(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return np.minimum.reduce(x, axis=axis, keepdims=keepdims)  # type: ignore[call-overload]


def _kernel_namespace(xp: Any) -> Any:
    """``xp`` (array_api_compat's NumPy namespace) with the direct reductions."""
    return extended_namespace(xp, sum=_sum, max=_max, min=_min)
