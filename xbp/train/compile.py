"""Compiled training steps: the same array-API step, traced or captured once.

The training step is :meth:`xbp.Network.value_and_grad` followed by the
optimizer's update and :func:`xbp.optim.apply_updates`, exactly as in the
eager loop (:meth:`xbp.train.Trainer.train_step`). This module never re-implements
that math: it traces or captures the one step (:class:`xbp.train.step.Step`, through
:func:`traced_step`) for a backend that can compile it:

- **JAX**: ``jax.jit`` of a whole epoch, ``lax.scan`` over its full batches
  (one dispatch per epoch), parameter and optimizer buffers donated on
  accelerators; the last short batch is its own compiled step (exact, never
  padded). Compiled functions are cached by the step (:meth:`xbp.train.step.Step.compiled`),
  keyed by the network's parts, the optimizer's rule and the batch shape, so
  later ``fit`` calls reuse them.
- **torch on CUDA**: the step is captured once into a CUDA graph with static
  batch-index, scalar and parameter buffers and replayed per batch; the last
  short batch runs eagerly.

Everything that depends on the step count (the learning rate of a schedule,
Adam's bias corrections) is computed on the host per step
(:meth:`xbp.optim.Optimizer.scalars`) and read by the compiled code from a
device array, so a schedule never forces a recompilation.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from ..errors import CollectiveError, XbpValueError, arg
from ..nn.network import LOSS_SCALED, epoch_summary, no_caches
from ..nn.weights import batch_weight_sum, take_batch
from ..optim import tree
from .step import Batch, Step

__all__ = ["compiled_epoch_runner", "EpochRunner"]


def traced_step(
    step: Step,
    template: Any,
    params: Any,
    arrays: list[Any],
    batch: Batch,
    row: Any,
    state: Any,
) -> tuple[Any, list[Any], Any, Any, Any, Any]:
    """The one step (:class:`xbp.train.step.Step`) as a function of device values, for
    tracing or capture: the optimizer state travels as its array leaves
    (``template`` gives the structure; counts stay on the host) and the step's host
    numbers as the device row ``row``; ``state`` is the layers' state (running
    statistics). Returns the new parameters, optimizer arrays and layer state,
    ``cost * n_total``, the correct count (0 without labels) and the per-step L2
    term's ``penalty_sum`` (0 without one)."""
    with no_caches():
        out = step(
            params,
            tree.rebuild(template, list(arrays)),
            batch,
            step.unpack(template, row),
            [dict(s) for s in state],
        )
    correct, penalty = out.correct, out.penalty_sum
    if correct is None:
        correct = step.net.xp.zeros((), dtype=out.cost.dtype)
    if penalty is None:
        penalty = step.net.xp.zeros((), dtype=out.cost.dtype)
    return out.params, tree.arrays(out.opt_state), out.state, out.cost_sum, correct, penalty


class EpochRunner:
    """Runs one epoch of compiled steps for a :class:`xbp.train.Trainer`, over the device
    arrays of a data source (:meth:`xbp.data.sources.Source.device_arrays`: ``x``, ``y``,
    ``w``, ``labels``, indexed inside the compiled code) in the order of a host
    permutation."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def run_epoch(self, data: Any, host_perm: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError


class TracedEpochRunner(EpochRunner):
    """A traced epoch (JAX: ``jax.jit`` of ``lax.scan`` over the full batches, then the
    short last batch as its own step, in one compiled function and one dispatch)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def _function(self) -> Any:
        trainer = self.trainer
        step: Step = trainer.one_step
        be, xp = step.net.backend, step.net.xp
        template = trainer.opt_state
        bs = trainer.options.batch_size

        def build() -> Any:
            def one(params, arrays, state, x, y, labels, w, idx, row, dkey):  # type: ignore[no-untyped-def]
                xb, yb, wb, n_total = take_batch(xp, x, y, w, idx, idx.shape[0])
                lb = None if labels is None else xp.take(labels, idx, axis=0)
                batch = Batch(xb, yb, n_total, wb, dkey, lb)
                return traced_step(step, template, params, arrays, batch, row, state)

            def epoch(params, arrays, state, x, y, labels, w, perm, scal, keys):  # type: ignore[no-untyped-def]
                n_full, rest = divmod(perm.shape[0], bs)
                costs, corrects, penalties = [], [], []
                if n_full:
                    idx_mat = xp.reshape(perm[: n_full * bs], (n_full, bs))

                    def body(carry, inp):  # type: ignore[no-untyped-def]
                        p, a, st = carry
                        dkey = None if keys is None else inp[2]
                        p, a, st, cost, correct, pen = one(
                            p, a, st, x, y, labels, w, inp[0], inp[1], dkey
                        )
                        return (p, a, st), (cost, correct, pen)

                    xs: tuple[Any, ...] = (idx_mat, scal[:n_full, ...])
                    if keys is not None:
                        xs = (*xs, keys[:n_full, ...])
                    (params, arrays, state), (c, k, q) = be.scan(body, (params, arrays, state), xs)
                    costs.append(c)
                    corrects.append(k)
                    penalties.append(q)
                if rest:
                    params, arrays, state, c, k, q = one(
                        params,
                        arrays,
                        state,
                        x,
                        y,
                        labels,
                        w,
                        perm[n_full * bs :],
                        scal[n_full, ...],
                        None if keys is None else keys[n_full, ...],
                    )
                    costs.append(xp.reshape(c, (1,)))
                    corrects.append(xp.reshape(k, (1,)))
                    penalties.append(xp.reshape(q, (1,)))
                costs, corrects = xp.concat(costs), xp.concat(corrects)
                out = {"costs": costs, "corrects": corrects if labels is not None else None}
                # the epoch's one read-back vector, built here rather than by eager calls
                summary = epoch_summary(xp, params + state, out)  # NaN in weights or state
                pen = None
                if step.optimizer.per_step_l2:  # the per-step L2 sums end the summary
                    pen = xp.concat(penalties)
                    summary = xp.concat([summary, xp.astype(pen, summary.dtype)])
                return params, arrays, state, costs, corrects, summary, pen

            # parameters and optimizer state are donated: the device may update in place
            return be.jit(epoch, (0, 1))

        return step.compiled(template, ("epoch", bs), build)

    def run_epoch(self, data: Any, host_perm: np.ndarray) -> dict[str, Any]:
        trainer = self.trainer
        net, be = trainer.net, trainer.net.backend
        n_steps = -(-data.n // trainer.options.batch_size)
        epoch_fn = self._function()
        state = trainer.opt_state
        scal = trainer.one_step.scalar_rows(state, n_steps, trainer.lr_scale)
        params, arrays, layer_state, costs, corrects, summary, penalties = epoch_fn(
            [dict(p) for p in net.params],
            tree.arrays(state),
            [dict(s) for s in net.state],
            data.x,
            data.y,
            data.labels,
            data.w,
            be.jit_input(host_perm),
            be.jit_input(scal, net.dtype),
            trainer.dropout_keys(trainer.step, [0] * n_steps),
        )
        net.adopt_params(params)
        net.adopt_state(layer_state)
        trainer.opt_state = tree.rebuild(state, arrays, n_steps)
        trainer.step += n_steps
        return {
            "costs": costs,
            "corrects": None if data.labels is None else corrects,
            "summary": summary,
            "penalties": penalties,
        }


class SteppedEpochRunner(EpochRunner):
    """Traced halves of every step with the strategy's reduction between them (a
    data-parallel run: the exchange happens on the host, outside compiled code):
    compiled :meth:`Step.gradients`, ``Strategy.reduce_grads``, compiled
    :meth:`Step.apply`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def _functions(self) -> tuple[Any, Any]:
        trainer = self.trainer
        step: Step = trainer.one_step
        be, xp = step.net.backend, step.net.xp
        template = trainer.opt_state

        def build() -> tuple[Any, Any]:
            def grads(params, state, x, y, labels, idx, row, extra, n_total):  # type: ignore[no-untyped-def]
                # extra: (row weights, their global batch sum, dropout key), device values
                w, wsum, dkey = extra
                xb = xp.take(x, idx, axis=0)
                yb = xp.take(y, idx, axis=0)
                wb = None if w is None else xp.take(w, idx, axis=0)
                lb = None if labels is None else xp.take(labels, idx, axis=0)
                batch = Batch(xb, yb, n_total if wsum is None else wsum, wb, dkey, lb)
                with no_caches():
                    cost, g, out, state = step.gradients(
                        params, batch, step.unpack(template, row), state, overlap=False
                    )
                _, correct = step.sums(cost, out, batch)
                if correct is None:
                    correct = xp.zeros((), dtype=cost.dtype)
                return cost, g, correct, state

            def update(params, arrays, g, row):  # type: ignore[no-untyped-def]
                state = tree.rebuild(template, list(arrays))
                params, state, _ = step.apply(params, state, g, step.unpack(template, row))
                return params, tree.arrays(state)

            per_size: dict[int, Any] = {}  # the divisor is static: one trace per batch size

            def grads_for(*args: Any, n_total: int) -> Any:
                fn = per_size.get(n_total)
                if fn is None:
                    fn = per_size[n_total] = be.jit(functools.partial(grads, n_total=n_total), ())
                return fn(*args)

            return grads_for, be.jit(update, (0, 1))

        return step.compiled(template, "stepped", build)  # type: ignore[no-any-return]

    def run_epoch(self, data: Any, host_perm: np.ndarray) -> dict[str, Any]:
        trainer = self.trainer
        net, be, xp = trainer.net, trainer.net.backend, trainer.net.xp
        strategy = trainer.strategy
        bs = trainer.options.batch_size
        starts = range(0, data.n, bs)
        grads_fn, update_fn = self._functions()
        state = trainer.opt_state
        scal = be.asarray(
            trainer.one_step.scalar_rows(state, len(starts), trainer.lr_scale), net.dtype
        )
        params = [dict(p) for p in net.params]
        layer_state = [dict(s) for s in net.state]
        arrays = tree.arrays(state)
        costs, corrects = [], []
        perm = be.asarray(host_perm)  # one transfer per epoch; batches are device slices
        keys = trainer.dropout_keys(
            trainer.step, [strategy.share(s, min(s + bs, data.n))[0] - s for s in starts]
        )
        for b, s in enumerate(starts):
            e = min(s + bs, data.n)
            lo, hi = strategy.share(s, e)
            idx = perm[lo:hi]
            # the global divisor: the whole batch's weight sum, summed here on the device
            wsum = None if data.w is None else batch_weight_sum(xp, xp.take(data.w, perm[s:e]))
            extra = (data.w, wsum, None if keys is None else keys[b, ...])
            cost, g, correct, layer_state = grads_fn(
                params,
                layer_state,
                data.x,
                data.y,
                data.labels,
                idx,
                scal[b, ...],
                extra,
                n_total=e - s,
            )
            cost, g = strategy.reduce_grads(cost, g)
            params, arrays = update_fn(params, arrays, g, scal[b, ...])
            costs.append(cost * (e - s if wsum is None else wsum))
            corrects.append(correct)
        net.adopt_params(params)
        net.adopt_state(layer_state)
        trainer.opt_state = tree.rebuild(state, arrays, len(starts))
        trainer.step += len(starts)
        return {
            "costs": xp.stack(costs),
            "corrects": None if data.labels is None else xp.stack(corrects),
        }


class CapturedEpochRunner(EpochRunner):
    """A captured step (torch on CUDA: a CUDA graph) replayed for every full batch.

    The parameters and optimizer state are the graph's static buffers (updated
    in place, as in the eager loop); each replay reads the batch's row
    indices and the step's scalars from static device buffers. The last short
    batch runs eagerly through :meth:`xbp.train.Trainer.train_step`. When anything
    replaced the weights or the optimizer state between epochs (resume, a
    restored snapshot, early stopping), their values are copied into the
    static buffers first, so the graph always trains the current weights.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.replay: Any = None
        self.key: Any = None
        self.required = trainer.options.compile is True
        self.failed = False

    def _adopt_static(self) -> None:
        """Make the trainer's current weights and state live in the static buffers."""
        trainer = self.trainer
        for p, q in zip(self.params, trainer.net.params):
            for k in p:
                if p[k] is not q[k]:
                    p[k][...] = q[k]
        for p, q in zip(self.lstate, trainer.net.state):
            for k in p:
                if p[k] is not q[k]:
                    p[k][...] = q[k]
        for a, b in zip(self.arrays, tree.arrays(trainer.opt_state)):
            if a is not b:
                a[...] = b
        trainer.net.adopt_params(self.params)
        trainer.net.adopt_state(self.lstate)
        trainer.opt_state = tree.rebuild(trainer.opt_state, self.arrays)

    def _capture(self, data: Any, k: int) -> None:
        trainer = self.trainer
        net, step = trainer.net, trainer.one_step
        xp = net.xp
        bs = trainer.options.batch_size
        dev = net.device
        self.idx = xp.zeros(bs, dtype=xp.int64, device=dev)
        self.scal = xp.zeros(k, dtype=net.dtype, device=dev)
        # the step's dropout key: a static buffer written before each replay
        self.dkey = xp.zeros(3, dtype=xp.int64, device=dev) if any(net.dropout) else None
        template = trainer.opt_state
        self.params = params = [dict(p) for p in net.params]
        self.arrays = arrays = tree.arrays(template)
        self.lstate = lstate = [dict(s) for s in net.state]
        saved_p = [{n: xp.asarray(v, copy=True) for n, v in p.items()} for p in params + lstate]
        saved_a = [xp.asarray(a, copy=True) for a in arrays]

        def one() -> tuple[Any, Any]:
            xb, yb, wb, total = take_batch(xp, data.x, data.y, data.w, self.idx, bs)
            labels = None if data.labels is None else xp.take(data.labels, self.idx, axis=0)
            batch = Batch(xb, yb, total, wb, self.dkey, labels)
            new_params, new_arrays, new_state, cost_sum, correct, _ = traced_step(
                step, template, params, arrays, batch, self.scal, lstate
            )
            # static buffers: results end in the very same tensors
            for p, q in zip(params + lstate, new_params + new_state):
                for n in p:
                    if q[n] is not p[n]:
                        p[n][...] = q[n]
            for a, b in zip(arrays, new_arrays):
                if b is not a:
                    a[...] = b
            return cost_sum, None if labels is None else correct

        try:
            replay, (self.cost, self.correct) = net.backend.capture(one)
        finally:
            # the warm-up steps changed the weights: put back the values from before
            for p, q in zip(params + lstate, saved_p):
                for n in p:
                    p[n][...] = q[n]
            for a, b in zip(arrays, saved_a):
                a[...] = b
        self.replay = replay

    def run_epoch(self, data: Any, host_perm: np.ndarray) -> dict[str, Any]:
        trainer = self.trainer
        if self.failed:
            return trainer.run_epoch(data, host_perm)
        net, be, xp = trainer.net, trainer.net.backend, trainer.net.xp
        bs = trainer.options.batch_size
        n_full, rest = divmod(data.n, bs)
        scal = trainer.one_step.scalar_rows(trainer.opt_state, n_full, trainer.lr_scale)
        key = (scal.shape[1], id(data))
        if n_full and (self.replay is None or self.key != key):
            try:
                self._capture(data, scal.shape[1])
            except Exception as exc:  # e.g. an operation CUDA graphs cannot record
                if self.required:
                    raise XbpValueError(
                        f"{arg('compile', True)}: the capture of the step failed ({exc}); "
                        f"use {arg('compile', None)} or {arg('compile', False)}"
                    ) from None
                warnings.warn(
                    f"xbp: running eagerly, the capture of the step failed: {exc}", stacklevel=2
                )
                self.failed = True
                return trainer.run_epoch(data, host_perm)
            self.key = key
        out_costs, out_corrects = [], []
        keys = trainer.dropout_keys(trainer.step, [0] * (n_full + (1 if rest else 0)))
        if n_full:
            self._adopt_static()
            state = trainer.opt_state
            scal_dev = be.asarray(scal, net.dtype)
            idx_mat = be.asarray(np.reshape(host_perm[: n_full * bs], (n_full, bs)))
            costs = xp.empty(n_full, dtype=net.dtype, device=net.device)
            corrects = xp.empty(n_full, dtype=net.dtype, device=net.device)
            for b in range(n_full):
                # the static inputs are written in place, the recorded kernels read them
                self.idx[...] = idx_mat[b, ...]
                self.scal[...] = scal_dev[b, ...]
                if self.dkey is not None:
                    self.dkey[...] = keys[b, ...]
                self.replay()
                costs[b] = self.cost
                if self.correct is not None:
                    corrects[b] = self.correct
            trainer.opt_state = tree.rebuild(state, self.arrays, n_full)
            trainer.step += n_full
            out_costs.append(costs)
            out_corrects.append(corrects)
        if rest:
            idx = be.asarray(host_perm[n_full * bs :])
            xb, yb, wb, total = take_batch(xp, data.x, data.y, data.w, idx, rest)
            labels = None if data.labels is None else xp.take(data.labels, idx, axis=0)
            dkey = None if keys is None else keys[n_full, ...]
            last = trainer.run_step(Batch(xb, yb, total, wb, dkey, labels))
            out_costs.append(xp.reshape(last.cost_sum, (1,)))
            if last.correct is not None:
                out_corrects.append(xp.reshape(last.correct, (1,)))
        return {
            "costs": xp.concat(out_costs),
            "corrects": None if data.labels is None else xp.concat(out_corrects),
        }


def compiled_epoch_runner(trainer: Any, required: bool) -> EpochRunner | bool:
    """A compiled runner for the trainer's backend, or False to run eagerly.

    ``required`` (``compile=True``) turns "not possible here" into an error
    that says why; otherwise such a run stays eager.
    """
    net = trainer.net
    runner_type = net.backend.compiler()
    reason = None
    if net.precision in LOSS_SCALED:
        reason = (
            f"precision={net.precision!r} steps skip on overflow (dynamic loss scaling), "
            "a decision made on the host per step, which compiled epochs do not do"
        )
    elif runner_type is None:
        reason = f"the {net.backend.name} backend on {net.device!s} has no compiled step"
    elif trainer.optimizer.per_step_l2 and (trainer.strategy.reduces or runner_type != "trace"):
        reason = (
            "the per-step L2 term's penalty (sklearn_sgd, sklearn_adam) is summed by eager "
            "and traced single-process epochs only"
        )
    elif trainer.strategy.reduces and runner_type != "trace":
        reason = "captured steps do not combine gradients across processes (MPI) yet"
    elif trainer.strategy.reduces and net.batch_statistics:
        reason = (
            "batch statistics over processes (BatchNorm under MPI) are summed on the "
            "host in the middle of the forward pass, which traced steps cannot do"
        )
    if reason is not None or runner_type is None:
        if required:
            # every process decides alike (it follows from the settings the handshake
            # compared): each raises, none is aborted
            raise CollectiveError(
                f"{arg('compile', True)}: {reason}; use compile=None (compile where possible) or "
                "compile=False"
            )
        return False
    if trainer.strategy.reduces:  # the exchange runs on the host between compiled halves
        kind: type[EpochRunner] = SteppedEpochRunner
    else:
        kind = {"trace": TracedEpochRunner, "capture": CapturedEpochRunner}[runner_type]
    try:
        return kind(trainer)
    except Exception as exc:  # a library too old or a driver problem: say it, run eagerly
        if required:
            raise XbpValueError(
                f"{arg('compile', True)}: the compiled step failed to build ({exc})"
            ) from None
        warnings.warn(
            f"xbp: running eagerly, the compiled step failed to build: {exc}", stacklevel=3
        )
        return False
