"""The precision policy: exact IEEE products by default on every backend, TF32 on request."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from conftest import backend_or_skip, required_backends

import xbp
from xbp.errors import XbpValueError


def test_exact_is_the_default_and_is_saved(backend: xbp.Backend, tmp_path: Any) -> None:
    net = xbp.mlp([3, 4, 2], loss="cross_entropy", backend=backend, seed=0)
    assert net.precision == "exact" and net.config()["precision"] == "exact"
    xbp.save(net, tmp_path / "m.npz")
    assert xbp.load(tmp_path / "m.npz", backend=backend).precision == "exact"
    assert xbp.Network.from_config(net.config(), backend=backend).precision == "exact"


def test_tf32_is_refused_where_the_device_has_no_tf32(backend: xbp.Backend) -> None:
    if str(backend.device).startswith(("cuda", "gpu")):
        pytest.skip("a GPU may have TF32")
    with pytest.raises(XbpValueError, match=r"precision='tf32' needs TensorFloat-32.*'exact'"):
        xbp.mlp([3, 4, 2], backend=backend, precision="tf32")
    net = xbp.mlp([3, 4, 2], backend=backend)
    x, y = np.zeros((4, 3)), np.zeros((4, 2))
    with pytest.raises(XbpValueError, match="precision='tf32'"):
        xbp.fit(net, x, y, epochs=1, batch_size=2, precision="tf32", progress=False)
    assert net.precision == "exact"


def test_unknown_policies_are_refused() -> None:
    with pytest.raises(XbpValueError, match=r"precision='bf17' is not known"):
        xbp.mlp([2, 1], precision="bf17")
    with pytest.raises(XbpValueError, match=r"precision='half' is not known"):
        xbp.TrainOptions(precision="half")


def test_every_product_of_the_kernel_runs_inside_the_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered: list[str] = []

    @contextlib.contextmanager
    def scope(self: Any, policy: str) -> Any:
        entered.append(policy)
        yield

    net = xbp.mlp([3, 4, 2], loss="cross_entropy", seed=0)
    monkeypatch.setattr(xbp.Backend, "precision_scope", scope)
    x = np.ones((5, 3))
    calls = {
        "backprop": lambda: net.backprop(x, np.arange(5) % 2),
        "forward": lambda: net.forward(x),
        "layer_outputs": lambda: net.layer_outputs(x),
        "evaluate": lambda: net.evaluate(x, np.arange(5) % 2),
    }
    for name, call in calls.items():
        entered.clear()
        call()
        assert entered and set(entered) == {"exact"}, name


def test_jax_exact_scope_is_highest_and_leaves_the_global_setting() -> None:
    be = backend_or_skip("jax-cpu", "jax", "cpu", required_backends())
    import jax

    jax.config.update("jax_default_matmul_precision", "bfloat16")  # a user's own choice
    try:
        with be.precision_scope("exact"):
            assert jax.config.jax_default_matmul_precision == "highest"
        assert jax.config.jax_default_matmul_precision == "bfloat16"
    finally:
        jax.config.update("jax_default_matmul_precision", None)


def test_torch_scopes_set_the_tf32_switch_for_xbp_and_restore_the_users() -> None:
    be = backend_or_skip("torch-cpu", "torch", "cpu", required_backends())
    import torch

    lib = be.library
    flags = torch.backends.cuda.matmul
    saved = flags.allow_tf32
    try:
        flags.allow_tf32 = True  # another library switched TF32 on globally
        with lib.precision_scope("exact", torch.device("cuda")):
            assert flags.allow_tf32 is False
        assert flags.allow_tf32 is True
        flags.allow_tf32 = False
        with lib.precision_scope("tf32", torch.device("cuda")):
            assert flags.allow_tf32 is True
        assert flags.allow_tf32 is False
    finally:
        flags.allow_tf32 = saved


def test_float32_gradients_agree_with_numpy_under_exact(backend: xbp.Backend) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 20)).astype(np.float32)
    y = rng.integers(0, 5, 32)
    ref = xbp.mlp([20, 64, 5], loss="cross_entropy", dtype="float32", seed=1)
    net = xbp.mlp([20, 64, 5], loss="cross_entropy", dtype="float32", seed=1, backend=backend)
    _, g_ref = ref.backprop(x, y)
    _, g = net.backprop(x, y)
    for a, b in zip(g_ref, g):
        for k in a:
            expect = np.asarray(a[k])
            err = np.max(np.abs(backend.to_host(b[k]) - expect)) / np.max(np.abs(expect))
            assert err <= 1e-5, (k, err)
