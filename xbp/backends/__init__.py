"""The array libraries xbp runs on: one module per library, one small protocol.

Each library (``numpy``, ``cupy``, ``torch``, ``jax``, ``array_api_strict``)
is a subclass of :class:`Library` in its own module of this package. A library
object answers every library-specific question xbp has: how to import it, how
to turn a user's device spec into a device, how to move data in and out, how
to wait for queued work, what is installed and usable, and what MPI may do
with its buffers. :mod:`xbp.backends.select` and the rest of xbp only call these
methods, so adding a library is one new module here plus :func:`register`.

Examples
--------
>>> from xbp import backends
>>> backends.names()[:2]
('numpy', 'cupy')
>>> backends.lookup("np").name
'numpy'
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendUnavailableError, XbpTypeError, XbpValueError, arg

__all__ = [
    "BackendInfo",
    "Library",
    "MIXED_PRECISIONS",
    "gpu_index",
    "library_of_namespace",
    "lookup",
    "names",
    "register",
    "unregister",
]


@dataclass
class BackendInfo:
    """What :func:`xbp.available_backends` reports about one array library.

    Examples
    --------
    >>> import xbp
    >>> info = xbp.available_backends()[0]
    >>> info.name, info.usable, info.devices
    ('numpy', True, ['cpu'])
    """

    name: str
    installed: bool
    usable: bool
    version: str | None
    devices: list[str]
    reason: str | None = None


def gpu_index(device: Any, name: str) -> int:
    """The GPU index in ``'cuda'``, ``'cuda:N'``, ``'gpu:N'`` or ``N``, for backend ``name``.

    Raises
    ------
    XbpTypeError
        For ``True``/``False`` (a bool is an int, but never a device).
    XbpValueError
        For any other text.

    Examples
    --------
    >>> import xbp
    >>> xbp.backends.gpu_index("cuda:1", "torch"), xbp.backends.gpu_index(0, "cupy")
    (1, 0)
    """
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


class Library(abc.ABC):
    """Everything xbp needs to know about one array library.

    Subclass it, set the class attributes, implement the abstract methods and
    :func:`register` an instance: ``xbp.backend(name)`` then works for it.
    The library itself is imported lazily (inside the methods), so that
    importing xbp never imports CuPy, PyTorch or JAX.

    Attributes
    ----------
    name : str
        The backend name users pass to :func:`xbp.backends.select`.
    module : str
        The import name of the library (what ``importlib`` looks for).
    extra : str or None
        The xbp pip extra that installs it, for the install hint; None means
        ``pip install <module>``.
    aliases : tuple of str
        Other spellings :func:`xbp.backends.select` accepts (lower case).
    mutable_arrays : bool
        False when arrays cannot be written in place (JAX): updates must
        rebind the container entry instead.
    host_arrays : bool
        True when the library's arrays are host NumPy arrays, so moving data
        in and out is free.

    Examples
    --------
    >>> import xbp
    >>> torch_library = xbp.backends.lookup("torch")  # known whether installed or not
    >>> torch_library.name, torch_library.extra, torch_library.mutable_arrays
    ('torch', 'torch', True)
    >>> xbp.backends.lookup("jax").mutable_arrays  # JAX arrays are immutable: updates rebind
    False

    :func:`register` shows a library of one's own.
    """

    name: ClassVar[str]
    module: ClassVar[str]
    extra: ClassVar[str | None] = None
    aliases: ClassVar[tuple[str, ...]] = ()
    mutable_arrays: ClassVar[bool] = True
    host_arrays: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<xbp library {self.name!r}>"

    # -- availability --------------------------------------------------
    def installed(self) -> bool:
        """True when the library can be found (it is not imported)."""
        return importlib.util.find_spec(self.module) is not None

    def load(self) -> ModuleType:
        """Import the library, or raise :class:`BackendUnavailableError` with the install hint."""
        if not self.installed():
            hint = (
                f"pip install 'xbp[{self.extra}]'" if self.extra else f"pip install {self.module}"
            )
            raise BackendUnavailableError(
                f"backend {self.name!r} is not installed; install it with `{hint}` "
                "or choose another backend (see xbp.available_backends())"
            )
        return importlib.import_module(self.module)

    def namespace(self) -> Any:
        """The array-API namespace (by default the ``array_api_compat`` wrapper)."""
        self.load()
        return importlib.import_module(f"array_api_compat.{self.module}")

    def unusable_reason(self) -> str | None:
        """Why the installed library cannot run here, or None when it can."""
        return None

    def note(self) -> str | None:
        """A caveat to report while the library is usable (e.g. float32 only), or None."""
        return None

    @abc.abstractmethod
    def devices(self) -> list[str]:
        """The names of the devices the (usable) library sees."""

    def info(self) -> BackendInfo:
        """Installed, usable, version, devices and the reason when not usable."""
        if not self.installed():
            return BackendInfo(self.name, False, False, None, [], f"{self.name} is not installed")
        try:
            mod = importlib.import_module(self.module)
        except Exception as exc:  # a broken install is reported, not raised
            return BackendInfo(self.name, True, False, None, [], f"import failed: {exc}")
        version = getattr(mod, "__version__", None)
        problem = self.unusable_reason()
        if problem is not None:
            return BackendInfo(self.name, True, False, version, [], problem)
        return BackendInfo(self.name, True, True, version, self.devices(), self.note())

    def gpu_count(self) -> int:
        """How many GPUs the library can use here; 0 when none (or on CPU-only libraries)."""
        return 0

    def local_device(self, local_rank: int) -> Any:
        """The device spec for one-GPU-per-MPI-rank, from the rank's local rank.

        None (the library's default device) on the CPU libraries.
        """
        return None

    def mpi_device_buffers(self, cuda_aware: bool) -> bool:
        """Whether an MPI library (``cuda_aware`` or not) may read device buffers directly."""
        return False

    def enable_float64(self) -> None:
        """Switch on 64-bit floats, before any array exists; a no-op where they always work."""
        return None

    def float64_scope(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which float64 arrays work, for code that needs them for its own
        computations only (the scikit-learn estimators) and must leave the library's
        global setting alone; nothing to do where float64 always works."""
        return contextlib.nullcontext()

    def compiler(self, device: Any) -> str | None:
        """How a training step compiles on ``device``, or None to run eagerly.

        ``"trace"``: the library traces a function of arrays once and runs it
        compiled (:meth:`jit`, :meth:`scan`); ``"capture"``: it records the
        kernels of one step and replays them (:meth:`capture`).
        """
        return None

    def jit(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...], device: Any) -> Any:
        """``fn`` compiled once per input shape (``"trace"`` libraries); the arguments
        ``donate_argnums`` may be consumed where the device can reuse their buffers."""
        raise NotImplementedError(f"{self.name} does not trace functions")

    def jit_input(self, xp: Any, data: np.ndarray, dtype: Any, device: Any) -> Any:
        """Host data as an argument of a :meth:`jit` function: on the device by default;
        a library whose compiled call moves host arguments itself takes it as it is."""
        return self.asarray(xp, data, dtype, device, False)

    def scan(self, body: Callable[[Any, Any], tuple[Any, Any]], carry: Any, xs: Any) -> Any:
        """``(carry, stacked ys)`` of ``body(carry, x)`` over the leading axis of ``xs``,
        inside a traced function (``"trace"`` libraries)."""
        raise NotImplementedError(f"{self.name} does not trace loops")

    def capture(self, step: Callable[[], Any], device: Any) -> tuple[Callable[[], None], Any]:
        """Record ``step`` (which reads and writes only fixed buffers) after a warm-up,
        and return ``(replay, outputs)``: ``replay()`` runs the recorded kernels again
        and leaves the results in ``outputs`` (``"capture"`` libraries). The warm-up
        runs ``step`` too: the caller restores what it changed."""
        raise NotImplementedError(f"{self.name} does not capture steps")

    # -- arrays and devices --------------------------------------------
    @abc.abstractmethod
    def owns_namespace(self, xp: Any) -> bool:
        """True when ``xp`` is this library's namespace (raw or ``array_api_compat``)."""

    @abc.abstractmethod
    def resolve_device(self, spec: Any) -> Any:
        """Turn a user's device spec (None, ``'cpu'``, ``'cuda:1'``, 1, a device) into a device."""

    def check_dtype(self, dname: str, device: Any, argument: str, owner: object) -> None:
        """Raise when ``dname`` (``'float32'``/``'float64'``) cannot be used on ``device``.

        ``argument`` names the user's argument and ``owner`` (the Backend) is
        named in the message; it is formatted only when raising.
        """
        return None  # most libraries support both dtypes everywhere

    def asarray(self, xp: Any, data: Any, dtype: Any, device: Any, copy: bool) -> Any:
        """Host data (or an array of this library) as an array of ``xp`` on ``device``.

        ``copy=True`` guarantees the result shares no memory with ``data``;
        libraries with immutable arrays skip that copy, sharing is harmless there.
        """
        out = xp.asarray(data, dtype=dtype, device=device)
        if copy and self.mutable_arrays:
            out = xp.asarray(out, copy=True)
        return out

    def kernel_namespace(self, xp: Any) -> Any:
        """The namespace xbp's kernels compute with (forward, backward, losses): ``xp``
        itself by default. A library whose standard functions go through Python wrappers
        that cost more than tiny arrays' arithmetic may return ``xp`` with direct
        equivalents in their place, giving the same bits (NumPy's reductions). It may
        also carry ``logistic(z)``, the library's own ``1 / (1 + exp(-z))`` where that is
        much faster than the standard's ``tanh`` (the ``sigmoid`` activation uses it; the
        results agree with the ``tanh`` form to rounding; torch on the CPU)."""
        return xp

    def detach(self, a: Any) -> Any:
        """``a`` without any tie to the library's autograd (a user's array entering xbp).

        xbp computes its own gradients; an input that records operations would
        make every weight it touches a node of the user's graph. The default
        returns ``a``: most libraries have no such tie.
        """
        return a

    def copy_in(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Callable[[], Any]:
        """Start moving a host batch onto ``device``; return ``ready()``, which gives the
        device array once the compute stream may read it.

        Streamed training calls this from its prefetch thread, so that the copy
        of batch k+1 overlaps the compute of batch k. ``host`` is a fresh array
        of the right dtype that nothing else writes. The default moves it at
        once; CUDA libraries copy from pinned memory on a side stream.
        """
        out = self.asarray(xp, host, dtype, device, False)
        return lambda: out

    def to_host(self, a: Any) -> np.ndarray:
        """``a`` as a NumPy array on the host (bit-exact)."""
        return np.asarray(a)

    def sync(self, device: Any) -> None:
        """Wait for work queued on ``device`` (for timing); a no-op by default."""
        return None  # CPU libraries compute synchronously

    def set_cpu_threads(self, threads: int) -> None:
        """Use ``threads`` CPU threads for this library's own operations (where it has
        a pool of its own to size); a no-op by default."""
        return None

    def precision_scope(self, policy: str, device: Any) -> contextlib.AbstractContextManager[Any]:
        """A context in which this library's matrix products follow ``policy``.

        ``"exact"``: IEEE products in the array's dtype (the default of a CPU
        library: nothing to do). ``"tf32"``: TensorFloat-32 products where the
        device has them; the default refuses, naming the alternative.
        """
        if policy == "exact" or policy in MIXED_PRECISIONS:
            return _EXACT  # mixed precision: the arrays' own type decides (mixed_dtype)
        raise XbpValueError(
            f"{arg('precision', policy)} needs TensorFloat-32 matrix units, which {self.name} on "
            f"{device!s} does not have; use {arg('precision', 'exact')} (IEEE float32), or "
            "torch/jax on an NVIDIA GPU"
        )

    def mixed_dtype(self, policy: str, device: Any) -> Any:
        """The low-precision dtype of mixed precision ``policy`` (``"bf16"``: bfloat16,
        ``"fp16"``: float16) on ``device``, as this library's dtype object.

        The default refuses, naming the alternatives: a library without the
        type (NumPy, array-api-strict) overrides nothing.
        """
        raise XbpValueError(_no_mixed(policy, self.name, device))


def _no_mixed(policy: str, name: str, device: Any) -> str:
    """The one-line refusal of a mixed precision policy a library cannot run."""
    return (
        f"{arg('precision', policy)} needs {MIXED_PRECISIONS.get(policy, policy)} arrays, which "
        f"{name} on {device!s} does not have; use {arg('precision', 'exact')} (float32), or "
        "backend='torch' (CPU or CUDA) or 'jax' for bf16/fp16 mixed precision"
    )


#: Mixed precision policies and the low-precision type each computes its products in.
MIXED_PRECISIONS = {"bf16": "bfloat16", "fp16": "float16"}

_EXACT = contextlib.nullcontext()


# The registry, in the order reports list the libraries (insertion order).
_REGISTRY: dict[str, Library] = {}
_ALIASES: dict[str, str] = {}


def register(library: Library) -> Library:
    """Make ``library`` known to :func:`xbp.backends.select` under its name and aliases.

    Raises
    ------
    XbpValueError
        When the name or an alias is already taken.

    Examples
    --------
    >>> import xbp
    >>> class Mine(type(xbp.backends.lookup("numpy"))):
    ...     name = "mynumpy"
    ...     aliases = ()
    >>> _ = xbp.backends.register(Mine())
    >>> xbp.backend("mynumpy")
    Backend('mynumpy', device='cpu')
    >>> xbp.backends.unregister("mynumpy")
    """
    taken = [n for n in (library.name, *library.aliases) if n in _REGISTRY or n in _ALIASES]
    if taken:
        raise XbpValueError(
            f"library={library!r}: the name(s) {taken} are already registered; "
            "unregister the other library first or choose another name"
        )
    _REGISTRY[library.name] = library
    for alias in library.aliases:
        _ALIASES[alias] = library.name
    return library


def unregister(name: str) -> None:
    """Forget the library ``name`` and its aliases (e.g. at the end of a test).

    Examples
    --------
    >>> import xbp
    >>> class Mine(type(xbp.backends.lookup("numpy"))):
    ...     name = "mynumpy"
    ...     aliases = ()
    >>> _ = xbp.backends.register(Mine())
    >>> xbp.backends.unregister("mynumpy")
    >>> "mynumpy" in xbp.backends.names()
    False
    """
    library = _REGISTRY.pop(name, None)
    if library is None:
        raise XbpValueError(f"name={name!r} is not registered; use one of {list(_REGISTRY)}")
    for alias in library.aliases:
        _ALIASES.pop(alias, None)


def names() -> tuple[str, ...]:
    """The registered library names, in registration order.

    Examples
    --------
    >>> import xbp
    >>> xbp.backends.names()
    ('numpy', 'cupy', 'torch', 'jax', 'array_api_strict')
    """
    return tuple(_REGISTRY)


def lookup(spec: str) -> Library:
    """The library called ``spec`` (a name or an alias, any case).

    Examples
    --------
    >>> import xbp
    >>> xbp.backends.lookup("NumPy").name
    'numpy'
    """
    key = spec.lower()
    library = _REGISTRY.get(_ALIASES.get(key, key))
    if library is None:
        raise XbpValueError(f"backend={spec!r} is not known; use one of {list(_REGISTRY)}")
    return library


def library_of_namespace(xp: Any) -> Library:
    """The first registered library whose namespace ``xp`` is.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> import xbp
    >>> xbp.backends.library_of_namespace(xp).name
    'numpy'
    """
    for library in _REGISTRY.values():
        if library.owns_namespace(xp):
            return library
    raise XbpTypeError(
        f"backend={getattr(xp, '__name__', xp)!r} is not an array library xbp supports; "
        f"use one of {list(_REGISTRY)}"
    )


_EXTENDED: dict[tuple[int, tuple[tuple[str, int], ...]], Any] = {}


def extended_namespace(xp: Any, **extra: Any) -> Any:
    """``xp`` with ``extra`` functions added or replaced, built once per namespace.

    For ``Library.kernel_namespace``: a module whose attributes are ``xp``'s public
    names, then ``extra``; ``xp`` itself is never modified.
    """
    key = (id(xp), tuple(sorted((name, id(f)) for name, f in extra.items())))
    found = _EXTENDED.get(key)
    if found is None:
        found = ModuleType(f"{xp.__name__}+xbp", xp.__doc__)
        found.__dict__.update({name: getattr(xp, name) for name in xp.__all__})
        found.__dict__.update(extra, __all__=list(xp.__all__))
        _EXTENDED[key] = found
    return found


# The built-in libraries, one module each, in the order reports list them;
# each module defines ``LIBRARY``, an instance of its Library subclass.
_BUILTIN = ("numpy", "cupy", "torch", "jax", "array_api_strict")
for _module in _BUILTIN:
    register(importlib.import_module(f"{__name__}.{_module}").LIBRARY)
del _module
