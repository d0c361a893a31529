"""Divergence handling, exact resume, and checkpoints that survive SIGKILL."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import xbp
from xbp import optim


def exploding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * 10
    return x, x @ np.array([[1.0], [2.0], [3.0]])


@pytest.fixture(autouse=True)
def _quiet_overflow():
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def linear(backend="numpy"):
    return xbp.Network([xbp.nn.Dense(3, 1, "identity")], loss="mse", seed=0, backend=backend)


def test_divergence_stops_restores_last_good_weights_and_says_where(tmp_path) -> None:
    x, y = exploding()
    net = linear()
    ck = tmp_path / "ck.npz"
    with pytest.raises(xbp.errors.DivergenceError) as info:
        xbp.fit(
            net,
            x,
            y,
            epochs=3,
            batch_size=4,
            optimizer=optim.sgd(20.0),
            progress=False,
            seed=0,
            checkpoint=ck,
        )
    msg = str(info.value)
    assert "training diverged at epoch 1, step" in msg and "last good weights" in msg
    step = int(msg.split("step ")[1].split()[0])
    # the same steps done by hand, one fewer than the failing one
    ref = linear()
    perm = np.random.default_rng(0).permutation(200)
    for b in range(step - 1):
        idx = perm[4 * b : 4 * b + 4]
        _, grads = ref.backprop(x[idx], y[idx])
        ref.params = [{k: p[k] - 20.0 * g[k] for k in p} for p, g in zip(ref.params, grads)]
    for p, q in zip(net.params, ref.params):
        # plain SGD folds -lr into the backward pass: equal up to rounding
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-12)
        assert np.isfinite(p["W"]).all()
    assert not ck.exists()  # epoch 1 never finished: nothing (and no NaN) was written


def test_divergence_never_overwrites_a_good_checkpoint(tmp_path) -> None:
    x, y = exploding()
    net = linear()
    ck = tmp_path / "ck.npz"
    xbp.fit(
        net, x, y, epochs=2, batch_size=4, optimizer=optim.sgd(1e-3), progress=False, checkpoint=ck
    )
    good = ck.read_bytes()
    with pytest.raises(xbp.errors.DivergenceError):
        xbp.fit(
            net,
            x,
            y,
            epochs=3,
            batch_size=4,
            optimizer=optim.sgd(1e-3),
            progress=False,
            checkpoint=ck,
            resume=ck,
            callbacks=[_Explode()],
        )
    assert ck.read_bytes() == good
    assert np.isfinite(xbp.load(ck).params[0]["W"]).all()


class _Explode(xbp.Callback):
    """Scales the weights so the next epoch overflows (a stand-in for a bad spike)."""

    def on_train_begin(self, trainer) -> None:
        trainer.net.params = [{"W": p["W"] * 1e200, "b": p["b"]} for p in trainer.net.params]


def test_halving_the_learning_rate_recovers(capsys) -> None:
    x, y = exploding()
    net = linear()
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=3,
        batch_size=4,
        optimizer=optim.sgd(20.0),
        progress=False,
        on_divergence="halve",
        max_retries=15,
        seed=0,
    )
    assert hist.diverged and hist.diverged[0]["epoch"] == 1 and hist.diverged[0]["step"] >= 1
    rates = [d["learning_rate"] for d in hist.diverged]
    assert rates == [20.0 / 2**k for k in range(len(rates))]
    assert hist["learning_rate"][-1] == 20.0 / 2 ** len(rates)
    assert np.isfinite(net.params[0]["W"]).all() and len(hist) == 3
    assert "retrying the epoch with the learning rate halved" in capsys.readouterr().err


def test_halving_gives_up_after_max_retries() -> None:
    x, y = exploding()
    with pytest.raises(xbp.errors.DivergenceError, match="after 2 halvings"):
        xbp.fit(
            linear(),
            x,
            y,
            epochs=2,
            batch_size=4,
            optimizer=optim.sgd(1e6),
            progress=False,
            on_divergence="halve",
            max_retries=2,
        )


@pytest.mark.parametrize("name", ["sgd", "adam", "nesterov"])
def test_interrupted_and_resumed_run_is_bit_identical(
    tmp_path, backend: xbp.backends.select.Backend, name: str
) -> None:
    x, y = xbp.data.load_digits()
    x, y = x[:300], y[:300]
    sched = optim.cosine(0.05 if name != "adam" else 0.005, 100)

    def run(epochs, **kw):
        net = xbp.mlp(
            [64, 12, 10], activation="tanh", loss="cross_entropy", seed=2, backend=backend
        )
        opt = optim.get_optimizer(name, sched)
        stop = xbp.EarlyStopping(patience=50)
        hist = xbp.fit(
            net,
            x,
            y,
            epochs=epochs,
            batch_size=32,
            optimizer=opt,
            seed=5,
            validation_split=0.2,
            progress=False,
            callbacks=[stop],
            **kw,
        )
        return net, hist

    full, full_hist = run(6)
    ck = tmp_path / "ck.npz"
    run(3, checkpoint=ck)  # "interrupted" after epoch 3
    resumed, hist = run(6, checkpoint=ck, resume=ck)
    assert [r["epoch"] for r in hist.epochs] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in hist.epochs] == [r["loss"] for r in full_hist.epochs]
    for p, q in zip(resumed.host_params(), full.host_params()):
        for k in "Wb":
            np.testing.assert_array_equal(p[k], q[k])


def test_resume_refuses_another_architecture(tmp_path) -> None:
    x, y = xbp.data.make_blobs(40, centers=2, seed=0)
    ck = tmp_path / "ck.npz"
    xbp.fit(
        xbp.mlp([2, 4, 2], loss="cross_entropy"),
        x,
        y,
        epochs=1,
        batch_size=8,
        progress=False,
        checkpoint=ck,
    )
    with pytest.raises(xbp.errors.XbpFileError, match=r"holds a \[2, 4, 2\] network"):
        xbp.fit(
            xbp.mlp([2, 5, 2], loss="cross_entropy"),
            x,
            y,
            epochs=2,
            batch_size=8,
            progress=False,
            resume=ck,
        )
    with pytest.raises(xbp.errors.XbpValueError, match="resume with the same optimizer"):
        xbp.fit(
            xbp.mlp([2, 4, 2], loss="cross_entropy"),
            x,
            y,
            epochs=2,
            batch_size=8,
            progress=False,
            resume=ck,
            optimizer="adam",
        )


TRAIN = [
    "train",
    "--data",
    "digits",
    "--layers",
    "24",
    "--epochs",
    "800",
    "--batch-size",
    "32",
    "--optimizer",
    "momentum",
    "--quiet",
    "--seed",
    "3",
]


def _xbp(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "xbp", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_always_leaves_a_resumable_checkpoint(tmp_path) -> None:
    ck = tmp_path / "ck.npz"
    rnd = random.Random(1234)
    kills = 0
    epochs_seen = []
    while kills < 5:
        args = TRAIN + ["--checkpoint", str(ck)] + (["--resume", str(ck)] if ck.exists() else [])
        before = ck.stat().st_mtime_ns if ck.exists() else None
        proc = _xbp(args)
        # start the random delay once this run trains (it has written a checkpoint): the
        # interpreter's start-up alone can outlast a fixed delay on a loaded machine
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if ck.exists() and ck.stat().st_mtime_ns != before:
                break
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.5))  # spans several epochs' checkpoint writes
        if proc.poll() is not None:
            pytest.fail(
                f"training exited (rc {proc.returncode}) before kill {kills + 1}: "
                f"{proc.stderr.read()[-2000:]}"
            )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if ck.exists():
            state = xbp.load_checkpoint(ck)  # always loads: never half-written
            epochs_seen.append(state.training["epoch"])
            assert all(np.isfinite(v).all() for p in state.network.params for v in p.values())
    assert len(epochs_seen) == 5 and epochs_seen == sorted(epochs_seen) and epochs_seen[0] > 0
    done = _xbp(TRAIN + ["--checkpoint", str(ck), "--resume", str(ck)])
    assert done.wait(timeout=300) == 0, done.stderr.read()
    ref = tmp_path / "ref.npz"
    assert _xbp(TRAIN + ["--checkpoint", str(ref)]).wait(timeout=300) == 0
    a, b = xbp.load_checkpoint(ck), xbp.load_checkpoint(ref)
    assert a.training["epoch"] == b.training["epoch"] == 800
    for p, q in zip(a.network.host_params(), b.network.host_params()):
        for k in p:
            np.testing.assert_array_equal(p[k], q[k])
    leftovers = [p.name for p in Path(tmp_path).iterdir() if p.suffix == ".tmp"]
    assert len(leftovers) <= kills  # a kill mid-write may leave a temporary, never a bad ck.npz
