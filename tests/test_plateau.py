"""ReduceLROnPlateau and learning-rate schedules given in epochs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xbp
from xbp import optim
from xbp.errors import XbpValueError


class _Script(xbp.Callback):
    """Writes ``values[epoch - 1]`` into the epoch's logs as ``name``."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def on_epoch_end(self, trainer: xbp.train.Trainer, logs: dict[str, Any]) -> None:
        logs[self.name] = self.values[logs["epoch"] - 1]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2))
    return x, x @ np.array([[1.0], [-2.0]])


def _run(values: list[float], plateau: xbp.ReduceLROnPlateau, lr: Any = 0.1) -> xbp.History:
    x, y = _data()
    net = xbp.mlp([2, 1], output="identity", seed=0)
    return xbp.fit(
        net,
        x,
        y,
        epochs=len(values),
        batch_size=5,
        optimizer=optim.sgd(lr),
        callbacks=[_Script("score", values), plateau],
        progress=False,
    )


@pytest.mark.parametrize(
    ("mode", "values", "reduced"),
    [
        # larger is better: epochs 2 (equal) and 3 do not beat epoch 1's 0.5 (patience 2)
        ("max", [0.5, 0.5, 0.4, 0.9, 0.8, 0.7], [3, 6]),
        # smaller is better: the same numbers improve at 2 and stall from 3 on
        ("min", [0.5, 0.4, 0.4, 0.9, 0.8, 0.7], [4, 6]),
    ],
)
def test_plateau_reduces_after_patience_in_the_monitors_direction(
    mode: str, values: list[float], reduced: list[int]
) -> None:
    plateau = xbp.ReduceLROnPlateau(
        monitor="score", mode=mode, factor=0.5, patience=2, min_delta=0.0
    )
    hist = _run(values, plateau)
    assert plateau.reductions == reduced
    want, rate = [], 0.1
    for epoch in range(1, len(values) + 1):
        want.append(rate)
        if epoch in reduced:
            rate *= 0.5
    np.testing.assert_allclose(hist["learning_rate"], want, rtol=1e-15)


def test_cooldown_min_delta_and_min_lr() -> None:
    flat = [1.0] * 7
    # cooldown 2: after the reduction at epoch 2 (patience 1: the first stalled epoch),
    # epochs 3-4 do not count
    plateau = xbp.ReduceLROnPlateau(monitor="score", mode="min", factor=0.5, patience=1, cooldown=2)
    hist = _run(flat, plateau)
    assert plateau.reductions == [2, 5]
    want = [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]  # each reduction scales the last
    np.testing.assert_allclose(hist["learning_rate"], want, rtol=1e-15)
    # min_delta: improving by less than it is no improvement
    slow = [1.0, 0.99, 0.98, 0.97]
    plateau = xbp.ReduceLROnPlateau(monitor="score", mode="min", patience=1, min_delta=0.05)
    _run(slow, plateau)
    assert plateau.reductions == [2, 3, 4]
    plateau = xbp.ReduceLROnPlateau(monitor="score", mode="min", patience=1, min_delta=0.001)
    _run(slow, plateau)
    assert plateau.reductions == []
    # min_lr: the rate stops at it
    plateau = xbp.ReduceLROnPlateau(
        monitor="score", mode="min", factor=0.1, patience=1, min_lr=0.02
    )
    hist = _run(flat[:4], plateau)
    np.testing.assert_allclose(hist["learning_rate"], [0.1, 0.1, 0.02, 0.02], rtol=1e-15)


def test_plateau_composes_with_the_schedule_and_adam() -> None:
    """The scale multiplies the schedule's rate at every later step, and the weights
    equal a run whose schedule is scaled by hand from that epoch on."""
    x, y = _data()
    sched = optim.cosine(0.05, decay_steps=12)
    net = xbp.mlp([2, 1], output="identity", seed=0)
    plateau = xbp.ReduceLROnPlateau(monitor="score", mode="max", factor=0.25, patience=1)
    hist = xbp.fit(
        net,
        x,
        y,
        epochs=4,
        batch_size=5,
        optimizer=optim.adam(sched),
        shuffle=False,
        callbacks=[_Script("score", [1.0, 0.0, 2.0, 3.0]), plateau],
        progress=False,
    )
    assert plateau.reductions == [2]
    want = [sched(0), sched(2), 0.25 * sched(4), 0.25 * sched(6)]
    np.testing.assert_allclose(hist["learning_rate"], want, rtol=1e-14)
    # by hand: two epochs at the schedule, then two with the rate scaled
    ref = xbp.mlp([2, 1], output="identity", seed=0)
    trainer = xbp.train.Trainer(ref, xbp.TrainOptions(optimizer=optim.adam(sched), batch_size=5))
    xd, yd = ref.check_inputs(x), ref.check_targets(y, 10)
    for epoch in range(4):
        trainer.lr_scale = 1.0 if epoch < 2 else 0.25
        for s in (0, 5):
            trainer.train_step(xd[s : s + 5], yd[s : s + 5])
    for a, b in zip(net.host_params(), ref.host_params()):
        np.testing.assert_allclose(a["W"], b["W"], rtol=1e-14)


def test_plateau_state_is_saved_and_resumed(tmp_path) -> None:
    x, y = _data()
    values = [1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0]

    def run(epochs: int, **kw: Any) -> tuple[xbp.Network, xbp.ReduceLROnPlateau, xbp.History]:
        net = xbp.mlp([2, 1], output="identity", seed=0)
        plateau = xbp.ReduceLROnPlateau(monitor="score", mode="max", factor=0.5, patience=2)
        hist = xbp.fit(
            net,
            x,
            y,
            epochs=epochs,
            batch_size=5,
            optimizer=optim.momentum(0.05),
            callbacks=[_Script("score", values), plateau],
            progress=False,
            **kw,
        )
        return net, plateau, hist

    whole, p_whole, h_whole = run(7)
    ck = tmp_path / "ck.npz"
    run(5, checkpoint=ck)  # reduced at 3; wait 1 at the end of epoch 5
    resumed, p_res, h_res = run(7, resume=ck)
    assert p_res.reductions == p_whole.reductions == [3, 6]
    assert h_res["learning_rate"] == h_whole["learning_rate"]
    for a, b in zip(resumed.host_params(), whole.host_params()):
        np.testing.assert_array_equal(a["W"], b["W"])


def test_schedules_in_epochs_are_resolved_by_fit() -> None:
    x, y = _data()  # 10 rows, batches of 3: 4 steps per epoch (the last one short)

    def run(sched: optim.Schedule) -> tuple[xbp.Network, xbp.History]:
        net = xbp.mlp([2, 1], output="identity", seed=0)
        hist = xbp.fit(
            net, x, y, epochs=5, batch_size=3, optimizer=optim.sgd(sched), progress=False
        )
        return net, hist

    for by_epochs, by_steps in (
        (optim.cosine(0.1, epochs=4), optim.cosine(0.1, decay_steps=16)),
        (optim.step(0.1, epochs=2, gamma=0.5), optim.step(0.1, step_size=8, gamma=0.5)),
        (optim.exponential(0.1, 0.5, epochs=2), optim.exponential(0.1, 0.5, decay_steps=8)),
        (optim.warmup(0.1, epochs=1), optim.warmup(0.1, warmup_steps=4)),
        (
            optim.warmup(optim.cosine(0.1, epochs=4), epochs=1),
            optim.warmup(optim.cosine(0.1, decay_steps=16), warmup_steps=4),
        ),
    ):
        assert by_epochs.in_epochs and not by_steps.in_epochs
        net_e, hist_e = run(by_epochs)
        net_s, hist_s = run(by_steps)
        assert hist_e["learning_rate"] == hist_s["learning_rate"]
        for a, b in zip(net_e.host_params(), net_s.host_params()):
            np.testing.assert_array_equal(a["W"], b["W"])
    assert run(optim.cosine(0.1, epochs=4))[1]["learning_rate"][-1] == 0.0  # decayed fully


def test_schedule_in_epochs_errors() -> None:
    with pytest.raises(XbpValueError, match="pass decay_steps= .* or epochs="):
        optim.cosine(0.1)
    with pytest.raises(XbpValueError, match="exactly one"):
        optim.cosine(0.1, decay_steps=10, epochs=2)
    with pytest.raises(XbpValueError, match="schedule is given in epochs"):
        optim.cosine(0.1, epochs=2)(0)
    x, y = _data()
    net = xbp.mlp([2, 1], output="identity", seed=0)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    with pytest.raises(XbpValueError, match="batch source does not say"):
        xbp.fit(net, batches, epochs=1, optimizer=optim.sgd(optim.cosine(0.1, epochs=2)))
    with pytest.raises(XbpValueError, match="factor=1"):
        xbp.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(XbpValueError, match="neither the loss nor a metric"):
        xbp.ReduceLROnPlateau(monitor="score")
