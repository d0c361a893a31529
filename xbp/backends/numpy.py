"""NumPy: the host backend, and the format every other backend moves data to and from."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ..errors import XbpValueError
from . import Library


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

    def asarray(self, xp: Any, data: Any, dtype: Any, device: Any, copy: bool) -> Any:
        # plain NumPy calls: the compat namespace's asarray adds per-call overhead
        return np.array(data, dtype=dtype, copy=True) if copy else np.asarray(data, dtype=dtype)


LIBRARY = NumpyLibrary()
