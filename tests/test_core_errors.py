"""Bad input to the core raises an xbp error that names the argument and the fix."""

from __future__ import annotations

import numpy as np
import pytest

import xbp
from xbp.errors import XbpError, XbpTypeError, XbpValueError


def net(**kw):
    return xbp.mlp([3, 4, 2], activation="tanh", loss="cross_entropy", **kw)


X = np.zeros((5, 3))
Y = np.array([0, 1, 0, 1, 1])


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (
            lambda: xbp.mlp([3, 2], activation="swish"),
            XbpValueError,
            r"activation='swish'.*'sigmoid'",
        ),
        (lambda: xbp.mlp([3, 2], loss="hinge"), XbpValueError, r"loss='hinge'.*'cross_entropy'"),
        (
            lambda: xbp.mlp([3, 2], output="softmax", loss="mse"),
            XbpValueError,
            r"loss='quadratic' cannot follow output activation 'softmax'.*cross_entropy",
        ),
        (
            lambda: xbp.mlp([3, 2], output="sigmoid", loss="cross_entropy"),
            XbpValueError,
            r"softmax output",
        ),
        (
            lambda: xbp.Network(
                [xbp.Dense(3, 4, "softmax"), xbp.Dense(4, 2, "softmax")], loss="cross_entropy"
            ),
            XbpValueError,
            r"layers\[0\].*output activation only",
        ),
        (
            lambda: xbp.Network([xbp.Dense(3, 4), xbp.Dense(5, 2)]),
            XbpValueError,
            r"layers\[1\].n_in=5 does not match layers\[0\].n_out=4",
        ),
        (lambda: xbp.Network([]), XbpValueError, "layers is empty"),
        (lambda: xbp.Dense(0, 3), XbpValueError, r"Dense.n_in=0 must be an integer >= 1"),
        (lambda: xbp.mlp([3]), XbpValueError, "at least two widths"),
        (lambda: xbp.mlp([3, 2], init="xavier"), XbpValueError, r"init='xavier'.*'glorot_uniform'"),
        (lambda: xbp.mlp([3, 2], backend="tensorflow"), XbpValueError, r"backend='tensorflow'"),
        (lambda: net().forward(np.zeros((5, 4))), XbpValueError, r"x has 4 features.*takes 3"),
        (
            lambda: net().forward(np.zeros(3)),
            XbpValueError,
            r"x has shape \(3,\).*2-D.*x\[None, :\]",
        ),
        (
            lambda: net().forward(np.zeros((5, 3), dtype=np.int64)),
            XbpTypeError,
            r"x has dtype int64.*astype",
        ),
        (lambda: net().forward(np.full((2, 3), np.nan)), XbpValueError, r"x contains NaN or Inf"),
        (lambda: net().forward(np.zeros((0, 3))), XbpValueError, r"x has no rows"),
        (lambda: net().forward("abc"), XbpTypeError, r"x is a str, not an array"),
        (lambda: net().backprop(X, Y[:4]), XbpValueError, r"y has 4 rows but x has 5"),
        (lambda: net().backprop(X, np.zeros((5, 3))), XbpValueError, r"y has 3 columns.*2 outputs"),
        (
            lambda: net().backprop(X, np.array([0, 1, 2, 0, 1])),
            XbpValueError,
            r"y holds class labels from 0 to 2.*0\.\.1",
        ),
        (
            lambda: net().backprop(X, np.array([0.0, 1, 0, 1, 1])),
            XbpTypeError,
            r"integer class labels",
        ),
        (
            lambda: net().backprop(X, np.full((5, 2), np.inf)),
            XbpValueError,
            r"y contains NaN or Inf",
        ),
    ],
)
def test_bad_input(make, error, pattern) -> None:
    with pytest.raises(error, match=pattern) as info:
        make()
    assert isinstance(info.value, XbpError)


def test_mixed_namespaces_refused() -> None:
    torch = pytest.importorskip("torch")
    n = net()
    with pytest.raises(XbpTypeError, match=r"x is a torch array.*numpy"):
        n.forward(torch.zeros((5, 3), dtype=torch.float64))
    with pytest.raises(XbpTypeError, match=r"y is a torch array"):
        n.backprop(X, torch.zeros(5, dtype=torch.int64))


def test_mixed_devices_refused() -> None:
    strict = pytest.importorskip("array_api_strict")
    n = net(backend="array_api_strict", device=strict.Device("device1"))
    x = strict.asarray(X)  # CPU_DEVICE
    with pytest.raises(XbpValueError, match=r"x is on device .*CPU_DEVICE.*device1"):
        n.forward(x)
    xs = strict.asarray(X, device=strict.Device("device1"))
    with pytest.raises(XbpValueError, match=r"y is on device"):
        n.backprop(xs, strict.asarray(Y))
    assert n.forward(xs).shape == (5, 2)


def test_namespace_of_rejects_mixture() -> None:
    torch = pytest.importorskip("torch")
    from xbp.backend import namespace_of

    with pytest.raises(XbpTypeError, match="mix"):
        namespace_of(np.zeros(2), torch.zeros(2), argument="x, y")
