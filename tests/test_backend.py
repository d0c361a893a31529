from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import backend_or_skip, is_required

import xbp
from xbp.errors import BackendUnavailableError, XbpTypeError, XbpValueError


def test_default_is_numpy_cpu() -> None:
    be = xbp.backends.select.default_backend()
    assert be.name == "numpy" and str(be.device) == "cpu"


def test_context_manager_sets_and_restores_default() -> None:
    strict = xbp.backend("array_api_strict")
    with strict:
        assert xbp.backends.select.default_backend() == strict
        assert xbp.mlp([2, 2]).backend == strict
        with xbp.backend("numpy"):
            assert xbp.backends.select.default_backend().name == "numpy"
        assert xbp.backends.select.default_backend() == strict
    assert xbp.backends.select.default_backend().name == "numpy"


def test_resolve_by_namespace_and_array(backend: xbp.backends.select.Backend) -> None:
    arr = backend.asarray(np.ones((2, 2)), "float64")
    from_array = xbp.backend(arr)
    assert from_array == backend
    assert xbp.backend(backend.xp, backend.device) == backend


def test_resolve_plain_numpy_module() -> None:
    assert xbp.backend(np).name == "numpy"
    assert xbp.backend(np.zeros(3)).name == "numpy"


def test_round_trip_is_bit_exact(
    backend: xbp.backends.select.Backend, rng: np.random.Generator
) -> None:
    host = rng.normal(size=(3, 4))
    dev = backend.asarray(host, "float64")
    assert backend.owns(dev) and backend.same_device(dev)
    np.testing.assert_array_equal(backend.to_host(dev), host)


def test_asarray_copy_does_not_alias(backend: xbp.backends.select.Backend) -> None:
    host = np.zeros(3)
    dev = backend.asarray(host, "float64", copy=True)
    host[0] = 5.0
    assert backend.to_host(dev)[0] == 0.0


def test_unknown_backend_lists_valid_names() -> None:
    with pytest.raises(XbpValueError, match=r"backend='nump'.*'numpy'.*'torch'"):
        xbp.backend("nump")


def test_numpy_refuses_gpu_device() -> None:
    with pytest.raises(XbpValueError, match="device='cuda'.*CPU only"):
        xbp.backend("numpy", "cuda")


def test_bad_dtype_names_the_fix() -> None:
    with pytest.raises(XbpTypeError, match="dtype='int32'.*'float32' or 'float64'"):
        xbp.mlp([2, 1], dtype="int32")


def test_dtype_objects_accepted(backend: xbp.backends.select.Backend) -> None:
    net = xbp.mlp([2, 1], backend=backend, dtype=backend.xp.float32)
    assert backend.dtype_name(net.dtype) == "float32"


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="cupy not installed")
def test_cupy_unusable_says_why() -> None:
    info = {b.name: b for b in xbp.available_backends()}["cupy"]
    if info.usable:
        pytest.skip("a CUDA device works here")
    assert "no CUDA device is usable" in (info.reason or "")
    with pytest.raises(BackendUnavailableError, match="no CUDA device is usable"):
        xbp.backend("cupy")


def test_available_backends_reports_every_library() -> None:
    infos = {b.name: b for b in xbp.available_backends()}
    assert set(infos) == set(xbp.backends.select.BACKEND_NAMES)
    assert infos["numpy"].usable and infos["numpy"].devices == ["cpu"]
    for info in infos.values():
        assert info.usable or info.reason, f"{info.name} unusable without a reason"


def test_jax_float64_without_x64_raises() -> None:
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(XbpValueError, match="jax_enable_x64"):
            xbp.mlp([2, 1], backend="jax", dtype="float64")
        assert xbp.mlp([2, 1], backend="jax", dtype="float32").dtype == jax.numpy.float32
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_jax_host_data_takes_one_device_put_with_the_generic_result(x64: bool) -> None:
    """JAX's asarray moves host NumPy data with one device_put (the per-epoch row
    orders and step scalars of compiled epochs); the result is what the generic
    ``xp.asarray(data, dtype=, device=)`` gives: dtype (64-bit mode on and off), values,
    device, committed, and it never shares the caller's host array."""
    jax = pytest.importorskip("jax")
    from xbp.backends import Library

    be = backend_or_skip("jax-cpu", "jax", "cpu", set())
    lib, xp = be.library, be.xp
    jax.config.update("jax_enable_x64", x64)
    try:
        cases = [
            (np.arange(5), None),
            (np.linspace(0, 1, 7).reshape(7, 1), None),
            (np.linspace(0, 1, 7), xp.float32),
            (np.arange(6, dtype=np.int64), xp.int32),
            (np.array(3.25), None),
        ]
        if x64:
            cases.append((np.linspace(0, 1, 7, dtype=np.float32), xp.float64))
        for data, dtype in cases:
            fast = lib.asarray(xp, data, dtype, be.device, False)
            generic = Library.asarray(lib, xp, data, dtype, be.device, False)
            assert fast.dtype == generic.dtype and fast.shape == generic.shape
            np.testing.assert_array_equal(np.asarray(fast), np.asarray(generic))
            assert fast.devices() == {be.device} and fast.committed
        # the CPU client shares a host buffer it finds aligned (a large array's always):
        # fresh arrays, each written to after the move
        for _ in range(4):
            host = np.zeros(1 << 15)
            dev = lib.asarray(xp, host, None, be.device, False)
            host[0] = 5.0
            assert float(dev[0]) == 0.0
    finally:
        jax.config.update("jax_enable_x64", True)


def test_require_backends_turns_skip_into_failure() -> None:
    assert is_required("torch-cpu", "torch", {"torch"})
    assert not is_required("torch-cuda", "torch", {"torch"})
    assert is_required("torch-cuda", "torch", {"torch-cuda"})
    with pytest.raises(pytest.skip.Exception):
        backend_or_skip("numpy-gpu", "numpy", "cuda", set())
    with pytest.raises(pytest.fail.Exception, match="required by XBP_REQUIRE_BACKENDS"):
        backend_or_skip("numpy-gpu", "numpy", "cuda", {"numpy-gpu"})


def test_dlpack_import_between_libraries(backend: xbp.backends.select.Backend) -> None:
    torch = pytest.importorskip("torch")
    src = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    out = backend.from_dlpack(src)
    assert backend.owns(out) and backend.same_device(out)
    np.testing.assert_array_equal(backend.to_host(out), src.numpy())
