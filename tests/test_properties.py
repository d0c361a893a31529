"""Property tests: random architectures, batches, dtypes and activation/loss pairs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_network import HIDDEN, OUTPUT_LOSS, batch

import xbp

EXAMPLES = int(os.environ.get("XBP_HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def examples(be: xbp.backends.select.Backend) -> int:
    """Half the examples on each reference CPU library, a fortieth on the others.

    (jax compiles every new shape eagerly, a second or more an example; test_network
    already checks every activation/loss pair on every backend.)"""
    share = 2 if be.name in ("numpy", "array_api_strict") else 40
    return max(EXAMPLES // share, 1)


def for_every_network(
    be: xbp.backends.select.Backend, check: Callable[[dict[str, Any]], None]
) -> None:
    """Run ``check`` on random networks built on ``be`` (the backend fixture's choice)."""

    @settings(SETTINGS, max_examples=examples(be))
    @given(networks())
    def run(spec: dict[str, Any]) -> None:
        check(spec)

    run()


@st.composite
def networks(draw):
    output, loss = draw(st.sampled_from(OUTPUT_LOSS))
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 5)) for _ in range(depth)]
    n_out = draw(st.integers(2 if loss == "cross_entropy" else 1, 4))
    return {
        "sizes": widths + [n_out],
        "hidden": draw(st.sampled_from(HIDDEN)),
        "output": output,
        "loss": loss,
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "n": draw(st.integers(1, 6)),
    }


def build(spec, be: xbp.backends.select.Backend) -> xbp.Network:
    return xbp.mlp(
        spec["sizes"],
        activation=spec["hidden"],
        output=spec["output"],
        loss=spec["loss"],
        dtype=spec["dtype"],
        backend=be,
        seed=spec["seed"],
        init="nielsen",
    )


def test_backprop_agrees_with_finite_differences(backend: xbp.backends.select.Backend) -> None:
    def check(spec) -> None:
        net = build(spec, backend)
        x, y = batch(np.random.default_rng(spec["seed"]), spec["sizes"], spec["loss"], spec["n"])
        errs = xbp.tools.gradcheck(net, x, y, raise_on_failure=False)
        assert max(errs.values()) <= 1e-6, (spec, errs)

    for_every_network(backend, check)


def test_forward_shapes_and_dtypes_are_invariant(backend: xbp.backends.select.Backend) -> None:
    def check(spec) -> None:
        net = build(spec, backend)
        x, y = batch(np.random.default_rng(spec["seed"]), spec["sizes"], spec["loss"], spec["n"])
        out = net.forward(x.astype(spec["dtype"]))
        assert tuple(out.shape) == (spec["n"], spec["sizes"][-1])
        assert backend.dtype_name(out.dtype) == spec["dtype"] and backend.owns(out)
        assert backend.same_device(out)
        loss, grads = net.backprop(x, y)
        assert loss.shape == () and backend.dtype_name(loss.dtype) == spec["dtype"]
        for g, p in zip(grads, net.params):
            for k in "Wb":
                assert g[k].shape == p[k].shape and g[k].dtype == p[k].dtype
                assert backend.owns(g[k]) and backend.same_device(g[k])

    for_every_network(backend, check)


def test_predictions_survive_save_and_load(backend: xbp.backends.select.Backend) -> None:
    def check(spec) -> None:
        net = build(spec, backend)
        x, _ = batch(np.random.default_rng(spec["seed"]), spec["sizes"], spec["loss"], spec["n"])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.npz")
            xbp.save(net, path)
            loaded = xbp.load(path, backend=backend)
        assert loaded.backend == backend and loaded.config() == net.config()
        np.testing.assert_array_equal(loaded.predict(x), net.predict(x))

    for_every_network(backend, check)
