"""``xbp explain``: every printed number recomputed independently, and docs/math.md kept current."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import xbp
from xbp import cli
from xbp.nn.activations import ACTIVATIONS
from xbp.nn.losses import LOSSES

MATH = Path(__file__).resolve().parents[1] / "docs" / "math.md"
MARKER = re.compile(r"<!-- test_explain\.py regenerates this block: xbp (?P<args>.+) -->")
NUMBER = re.compile(r"[-+]?\d\.\d+e[-+]\d+")


def run(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def parse(text: str) -> dict[str, list[np.ndarray]]:
    """``{label: [array, ...]}`` for every ``label = [...]`` in the output (a label printed
    twice, like ``W_1`` before and after the update, keeps both in order)."""
    found: dict[str, list[np.ndarray]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "= [" not in line:
            i += 1
            continue
        label = line.split(" = ")[0].strip()
        body = line[line.index("= [") + 2 :]
        while body.count("[") > body.count("]"):
            i += 1
            body += lines[i]
        rows = [NUMBER.findall(r) for r in re.findall(r"\[([^\[\]]*)\]", body)]
        found.setdefault(label, []).append(
            np.array(rows, dtype=float).squeeze(0 if len(rows) == 1 else None)
        )
        i += 1
    return found


def sig(z):
    return 1 / (1 + np.exp(-z))


def test_every_number_of_the_default_network_by_hand() -> None:
    """The 2-3-1 sigmoid network on XOR sample 2, recomputed in plain NumPy from its weights."""
    text = run("explain", "--sample", "2", "--digits", "17", "--lr", "0.25")
    got = parse(text)
    net = xbp.mlp([2, 3, 1], activation="sigmoid", output="sigmoid", seed=0)
    p = net.host_params()
    x, y = np.array([1.0, 0.0]), np.array([1.0])
    z1 = x @ p[0]["W"] + p[0]["b"]
    a1 = sig(z1)
    z2 = a1 @ p[1]["W"] + p[1]["b"]
    a2 = sig(z2)
    d2 = (a2 - y) * a2 * (1 - a2)
    d1 = (d2 @ p[1]["W"].T) * a1 * (1 - a1)
    expected = {
        "A_0": x,
        "W_1": p[0]["W"],
        "b_1": p[0]["b"],
        "Z_1": z1,
        "A_1": a1,
        "Z_2": z2,
        "A_2": a2,
        "A_2 - y": a2 - y,
        "sigmoid'(Z_2)": a2 * (1 - a2),
        "delta_2": d2,
        "delta_2 W_2^T": d2 @ p[1]["W"].T,
        "sigmoid'(Z_1)": a1 * (1 - a1),
        "delta_1": d1,
        "dC/db_1": d1,
        "dC/dW_1": np.outer(x, d1),
        "dC/db_2": d2,
        "dC/dW_2": np.outer(a1, d2),
    }
    for label, want in expected.items():
        have = got[label][0]
        np.testing.assert_allclose(have.reshape(want.shape), want, rtol=1e-15, atol=1e-300)
    # the update with eta = 0.25
    np.testing.assert_allclose(got["W_1"][1], p[0]["W"] - 0.25 * np.outer(x, d1), rtol=1e-15)
    np.testing.assert_allclose(
        got["b_2"][1].reshape(1), p[1]["b"] - 0.25 * d2, rtol=1e-15, atol=1e-300
    )
    cost = float(text.split("C (quadratic) = ")[1].split()[0])
    assert cost == pytest.approx(0.5 * float((a2 - y) @ (a2 - y)), rel=1e-15)
    assert "eta = 0.25" in text


def test_softmax_cross_entropy_states_the_fused_error() -> None:
    text = run(
        "explain", "--data", "blobs", "--layers", "4", "--activation", "tanh",
        "--loss", "cross_entropy", "--sample", "5", "--digits", "17",
    )  # fmt: skip
    got = parse(text)
    assert "delta_2 = (A_2 - y) / n   (softmax + cross_entropy" in text
    x, y = xbp.data.load_dataset("blobs", seed=0)
    net = xbp.mlp([x.shape[1], 4, 3], activation="tanh", loss="cross_entropy", seed=0)
    p = net.host_params()
    a1 = np.tanh(x[5] @ p[0]["W"] + p[0]["b"])
    z2 = a1 @ p[1]["W"] + p[1]["b"]
    a2 = np.exp(z2 - z2.max()) / np.exp(z2 - z2.max()).sum()
    d2 = a2 - np.eye(3)[int(y[5])]
    np.testing.assert_allclose(got["delta_2"][0], d2, rtol=1e-14)
    d1 = (d2 @ p[1]["W"].T) * (1 - a1**2)
    np.testing.assert_allclose(got["dC/db_1"][0], d1, rtol=1e-13)


def test_check_reports_finite_differences() -> None:
    text = run("explain", "--sample", "1", "--check")
    errors = [float(v) for v in re.findall(r"max\|gradient\| = (\S+)", text)]
    assert len(errors) == 4 and max(errors) < 1e-6
    assert "the equations' deltas agree with value_and_grad" in text


def test_registered_parts_and_a_saved_model(tmp_path: Path) -> None:
    """A GELU layer (derivative from Z) and a registered loss: the printed deltas are
    computed from the equations and checked against the kernel inside explain."""
    acts, losses = dict(ACTIVATIONS), dict(LOSSES)
    try:
        c = np.sqrt(2 / np.pi)
        xbp.register_activation(
            "gelu_e",
            lambda xp, z: 0.5 * z * (1 + xp.tanh(c * (z + 0.044715 * z**3))),
            lambda xp, z: (
                0.5 * (1 + xp.tanh(c * (z + 0.044715 * z**3)))
                + 0.5 * z * (1 - xp.tanh(c * (z + 0.044715 * z**3)) ** 2)
                * c * (1 + 3 * 0.044715 * z**2)
            ),
            from_z=True,
        )  # fmt: skip
        xbp.register_loss("l4", lambda xp, a, y: (a - y) ** 4 / 4, lambda xp, a, y: (a - y) ** 3)
        net = xbp.mlp([2, 5, 4, 1], activation="gelu_e", output="tanh", loss="l4", seed=3)
        x, y = xbp.data.make_xor()
        text = xbp.explain(net, x[3:4], y[3:4].reshape(1, 1), digits=17, check=True)
        assert "gelu_e'(Z_2) from Z" in text and "delta_3 = the output error of loss 'l4'" in text
        assert max(float(v) for v in re.findall(r"max\|gradient\| = (\S+)", text)) < 1e-6
        path = tmp_path / "m.npz"
        xbp.save(net, path)
        out = run("explain", "--model", str(path), "--data", "xor", "--sample", "3")
        np.testing.assert_allclose(parse(out)["W_1"][0], net.host_params()[0]["W"], rtol=1e-6)
    finally:
        ACTIVATIONS.clear()
        ACTIVATIONS.update(acts)
        LOSSES.clear()
        LOSSES.update(losses)


def test_math_md_walks_the_same_numbers() -> None:
    """docs/math.md's worked example is the program's current output, verbatim."""
    text = MATH.read_text()
    match = MARKER.search(text)
    assert match, "docs/math.md lost its worked example"
    block = text[match.end() :].split("```text\n", 1)[1].split("```", 1)[0]
    assert run(*match["args"].split()) == block, (
        "docs/math.md's worked example is stale: regenerate it with "
        f"xbp {match['args']} and paste the output"
    )


def test_check_warns_at_a_relu_kink() -> None:
    """x = [0, 0] with zero biases puts every relu Z at 0, where phi' jumps: the finite
    differences straddle the kink and the output says so; a sample away from it does not."""
    at_kink = run("explain", "--activation", "relu", "--check")
    assert max(float(v) for v in re.findall(r"max\|gradient\| = (\S+)", at_kink)) > 0.1
    assert "warning: Z_1 has entries within" in at_kink
    assert "finite-difference check is not meaningful" in at_kink
    net = xbp.mlp([2, 3, 1], activation="relu", loss="quadratic", seed=0)
    x = np.array([[0.7, -0.4]])
    z1 = x @ net.host_params()[0]["W"] + net.host_params()[0]["b"]
    assert np.min(np.abs(z1)) > 1e-3  # by hand: this sample is away from the kink
    away = xbp.explain(net, x, np.array([[0.3]]), check=True)
    assert "warning" not in away
    assert "warning" not in run("explain", "--check")  # sigmoid has no kink
