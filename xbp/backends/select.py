"""Backend selection: an array library (from :mod:`xbp.backends`) on one device.

A :class:`Backend` is an array-API namespace (``xp``) plus a device. It moves
host NumPy data onto its device and results back, and it resolves the
``float32``/``float64`` dtype names. Everything else in xbp receives a
``Backend`` (or its ``xp``) and writes the math once. Every library-specific
decision is delegated to the backend's :class:`xbp.backends.Library`; this
module names no library.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .. import backends
from ..errors import XbpTypeError, XbpValueError
from . import BackendInfo, Library

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
BACKEND_NAMES = backends.names()
_DTYPE_NAMES = ("float32", "float64")

_DEFAULT: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "xbp_default_backend", default=None
)


def gpu_count(name: str) -> int:
    """How many GPUs backend ``name`` (e.g. ``"cupy"`` or ``"torch"``) can use here; 0 when none."""
    try:
        return backends.lookup(name).gpu_count()
    except XbpValueError:  # an unknown name has no GPUs, as before the registry
        return 0


@dataclass(eq=False)
class Backend:
    """An array-API namespace on one device.

    Build one with :func:`xbp.backends.select`. A backend is also a context manager
    that makes it the default for the code inside the ``with`` block.

    Attributes
    ----------
    name : str
        A registered library name: ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"``,
        ``"array_api_strict"`` (see :data:`BACKEND_NAMES`).
    xp : module
        The array-API-compatible namespace (from ``array-api-compat``).
    device : object
        The backend's own device object.
    library : xbp.backends.Library
        The library object every library-specific decision is delegated to.
    kernel_xp : module
        The namespace xbp's kernels compute with: ``xp``, or for NumPy ``xp`` with
        its reductions called directly (the same bits; ``Library.kernel_namespace``).

    Examples
    --------
    >>> import xbp
    >>> be = xbp.backend("numpy")
    >>> be.to_host(be.asarray([1.0, 2.0], dtype="float32")).dtype
    dtype('float32')
    >>> be.is_host, be.mutable
    (True, True)
    """

    name: str
    xp: Any
    device: Any
    library: Library = field(init=False, repr=False)
    kernel_xp: Any = field(init=False, repr=False)
    _tokens: list[contextvars.Token[Backend | None]] = field(default_factory=list, repr=False)
    _checked_dtypes: dict[int, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.library = backends.lookup(self.name)
        #: the namespace the kernels compute with (see Library.kernel_namespace)
        self.kernel_xp = self.library.kernel_namespace(self.xp)

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

    # -- what the library allows ---------------------------------------
    @property
    def mutable(self) -> bool:
        """False when arrays cannot be written in place (JAX): updates must rebind."""
        return self.library.mutable_arrays

    @property
    def is_host(self) -> bool:
        """True when this backend's arrays are host NumPy arrays (moving data is free)."""
        return self.library.host_arrays

    def gpu_count(self) -> int:
        """How many GPUs this backend's library can use here; 0 when none."""
        return self.library.gpu_count()

    def local_device(self, local_rank: int) -> Any:
        """The device spec for one GPU per MPI rank (None: the library's default device)."""
        return self.library.local_device(local_rank)

    def mpi_device_buffers(self, cuda_aware: bool) -> bool:
        """Whether MPI (``cuda_aware`` or not) may read this backend's device buffers directly."""
        return self.library.mpi_device_buffers(cuda_aware)

    def compiler(self) -> str | None:
        """How a training step compiles on this device: ``"trace"`` (JAX: jit + scan),
        ``"capture"`` (torch on CUDA: a CUDA graph) or None (eager)."""
        return self.library.compiler(self.device)

    def float64_scope(self) -> Any:
        """A context in which float64 arrays work without changing the library's global
        setting (JAX: its 64-bit mode, for the calls inside only); a no-op elsewhere."""
        return self.library.float64_scope()

    def precision_scope(self, policy: str) -> Any:
        """A context in which matrix products follow ``policy`` (``"exact"``, ``"tf32"``)."""
        return self.library.precision_scope(policy, self.device)

    def jit(self, fn: Any, donate_argnums: tuple[int, ...] = ()) -> Any:
        """``fn`` traced and compiled by the library (``compiler() == "trace"``)."""
        return self.library.jit(fn, donate_argnums, self.device)

    def jit_input(self, data: np.ndarray, dtype: Any = None) -> Any:
        """Host data ``data`` as an argument of a :meth:`jit` function (the library may
        move it with the call itself rather than ahead of it)."""
        dt = None if dtype is None else self.dtype(dtype)
        return self.library.jit_input(self.xp, data, dt, self.device)

    def scan(self, body: Any, carry: Any, xs: Any) -> Any:
        """A loop over the leading axis of ``xs`` inside a traced function."""
        return self.library.scan(body, carry, xs)

    def capture(self, step: Any) -> tuple[Any, Any]:
        """``(replay, outputs)`` of ``step`` recorded once (``compiler() == "capture"``)."""
        return self.library.capture(step, self.device)

    # -- dtypes --------------------------------------------------------
    def dtype(self, spec: Any, *, argument: str = "dtype") -> Any:
        """Resolve ``"float32"``/``"float64"`` or a dtype object to this namespace's dtype."""
        xp = self.xp
        # the hot path: a dtype this backend resolved before (every asarray passes one)
        if spec is getattr(xp, "float64", None) or spec is getattr(xp, "float32", None):
            if self._checked_dtypes.get(id(spec)) is spec:
                return spec
        for dname in _DTYPE_NAMES:
            candidate = getattr(xp, dname)
            match = spec == dname
            if not match and not isinstance(spec, str):
                try:
                    match = bool(spec == candidate) or np.dtype(spec) == np.dtype(dname)
                except TypeError:
                    match = False
            if match:
                self.library.check_dtype(dname, self.device, argument, self)
                self._checked_dtypes[id(candidate)] = candidate
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
            return self.library.owns_namespace(array_api_compat.array_namespace(a))
        except TypeError:
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
        return self.library.asarray(self.xp, data, dt, self.device, copy)

    def to_host(self, a: Any) -> np.ndarray:
        """Return ``a`` as a NumPy array on the host (bit-exact)."""
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return np.asarray(a)
        return self.library.to_host(a)

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
        self.library.sync(self.device)


def backend(spec: Any = None, device: Any = None) -> Backend:
    """Resolve a backend by name, namespace or existing array.

    Parameters
    ----------
    spec : str, module, array, Backend or None
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or ``"array_api_strict"``
        (or any library registered with :func:`xbp.backends.register`);
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
    ...     xbp.backends.select.default_backend().name
    'numpy'
    """
    if spec is None:
        current = default_backend()
        return current if device is None else backend(current.name, device)
    if isinstance(spec, Backend):
        return spec if device is None else backend(spec.name, device)
    if isinstance(spec, str):
        library = backends.lookup(spec)
        xp = library.namespace()
        return Backend(library.name, xp, library.resolve_device(device))
    if isinstance(spec, ModuleType):
        return backend(backends.library_of_namespace(spec).name, device)
    if array_api_compat.is_array_api_obj(spec):
        library = backends.library_of_namespace(array_api_compat.array_namespace(spec))
        if device is None:
            device = array_api_compat.device(spec)
        return backend(library.name, device)
    raise XbpTypeError(
        f"backend={spec!r} is neither a backend name, an array namespace nor an array; "
        f"use one of {list(backends.names())}"
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


def available_backends() -> list[BackendInfo]:
    """Report each known backend: installed, usable, its devices, and why not.

    Examples
    --------
    >>> import xbp
    >>> [b.name for b in xbp.available_backends()][:1]
    ['numpy']
    """
    return [backends.lookup(name).info() for name in backends.names()]
