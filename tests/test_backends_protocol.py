"""The library protocol of :mod:`xbp.backends`: one module per array library.

Every registered library implements the whole protocol, the registry keeps its
order and aliases, a library registered from outside works everywhere
(adding a library is one new file), and no other module of xbp branches on
library names or imports a device library.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np
import pytest

import xbp
from xbp import backends
from xbp.backends import BackendInfo, Library
from xbp.errors import XbpTypeError, XbpValueError

BUILTIN = ("numpy", "cupy", "torch", "jax", "array_api_strict")

#: Every method and attribute of the protocol, as :class:`Library` defines them.
PROTOCOL_METHODS = (
    "installed",
    "load",
    "namespace",
    "unusable_reason",
    "note",
    "devices",
    "info",
    "gpu_count",
    "local_device",
    "mpi_device_buffers",
    "enable_float64",
    "compiler",
    "jit",
    "jit_input",
    "scan",
    "capture",
    "owns_namespace",
    "resolve_device",
    "check_dtype",
    "asarray",
    "kernel_namespace",
    "to_host",
    "sync",
)
PROTOCOL_ATTRIBUTES = {
    "name": str,
    "module": str,
    "aliases": tuple,
    "mutable_arrays": bool,
    "host_arrays": bool,
}


# -- the registry -----------------------------------------------------------
def test_registry_order_is_fixed() -> None:
    assert backends.names()[: len(BUILTIN)] == BUILTIN
    assert xbp.backends.select.BACKEND_NAMES == BUILTIN
    assert [info.name for info in xbp.available_backends()][: len(BUILTIN)] == list(BUILTIN)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("np", "numpy"),
        ("NumPy", "numpy"),
        ("strict", "array_api_strict"),
        ("array-api-strict", "array_api_strict"),
        ("Torch", "torch"),
    ],
)
def test_aliases_resolve_to_the_library(alias: str, name: str) -> None:
    assert backends.lookup(alias).name == name


def test_alias_builds_the_backend() -> None:
    assert xbp.backend("np") == xbp.backend("numpy")
    assert xbp.backend("strict").library is backends.lookup("array_api_strict")


def test_unknown_name_lists_the_registry() -> None:
    with pytest.raises(XbpValueError, match=r"backend='nump' is not known.*'numpy'.*'jax'"):
        backends.lookup("nump")


def test_registering_a_taken_name_is_refused() -> None:
    with pytest.raises(XbpValueError, match="already registered"):
        backends.register(type(backends.lookup("numpy"))())


def test_unregistering_an_unknown_name_is_refused() -> None:
    with pytest.raises(XbpValueError, match="name='nope' is not registered"):
        backends.unregister("nope")


# -- every library implements the protocol ----------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_library_implements_the_protocol(name: str) -> None:
    lib = backends.lookup(name)
    assert isinstance(lib, Library)
    assert not getattr(type(lib), "__abstractmethods__", None)
    assert lib.name == name
    for attr, kind in PROTOCOL_ATTRIBUTES.items():
        assert isinstance(getattr(lib, attr), kind), f"{name}.{attr} is not a {kind.__name__}"
    assert lib.extra is None or isinstance(lib.extra, str)
    for method in PROTOCOL_METHODS:
        impl = getattr(lib, method, None)
        assert callable(impl), f"{name} lacks {method}()"
        # an override keeps the protocol's parameters, so callers never branch on the library
        expected = list(inspect.signature(getattr(Library, method)).parameters)[1:]
        assert list(inspect.signature(impl).parameters) == expected, f"{name}.{method}"


@pytest.mark.parametrize("name", BUILTIN)
def test_library_lives_in_its_own_module(name: str) -> None:
    assert type(backends.lookup(name)).__module__ == f"xbp.backends.{name}"


@pytest.mark.parametrize("name", BUILTIN)
def test_info_reports_without_raising(name: str) -> None:
    info = backends.lookup(name).info()
    assert isinstance(info, BackendInfo) and info.name == name
    assert info.usable or info.reason, f"{name} unusable without a reason"
    assert info.installed == (importlib.util.find_spec(backends.lookup(name).module) is not None)


@pytest.mark.parametrize("name", BUILTIN)
def test_gpu_questions_answer_on_any_machine(name: str) -> None:
    lib = backends.lookup(name)
    count = lib.gpu_count()
    assert isinstance(count, int) and count >= 0
    lib.local_device(3)  # never raises, GPU or not
    assert lib.mpi_device_buffers(False) is False


def test_cpu_libraries_have_no_local_gpu() -> None:
    for name in ("numpy", "array_api_strict"):
        lib = backends.lookup(name)
        assert lib.gpu_count() == 0 and lib.local_device(5) is None
        assert lib.mpi_device_buffers(True) is False


def test_only_cupy_hands_device_buffers_to_cuda_aware_mpi() -> None:
    assert [n for n in BUILTIN if backends.lookup(n).mpi_device_buffers(True)] == ["cupy"]


def test_local_device_is_one_gpu_per_rank_or_the_cpu() -> None:
    torch_lib, cupy_lib = backends.lookup("torch"), backends.lookup("cupy")
    n = torch_lib.gpu_count()
    assert torch_lib.local_device(5) == ("cpu" if n == 0 else f"cuda:{5 % n}")
    n = cupy_lib.gpu_count()
    assert cupy_lib.local_device(5) == (None if n == 0 else 5 % n)


def test_gpu_count_function_is_kept_for_compatibility() -> None:
    from xbp.backends.select import gpu_count

    assert gpu_count("numpy") == 0
    assert gpu_count("no-such-library") == 0
    assert gpu_count("torch") == backends.lookup("torch").gpu_count()


def test_backend_exposes_the_library(backend: xbp.backends.select.Backend) -> None:
    lib = backends.lookup(backend.name)
    assert backend.library is lib
    assert backend.mutable is lib.mutable_arrays
    assert backend.is_host is lib.host_arrays
    assert backend.gpu_count() == lib.gpu_count()
    assert backend.local_device(0) == lib.local_device(0)
    assert backend.mpi_device_buffers(True) is lib.mpi_device_buffers(True)


def test_compiler_per_device() -> None:
    assert xbp.backend("numpy").compiler() is None
    assert xbp.backend("array_api_strict").compiler() is None
    if importlib.util.find_spec("torch") is not None:
        assert xbp.backend("torch", "cpu").compiler() is None
    if importlib.util.find_spec("jax") is not None:
        assert xbp.backend("jax").compiler() == "trace"


def test_enable_float64_switches_jax_to_64_bit() -> None:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", False)
    try:
        backends.lookup("jax").enable_float64()
        assert jax.config.read("jax_enable_x64")
        assert xbp.backend("jax").dtype("float64") == jax.numpy.float64
    finally:
        jax.config.update("jax_enable_x64", True)
    for name in ("numpy", "array_api_strict"):
        backends.lookup(name).enable_float64()  # a no-op: float64 always works


def test_host_and_mutability_flags() -> None:
    assert xbp.backend("numpy").is_host and xbp.backend("numpy").mutable
    assert not xbp.backend("array_api_strict").is_host
    assert [n for n in BUILTIN if not backends.lookup(n).mutable_arrays] == ["jax"]
    assert [n for n in BUILTIN if backends.lookup(n).host_arrays] == ["numpy"]


def test_library_recognises_its_namespace(backend: xbp.backends.select.Backend) -> None:
    owners = [n for n in BUILTIN if backends.lookup(n).owns_namespace(backend.xp)]
    assert owners == [backend.name]
    arr = backend.asarray(np.ones(2), "float32")
    assert backends.library_of_namespace(array_api_compat.array_namespace(arr)) is backend.library


def test_foreign_namespace_is_refused() -> None:
    with pytest.raises(XbpTypeError, match="not an array library xbp supports"):
        backends.library_of_namespace(ast)


def test_hot_paths_do_not_look_up_the_registry(
    backend: xbp.backends.select.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asarray/to_host/sync run every epoch: they dispatch through ``backend.library``."""

    def no_lookup(*args: Any) -> Any:
        raise AssertionError("registry lookup on a hot path")

    monkeypatch.setattr(backends, "lookup", no_lookup)
    monkeypatch.setattr(backends, "library_of_namespace", no_lookup)
    host = np.arange(6.0).reshape(2, 3)
    dev = backend.asarray(host, "float64", copy=True)
    np.testing.assert_array_equal(backend.to_host(dev), host)
    backend.sync()


# -- adding a library is one new file ---------------------------------------
class FakeNumpy(Library):
    """What a new library module holds: NumPy under another name, to prove the protocol."""

    name = "fakenp"
    module = "numpy"
    aliases = ("fake",)

    def devices(self) -> list[str]:
        return ["cpu"]

    def owns_namespace(self, xp: Any) -> bool:
        return bool(array_api_compat.is_numpy_namespace(xp))

    def resolve_device(self, spec: Any) -> Any:
        if spec is None or str(spec) == "cpu":
            return "cpu"
        raise XbpValueError(f"device={spec!r}: fakenp runs on the CPU only; use device='cpu'")


@pytest.fixture
def fake() -> Iterator[Library]:
    lib = backends.register(FakeNumpy())
    try:
        yield lib
    finally:
        backends.unregister(lib.name)


def test_registered_library_works_everywhere(fake: Library) -> None:
    be = xbp.backend("fakenp")
    assert be.name == "fakenp" and be.library is fake and xbp.backend("fake") == be
    host = np.arange(4.0).reshape(2, 2)
    np.testing.assert_array_equal(be.to_host(be.asarray(host, "float64")), host)
    assert "fakenp" in [info.name for info in xbp.available_backends()]
    with pytest.raises(XbpValueError, match="fakenp runs on the CPU only"):
        xbp.backend("fakenp", "cuda")
    net = xbp.mlp([2, 3, 2], backend=be, seed=0)
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    y = np.array([1, 1, 0, 0])
    before = be.to_host(net.params[0]["W"]).copy()
    xbp.fit(net, x, y, epochs=2, batch_size=2)
    assert net.backend == be
    assert not np.array_equal(be.to_host(net.params[0]["W"]), before)


def test_unregistered_library_is_gone(fake: Library) -> None:
    backends.unregister(fake.name)
    try:
        with pytest.raises(XbpValueError, match="backend='fakenp' is not known"):
            xbp.backend("fakenp")
        with pytest.raises(XbpValueError, match="is not known"):
            backends.lookup("fake")
    finally:
        backends.register(fake)  # the fixture unregisters it again


# -- no library-name branches outside xbp/backends/ -------------------------
#: Files that still branch on library names or import a device library.
#: This list must only shrink: move each branch into a Library method
#: (xbp/backends/<library>.py) and delete the entry. Adding a file here is not
#: a fix. A stale entry fails test_allow_list_only_shrinks.
ALLOWED = {
    "xbp/tools/bench.py",  # torch/jax as benchmark contenders; jax x64 switch
    "xbp/parallel/torchdist.py",  # torch.distributed is the transport, as mpi4py is MPI's
}
LIBRARY_NAMES = set(BUILTIN)
DEVICE_LIBRARIES = LIBRARY_NAMES - {"numpy"}  # NumPy is the host format: importing it is fine
_PREDICATE = re.compile(
    rf"^is_({'|'.join(sorted(LIBRARY_NAMES))})_(namespace|array)$"
)  # array_api_compat
_PACKAGE = Path(xbp.__file__).parent


def _names_a_library(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in LIBRARY_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_library(e) for e in node.elts)
    return False


def library_branches(source: str) -> list[str]:
    """Each library-name comparison, device-library import or per-library predicate."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Compare) and any(
            _names_a_library(o) for o in (node.left, *node.comparators)
        ):
            what = "compares with a library name"
        elif isinstance(node, ast.MatchValue) and _names_a_library(node.value):
            what = "matches a library name"
        elif isinstance(node, ast.Import) and any(
            set(a.name.split(".")) & DEVICE_LIBRARIES for a in node.names
        ):
            what = "imports a device library"
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = set((node.module or "").split(".")) | {a.name for a in node.names}
            if modules & DEVICE_LIBRARIES:
                what = "imports a device library"
        elif isinstance(node, ast.Call) and node.args and _names_a_library(node.args[0]):
            if ast.unparse(node.func).endswith(("import_module", "__import__", "find_spec")):
                what = "imports a library by name"
        elif (isinstance(node, ast.Attribute) and _PREDICATE.match(node.attr)) or (
            isinstance(node, ast.Name) and _PREDICATE.match(node.id)
        ):
            what = "recognises one library's arrays"
        if what:
            found.append(f"line {getattr(node, 'lineno', '?')}: {what}: {ast.unparse(node)[:70]}")
    return found


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(_PACKAGE.rglob("*.py")):
        rel = path.relative_to(_PACKAGE.parent).as_posix()
        if not rel.startswith("xbp/backends/"):
            yield rel, path


@pytest.mark.parametrize(
    "source",
    [
        "if be.name == 'cupy': pass",
        "ok = name in ('cupy', 'torch')",
        "ok = 'jax' != self.name",
        "def f():\n    import torch",
        "from jax import numpy",
        "import array_api_compat.torch",
        "ok = array_api_compat.is_jax_array(a)",
        "m = importlib.import_module('cupy')",
        "match name:\n    case 'numpy':\n        pass",
    ],
)
def test_branch_finder_sees_a_branch(source: str) -> None:
    assert library_branches(source), source


def test_branch_finder_allows_library_neutral_code() -> None:
    source = (
        "import numpy as np\nimport array_api_compat.numpy as host_xp\n"
        "x = backend('numpy')\nok = be.mutable and kind == 'float32'\n"
    )
    assert library_branches(source) == []


def test_no_library_branches_outside_backends() -> None:
    problems = {
        rel: found
        for rel, path in _modules()
        if rel not in ALLOWED and (found := library_branches(path.read_text()))
    }
    assert not problems, (
        f"library-specific code outside xbp/backends/; move it into a Library method: {problems}"
    )


def test_allow_list_only_shrinks() -> None:
    present = dict(_modules())
    stale = sorted(
        rel
        for rel in ALLOWED
        if rel not in present or not library_branches(present[rel].read_text())
    )
    assert not stale, f"{stale} no longer branch on library names: remove them from ALLOWED"
