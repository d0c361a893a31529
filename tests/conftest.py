"""One ``backend`` fixture over every array library and device xbp supports.

A backend that is not installed or not usable is skipped with the reason,
unless ``XBP_REQUIRE_BACKENDS`` names it: then the test fails instead.

``python -m pytest`` runs on every core (pytest-xdist, ``-n auto`` in pyproject.toml) and
leaves out the tests marked ``slow`` (``-m "not slow"``); ``python -m pytest -m ""`` runs
every test, as CI does. Tests marked ``mpi`` (they launch several ranks, send signals to
them and time them out) run one after another on one worker, and so do the tests on JAX
(which compiles each operation once per process).
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


# -- how the suite runs: slow tests left out by default, multi-rank launches one at a time --
DEFAULT_MARKEXPR = "not slow"  # pyproject.toml's addopts: keep the two in step
SLOW_LEFT_OUT = "xbp_slow_left_out"  # the key in a pytest-xdist worker's output
_SLOW_KEY = pytest.StashKey[int]()


MAX_WORKERS = 8  # -n auto: one worker per core, at most this many (each holds ~1 GB: JAX, torch)


@pytest.hookimpl(optionalhook=True, hookwrapper=True)  # a pytest-xdist hook
def pytest_xdist_auto_num_workers(config: pytest.Config) -> Any:
    outcome = yield
    if not os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):  # a number set by hand stands
        outcome.force_result(min(outcome.get_result(), MAX_WORKERS))


def pytest_configure(config: pytest.Config) -> None:
    # registered here too, so the marker is known with or without pytest-xdist installed
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups and -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("mpi"):
            # several ranks each, signals and time limits: never two launches at once
            item.add_marker(pytest.mark.xdist_group("mpi"))
        elif "jax" in item.name.lower() and not item.get_closest_marker("slow"):
            # JAX compiles each operation once per shape and process: on one worker, the
            # tests on JAX (by name or parameter) compile what they share once (the slow
            # ones run JAX in processes of their own)
            item.add_marker(pytest.mark.xdist_group("jax"))
    if config.option.markexpr == DEFAULT_MARKEXPR:
        left_out = sum(1 for item in items if item.get_closest_marker("slow"))
        config.stash[_SLOW_KEY] = left_out
        if hasattr(config, "workeroutput"):  # a pytest-xdist worker: tell the controller
            config.workeroutput[SLOW_LEFT_OUT] = left_out


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown without it
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist's controller: a worker's count of the slow tests it left out."""
    left_out = getattr(node, "workeroutput", {}).get(SLOW_LEFT_OUT)
    if left_out is not None:
        node.config.stash[_SLOW_KEY] = left_out


@pytest.hookimpl(hookwrapper=True)  # after pytest's short summary: the run's last words
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Any:
    yield
    left_out = config.stash.get(_SLOW_KEY, 0)
    if left_out and not config.option.keyword:  # not when -k picked tests
        tests = "1 test marked slow was" if left_out == 1 else f"{left_out} tests marked slow were"
        terminalreporter.write_line(
            f"xbp: {tests} not run (multi-process and end-to-end runs); run every test,"
            ' as CI does, with: python -m pytest -m ""',
            yellow=True,
        )
