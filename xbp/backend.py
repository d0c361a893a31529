"""Backend selection: the only module that knows array-library names.

A :class:`Backend` is an array-API namespace (``xp``) plus a device. It moves
host NumPy data onto its device and results back, and it resolves the
``float32``/``float64`` dtype names. Everything else in xbp receives a
``Backend`` (or its ``xp``) and writes the math once.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .errors import BackendUnavailableError, XbpTypeError, XbpValueError

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendInfo",
    "available_backends",
    "backend",
    "default_backend",
    "gpu_count",
    "namespace_of",
]

#: The array libraries xbp knows, in the order reports list them.
BACKEND_NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict")
_ALIASES = {"np": "numpy", "array-api-strict": "array_api_strict", "strict": "array_api_strict"}
_DTYPE_NAMES = ("float32", "float64")

_DEFAULT: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "xbp_default_backend", default=None
)


def _import(name: str) -> ModuleType:
    module = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "jax": "jax"}.get(name, name)
    if importlib.util.find_spec(module) is None:
        extra = {"cupy": "cuda12", "torch": "torch", "jax": "jax", "array_api_strict": "test"}
        hint = f"pip install 'xbp[{extra[name]}]'" if name in extra else f"pip install {name}"
        raise BackendUnavailableError(
            f"backend {name!r} is not installed; install it with `{hint}` "
            "or choose another backend (see xbp.available_backends())"
        )
    return importlib.import_module(module)


def _namespace(name: str) -> Any:
    _import(name)
    if name == "jax":
        import jax.numpy as jnp

        return jnp
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict
    return importlib.import_module(f"array_api_compat.{name}")


def _cupy_problem() -> str | None:
    """Why CuPy cannot run here, or None when a CUDA device works."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy is installed but no CUDA device is usable: no device found"
        cupy.zeros(1).sum().get()
    except Exception as exc:  # CUDA reports driver problems in several types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cupy is installed but no CUDA device is usable: {msg}"
    return None


def gpu_count(name: str) -> int:
    """How many CUDA devices ``name`` (``"cupy"`` or ``"torch"``) can use here; 0 when none."""
    try:
        if name == "cupy":
            if _cupy_problem() is not None:
                return 0
            import cupy

            return int(cupy.cuda.runtime.getDeviceCount())
        if name == "torch":
            import torch

            return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except ImportError:
        return 0
    return 0


def _jax_x64() -> bool:
    import jax

    return bool(jax.config.read("jax_enable_x64"))


def _gpu_index(device: Any, name: str) -> int:
    if isinstance(device, bool):
        raise XbpTypeError(f"device={device!r} is not a device; pass 'cpu', 'cuda', 'cuda:N' or N")
    if isinstance(device, int):
        return device
    text = str(device).lower()
    if text in ("cuda", "gpu"):
        return 0
    for prefix in ("cuda:", "gpu:"):
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            return int(text[len(prefix) :])
    raise XbpValueError(
        f"device={device!r} is not a device for backend {name!r}; "
        "pass 'cpu', 'cuda', 'cuda:N' or an integer GPU index N"
    )


def _resolve_device(name: str, device: Any) -> Any:
    """Turn a user's device spec into the backend's own device object."""
    if name == "numpy":
        if device is None or str(device) == "cpu":
            return "cpu"
        raise XbpValueError(
            f"device={device!r}: the numpy backend runs on the CPU only; "
            "use device='cpu' (or None), or backend='cupy'/'torch' for a GPU"
        )
    if name == "array_api_strict":
        import array_api_strict as s

        if device is None or str(device).lower() == "cpu":
            return s.Device("CPU_DEVICE")
        if isinstance(device, s.Device):
            return device
        devices = s.__array_namespace_info__().devices()
        for d in devices:
            if str(device) in (str(d), d._device if hasattr(d, "_device") else None):
                return d
        raise XbpValueError(
            f"device={device!r} is not an array_api_strict device; use one of "
            f"{[str(d) for d in devices]}, e.g. array_api_strict.Device('device1')"
        )
    if name == "torch":
        import torch

        if isinstance(device, torch.device):
            dev = device
        elif device is None or str(device) == "cpu":
            dev = torch.device("cpu")
        else:
            dev = torch.device("cuda", _gpu_index(device, name))
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"device={device!r}: torch is installed but CUDA is not available "
                    "(CPU build or no driver); use device='cpu'"
                )
            index = 0 if dev.index is None else dev.index
            if index >= torch.cuda.device_count():
                raise XbpValueError(
                    f"device={device!r}: torch sees {torch.cuda.device_count()} CUDA device(s); "
                    f"use an index below {torch.cuda.device_count()}"
                )
            dev = torch.device("cuda", index)
        return dev
    if name == "cupy":
        import cupy

        if device is not None and str(device) == "cpu":
            raise XbpValueError(
                "device='cpu': cupy runs on CUDA GPUs only; use backend='numpy' for the CPU"
            )
        problem = _cupy_problem()
        if problem:
            raise BackendUnavailableError(problem)
        if isinstance(device, cupy.cuda.Device):
            return device
        index = 0 if device is None else _gpu_index(device, name)
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise XbpValueError(
                f"device={device!r}: cupy sees {count} CUDA device(s); use an index below {count}"
            )
        return cupy.cuda.Device(index)
    if name == "jax":
        import jax

        if device is None:
            return jax.devices()[0]
        if isinstance(device, jax.Device):
            return device
        if str(device) == "cpu":
            return jax.devices("cpu")[0]
        index = _gpu_index(device, name)
        try:
            gpus = jax.devices("gpu")
        except RuntimeError as exc:
            raise BackendUnavailableError(
                f"device={device!r}: jax has no GPU here ({exc}); use device='cpu'"
            ) from None
        if index >= len(gpus):
            raise XbpValueError(
                f"device={device!r}: jax sees {len(gpus)} GPU(s); use an index below {len(gpus)}"
            )
        return gpus[index]
    raise AssertionError(name)


def _name_of_namespace(xp: Any) -> str:
    checks = (
        ("numpy", array_api_compat.is_numpy_namespace),
        ("cupy", array_api_compat.is_cupy_namespace),
        ("torch", array_api_compat.is_torch_namespace),
        ("jax", array_api_compat.is_jax_namespace),
        ("array_api_strict", array_api_compat.is_array_api_strict_namespace),
    )
    for name, check in checks:
        if check(xp):
            return name
    raise XbpTypeError(
        f"backend={getattr(xp, '__name__', xp)!r} is not an array library xbp supports; "
        f"use one of {list(BACKEND_NAMES)}"
    )


@dataclass(eq=False)
class Backend:
    """An array-API namespace on one device.

    Build one with :func:`xbp.backend`. A backend is also a context manager
    that makes it the default for the code inside the ``with`` block.

    Attributes
    ----------
    name : str
        One of ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"``, ``"array_api_strict"``.
    xp : module
        The array-API-compatible namespace (from ``array-api-compat``).
    device : object
        The backend's own device object.

    Examples
    --------
    >>> import xbp
    >>> be = xbp.backend("numpy")
    >>> be.to_host(be.asarray([1.0, 2.0], dtype="float32")).dtype
    dtype('float32')
    """

    name: str
    xp: Any
    device: Any
    _tokens: list[contextvars.Token[Backend | None]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={str(self.device)!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Backend)
            and other.name == self.name
            and str(other.device) == str(self.device)
        )

    def __hash__(self) -> int:
        return hash((self.name, str(self.device)))

    def __enter__(self) -> Backend:
        self._tokens.append(_DEFAULT.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _DEFAULT.reset(self._tokens.pop())

    # -- dtypes --------------------------------------------------------
    def dtype(self, spec: Any, *, argument: str = "dtype") -> Any:
        """Resolve ``"float32"``/``"float64"`` or a dtype object to this namespace's dtype."""
        xp = self.xp
        for dname in _DTYPE_NAMES:
            candidate = getattr(xp, dname)
            match = spec == dname
            if not match and not isinstance(spec, str):
                try:
                    match = bool(spec == candidate) or np.dtype(spec) == np.dtype(dname)
                except TypeError:
                    match = False
            if match:
                if dname == "float64" and self.name == "jax" and not _jax_x64():
                    raise XbpValueError(
                        f"{argument}='float64' on the jax backend needs 64-bit mode, which is off "
                        "(jax would silently compute in float32); enable it first with "
                        "jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1, "
                        "or use dtype='float32'"
                    )
                if dname == "float64" and str(self.device).endswith("no_float64')"):
                    raise XbpValueError(f"{argument}='float64' is not supported on {self!r}")
                return candidate
        raise XbpTypeError(
            f"{argument}={spec!r} is not supported; use 'float32' or 'float64' "
            "(or the namespace's xp.float32 / xp.float64)"
        )

    def dtype_name(self, dtype: Any) -> str:
        for dname in _DTYPE_NAMES:
            if dtype == getattr(self.xp, dname):
                return dname
        return str(dtype)

    # -- moving data ---------------------------------------------------
    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array of this namespace (whatever its device)."""
        if not array_api_compat.is_array_api_obj(a):
            return False
        try:
            return _name_of_namespace(array_api_compat.array_namespace(a)) == self.name
        except (TypeError, XbpTypeError):
            return False

    def asarray(self, data: Any, dtype: Any = None, *, copy: bool = False) -> Any:
        """Move host data (NumPy array, list, scalar) onto this backend's device.

        ``copy=True`` guarantees the result shares no memory with ``data``, so
        xbp may update it in place.
        """
        dt = None if dtype is None else self.dtype(dtype)
        if not isinstance(data, np.ndarray) and array_api_compat.is_array_api_obj(data):
            if not self.owns(data):
                data = backend(data).to_host(data)
        if self.name == "cupy":
            with self.device:
                out = self.xp.asarray(data, dtype=dt)
                return out.copy() if copy and out is data else out
        if self.name == "numpy":
            out = np.array(data, dtype=dt, copy=True) if copy else np.asarray(data, dtype=dt)
            return out
        out = self.xp.asarray(data, dtype=dt, device=self.device)
        if copy and self.name != "jax":  # jax arrays are immutable: sharing is harmless
            out = self.xp.asarray(out, copy=True)
        return out

    def to_host(self, a: Any) -> np.ndarray:
        """Return ``a`` as a NumPy array on the host (bit-exact)."""
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return np.asarray(a)
        if self.name == "cupy":
            return a.get()  # type: ignore[no-any-return]
        if self.name == "torch":
            return a.detach().cpu().numpy()  # type: ignore[no-any-return]
        if self.name == "array_api_strict":
            import array_api_strict as s

            return np.array(a.to_device(s.Device("CPU_DEVICE")), copy=True)
        return np.asarray(a)

    def from_dlpack(self, a: Any) -> Any:
        """Import an array from another library through DLPack, onto this backend's device.

        Zero-copy where the producer's memory is on this device; otherwise the
        data is moved (through the host when DLPack cannot cross devices).
        """
        try:
            out = self.xp.from_dlpack(a)
        except (BufferError, RuntimeError, TypeError, ValueError):
            return self.asarray(np.from_dlpack(a))  # e.g. a CPU tensor into CuPy
        if not self.same_device(out):
            out = self.xp.asarray(out, device=self.device)
        return out

    def device_of(self, a: Any) -> Any:
        return array_api_compat.device(a)

    def same_device(self, a: Any) -> bool:
        return str(array_api_compat.device(a)) == str(self.device)

    def sync(self) -> None:
        """Wait for queued device work (for timing); a no-op on the CPU backends."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.Stream.null.synchronize()
        elif self.name == "torch" and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


def backend(spec: Any = None, device: Any = None) -> Backend:
    """Resolve a backend by name, namespace or existing array.

    Parameters
    ----------
    spec : str, module, array, Backend or None
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or ``"array_api_strict"``;
        an array namespace (``numpy``, ``torch``, ``array_api_compat.numpy`` ...);
        an array, whose namespace and device are taken; a ``Backend``; or None
        for the current default (NumPy on the CPU unless a ``with`` block set one).
    device : str, int or device object, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a GPU index, or the backend's own
        device object (e.g. ``array_api_strict.Device("device1")``).

    Returns
    -------
    Backend

    Examples
    --------
    >>> import xbp
    >>> xbp.backend("numpy")
    Backend('numpy', device='cpu')
    >>> with xbp.backend("numpy"):
    ...     xbp.default_backend().name
    'numpy'
    """
    if spec is None:
        current = default_backend()
        return current if device is None else backend(current.name, device)
    if isinstance(spec, Backend):
        return spec if device is None else backend(spec.name, device)
    if isinstance(spec, str):
        name = _ALIASES.get(spec.lower(), spec.lower())
        if name not in BACKEND_NAMES:
            raise XbpValueError(f"backend={spec!r} is not known; use one of {list(BACKEND_NAMES)}")
        xp = _namespace(name)
        return Backend(name, xp, _resolve_device(name, device))
    if isinstance(spec, ModuleType):
        name = _name_of_namespace(spec)
        return backend(name, device)
    if array_api_compat.is_array_api_obj(spec):
        name = _name_of_namespace(array_api_compat.array_namespace(spec))
        if device is None:
            device = array_api_compat.device(spec)
        return backend(name, device)
    raise XbpTypeError(
        f"backend={spec!r} is neither a backend name, an array namespace nor an array; "
        f"use one of {list(BACKEND_NAMES)}"
    )


def default_backend() -> Backend:
    """The backend of the innermost ``with xbp.backend(...)`` block, else NumPy on the CPU."""
    current = _DEFAULT.get()
    return current if current is not None else backend("numpy")


def namespace_of(*arrays: Any, argument: str = "arrays") -> Backend:
    """The single backend of some arrays; raise when they mix libraries or devices."""
    found: Backend | None = None
    for a in arrays:
        if a is None:
            continue
        be = backend(a)
        if found is not None and be != found:
            raise XbpTypeError(
                f"{argument} mix {found!r} and {be!r}; move them to one backend and device "
                "first (e.g. Backend.asarray or Backend.to_host)"
            )
        found = be
    return found if found is not None else default_backend()


@dataclass
class BackendInfo:
    """What :func:`available_backends` reports about one array library."""

    name: str
    installed: bool
    usable: bool
    version: str | None
    devices: list[str]
    reason: str | None = None


def available_backends() -> list[BackendInfo]:
    """Report each known backend: installed, usable, its devices, and why not.

    Examples
    --------
    >>> import xbp
    >>> [b.name for b in xbp.available_backends()][:1]
    ['numpy']
    """
    infos = []
    for name in BACKEND_NAMES:
        module = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "jax": "jax"}.get(name, name)
        if importlib.util.find_spec(module) is None:
            infos.append(BackendInfo(name, False, False, None, [], f"{name} is not installed"))
            continue
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # a broken install is reported, not raised
            infos.append(BackendInfo(name, True, False, None, [], f"import failed: {exc}"))
            continue
        version = getattr(mod, "__version__", None)
        devices: list[str] = []
        reason = None
        if name == "numpy":
            devices = ["cpu"]
        elif name == "cupy":
            reason = _cupy_problem()
            if reason is None:
                devices = [f"cuda:{i}" for i in range(mod.cuda.runtime.getDeviceCount())]
        elif name == "torch":
            devices = ["cpu"]
            if mod.cuda.is_available():
                devices += [f"cuda:{i}" for i in range(mod.cuda.device_count())]
        elif name == "jax":
            devices = [str(d) for d in mod.devices()]
            if not _jax_x64():
                reason = (
                    "usable in float32; float64 needs jax.config.update('jax_enable_x64', True)"
                )
        else:
            devices = [str(d).split("'")[1] for d in mod.__array_namespace_info__().devices()]
        usable = not (name == "cupy" and reason is not None)
        infos.append(BackendInfo(name, True, usable, version, devices, reason))
    return infos
