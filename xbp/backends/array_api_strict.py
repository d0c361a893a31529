"""array_api_strict: the reference namespace, with test devices (one without float64)."""

from __future__ import annotations

import importlib
from typing import Any

import array_api_compat
import numpy as np

from ..errors import XbpValueError
from . import Library

#: test devices xbp cannot run on, and why (``xbp backends`` does not list them)
UNSUPPORTED = {
    "no_x64": (
        "array_api_strict's 'no_x64' device has no 64-bit integers, which xbp uses for class "
        "labels and batch indices (float32 alone is not enough); use Device('no_float64') to "
        "run without float64"
    ),
}


class ArrayApiStrictLibrary(Library):
    """The array API reference implementation; catches any use beyond the standard."""

    name = "array_api_strict"
    module = "array_api_strict"
    extra = "test"
    aliases = ("array-api-strict", "strict")

    def __init__(self) -> None:
        self._cpu: Any = None  # the CPU device, looked up once (to_host is on a hot path)

    def namespace(self) -> Any:
        # the library is the namespace: array_api_compat has no wrapper for it
        self.load()
        return importlib.import_module("array_api_strict")

    def _cpu_device(self) -> Any:
        if self._cpu is None:
            import array_api_strict

            self._cpu = array_api_strict.Device("CPU_DEVICE")
        return self._cpu

    def devices(self) -> list[str]:
        import array_api_strict

        names = [
            str(d).split("'")[1] for d in array_api_strict.__array_namespace_info__().devices()
        ]
        return [n for n in names if n not in UNSUPPORTED]

    def owns_namespace(self, xp: Any) -> bool:
        return bool(array_api_compat.is_array_api_strict_namespace(xp))

    def resolve_device(self, spec: Any) -> Any:
        import array_api_strict

        if spec is None or str(spec).lower() == "cpu":
            return self._cpu_device()
        devices = array_api_strict.__array_namespace_info__().devices()
        for d in devices:
            if spec == d or str(spec) in (str(d), d._device if hasattr(d, "_device") else None):
                name = str(d).split("'")[1]
                if name in UNSUPPORTED:
                    raise XbpValueError(f"device={spec!r}: {UNSUPPORTED[name]}")
                return d
        if isinstance(spec, array_api_strict.Device):
            return spec
        raise XbpValueError(
            f"device={spec!r} is not an array_api_strict device; use one of "
            f"{[str(d) for d in devices]}, e.g. array_api_strict.Device('device1')"
        )

    def check_dtype(self, dname: str, device: Any, argument: str, owner: object) -> None:
        # the test device "no_float64" emulates hardware without float64
        if dname == "float64" and str(device).endswith("no_float64')"):
            raise XbpValueError(
                f"{argument}='float64' is not supported on {owner!r}; use dtype='float32' "
                "or another device"
            )

    def to_host(self, a: Any) -> np.ndarray:
        return np.array(a.to_device(self._cpu_device()), copy=True)


LIBRARY = ArrayApiStrictLibrary()
