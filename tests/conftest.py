"""One ``backend`` fixture over every array library and device xbp supports.

A backend that is not installed or not usable is skipped with the reason,
unless ``XBP_REQUIRE_BACKENDS`` names it: then the test fails instead.
"""

from __future__ import annotations

import os

# scikit-learn's estimator checks test array-API inputs only with this set (before scipy loads)
os.environ.setdefault("SCIPY_ARRAY_API", "1")
from typing import Any

import numpy as np
import pytest

import xbp
from xbp.errors import XbpError

try:  # float64 on jax needs 64-bit mode, enabled before any array is made
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:
    pass

# (test id, backend name, device spec)
BACKEND_SPECS: list[tuple[str, str, Any]] = [
    ("numpy", "numpy", None),
    ("array_api_strict", "array_api_strict", None),
    ("array_api_strict-device1", "array_api_strict", "device1"),
    ("torch-cpu", "torch", "cpu"),
    ("torch-cuda", "torch", "cuda"),
    ("jax-cpu", "jax", "cpu"),
    ("cupy-cuda", "cupy", "cuda"),
]


def required_backends() -> set[str]:
    """Names in XBP_REQUIRE_BACKENDS: 'torch' requires torch-cpu, 'torch-cuda' the GPU."""
    raw = os.environ.get("XBP_REQUIRE_BACKENDS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def is_required(test_id: str, name: str, required: set[str]) -> bool:
    if test_id in required:
        return True
    # a bare library name requires its CPU flavour (or its only flavour)
    return name in required and not test_id.endswith("-cuda")


def backend_or_skip(
    test_id: str, name: str, device: Any, required: set[str]
) -> xbp.backends.select.Backend:
    """Resolve a backend; skip when unusable, fail instead when it is required."""
    try:
        if name == "array_api_strict" and device is not None:
            import array_api_strict

            device = array_api_strict.Device(device)
        return xbp.backend(name, device)
    except XbpError as exc:
        if is_required(test_id, name, required):
            pytest.fail(f"backend {test_id} is required by XBP_REQUIRE_BACKENDS but: {exc}")
        pytest.skip(f"{test_id}: {exc}")


def device_option(be: xbp.backends.select.Backend) -> list[str]:
    """The ``--device`` arguments that select ``be`` on the command line ([] for the default)."""
    for _, name, device in BACKEND_SPECS:
        if name != be.name or device is None:
            continue
        try:
            if xbp.backend(name, device) == be:
                return ["--device", device]
        except XbpError:
            continue
    return []


@pytest.fixture(params=BACKEND_SPECS, ids=[s[0] for s in BACKEND_SPECS])
def backend(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    test_id, name, device = request.param
    return backend_or_skip(test_id, name, device, required_backends())


@pytest.fixture(params=BACKEND_SPECS, ids=[f"to-{s[0]}" for s in BACKEND_SPECS])
def target_backend(request: pytest.FixtureRequest) -> xbp.backends.select.Backend:
    """A second backend, independent of ``backend`` (e.g. where a saved model is loaded)."""
    test_id, name, device = request.param
    return backend_or_skip(test_id, name, device, required_backends())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def assert_close(
    actual: Any, expected: np.ndarray, be: xbp.backends.select.Backend, dtype: str, rel: float
) -> None:
    """Check namespace, device, dtype and shape, then values relative to max|expected|."""
    assert be.owns(actual), f"result is not a {be.name} array: {type(actual)}"
    assert be.same_device(actual), f"result on {xbp.backend(actual).device}, expected {be.device}"
    assert be.dtype_name(actual.dtype) == dtype, f"dtype {actual.dtype}, expected {dtype}"
    host = be.to_host(actual)
    assert host.shape == expected.shape, f"shape {host.shape}, expected {expected.shape}"
    scale = float(np.max(np.abs(expected), initial=0.0)) or 1.0
    err = float(np.max(np.abs(host - expected), initial=0.0)) / scale
    assert err <= rel, f"relative error {err:.3e} > {rel:.1e}"
