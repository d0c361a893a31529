"""The one training step: the only code in xbp that changes weights.

::

    step(params, opt_state, batch, scalars, state) -> (params, opt_state, state, sums, ...)

It is built from :meth:`xbp.Network.value_and_grad` (the backprop kernel), the
strategy's gradient hook and reduction (:class:`xbp.parallel.Strategy`) and the
optimizer (:mod:`xbp.optim`), and every loop drives it: the eager epoch over
any data source (:class:`xbp.data.sources.Source`, which yields each step's
:class:`~xbp.data.sources.Batch`), the compiled runners (JAX ``jit``/``scan``, the CUDA-graph
capture), data-parallel shares, fp16 loss scaling and the scikit-learn
estimators (:mod:`xbp.sklearn`, with scikit-learn's rules
:func:`xbp.optim.sklearn_sgd` / :func:`xbp.optim.sklearn_adam`). None of them
keeps an update of its own.

The step's host numbers (the learning rate of a schedule, Adam's bias
corrections, the divergence halving of the learning rate, fp16's loss scale)
enter as *data* (``scalars``): Python floats in an eager step, one device row
per step in a compiled one, so compiled code never bakes a Python float in
and a schedule never retraces.

Compiled functions are cached here, keyed by what they compute: the
network's parts themselves (layers, activation and loss objects, dtype,
precision, device; see :meth:`xbp.Network.parts`) and the optimizer's rule
(:attr:`xbp.optim.Optimizer.key`, which leaves out the learning rate: it is
data), never by names, so re-registering a part under the same name never runs
the old rule, and a new network of the same structure reuses the compiled step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..data.sources import Batch
from ..nn.network import LOSS_SCALED, Network, Params, count_correct
from ..optim import DECAYED, Optimizer, apply_updates, tree
from ..parallel.strategy import LocalStrategy, Strategy

__all__ = ["Batch", "Step", "StepOut", "all_finite"]


class StepOut(NamedTuple):
    """What a step returns: the new parameters and optimizer state, the layers' new
    state (BatchNorm's running statistics; the old one where nothing changed), the
    batch cost, its sums (``cost * n_total`` and the correct count or None), the
    updates that were added to the weights, the output ``A_L``, whether the step
    was applied (False only for an fp16 step skipped for overflow), and for an optimizer
    with a per-step L2 term (:func:`xbp.optim.sklearn_sgd`, :func:`xbp.optim.sklearn_adam`)
    the term's share of the summed batch objective, ``alpha/2 ||W||^2`` of the weights
    before the update (None for other optimizers; the batch's objective is
    ``(cost_sum + penalty_sum) / n_total``)."""

    params: Params
    opt_state: Any
    state: Params
    cost: Any
    cost_sum: Any
    correct: Any
    updates: Params
    output: Any
    applied: bool = True
    penalty_sum: Any = None


def all_finite(xp: Any, grads: Params) -> bool:
    """Whether every value of ``grads`` is finite (one host read)."""
    total = sum(xp.sum(v) for g in grads for v in g.values())
    return math.isfinite(float(total))


class Step:
    """The training step of one network, optimizer and strategy.

    Parameters
    ----------
    net : Network
    optimizer : Optimizer
    strategy : Strategy, optional
        Its ``grad_ready`` hook rides on the backward pass and ``reduce_grads``
        combines the processes' gradients between the two halves.

    Examples
    --------
    >>> import numpy as np, xbp
    >>> from xbp.train.step import Batch, Step
    >>> net = xbp.mlp([2, 3, 1], seed=0)
    >>> opt = xbp.optim.adam(0.1)
    >>> step = Step(net, opt)
    >>> state = opt.init(net.params)
    >>> x, y = net.check_inputs(np.ones((4, 2))), net.check_targets(np.zeros((4, 1)), 4)
    >>> out = step(net.params, state, Batch(x, y, 4), step.scalars(state), net.state)
    >>> out.opt_state[-1].steps
    1
    """

    def __init__(self, net: Network, optimizer: Optimizer, strategy: Strategy | None = None):
        self.net = net
        self.optimizer = optimizer
        self.strategy: Strategy = LocalStrategy() if strategy is None else strategy

    @property
    def loss_scaled(self) -> bool:
        """Whether the network's precision policy scales the loss (fp16)."""
        return self.net.precision in LOSS_SCALED

    # -- host side -----------------------------------------------------------------
    def scalars(
        self,
        opt_state: Any,
        lr_scale: float = 1.0,
        loss_scale: float | None = None,
        *,
        l2: float | None = None,
    ) -> tuple[Any, ...]:
        """The next step's host numbers: the optimizer's (with ``lr_scale`` on the
        learning rate and ``l2``, the coefficient of a per-step L2 term, see
        :meth:`xbp.optim.Optimizer.scalars`) and, for fp16, the loss scale."""
        opt = self.optimizer.scalars(opt_state, lr_scale, l2=l2)
        return (opt, () if loss_scale is None else (loss_scale,))

    def scalar_rows(
        self,
        opt_state: Any,
        n_steps: int,
        lr_scale: float = 1.0,
        l2: Sequence[float] | None = None,
    ) -> np.ndarray:
        """``(n_steps, k)`` float64: :meth:`scalars` of ``n_steps`` consecutive steps from
        ``opt_state``, flattened (:func:`xbp.optim.tree.flatten`), for compiled epochs;
        ``l2``: each step's per-step L2 coefficient (None: no such term)."""
        rows = []
        for j in range(n_steps):
            advanced = self.optimizer.advanced(opt_state, j) if j else opt_state
            c = None if l2 is None else l2[j]
            rows.append(tree.flatten(self.scalars(advanced, lr_scale, l2=c)))
        return np.array(rows, dtype=np.float64)

    def per_batch(self, scalars: Any, n_total: Any) -> Any:
        """``scalars`` for a batch of divisor ``n_total``: an optimizer's per-step L2
        scalar (``alpha``, :func:`xbp.optim.add_l2_per_step`) becomes the coefficient
        ``alpha / n_total``, scikit-learn's L2 term divided by the batch's weight sum as
        its data term is (on the device in compiled steps, so ``alpha`` stays data)."""
        if not self.optimizer.per_step_l2:
            return scalars
        opt, loss_scale = scalars
        return (((opt[0][0] / n_total,), *opt[1:]), loss_scale)

    def penalty_sum(self, params: Params, scalars: Any) -> Any:
        """``alpha/2 ||W||^2`` of the per-step L2 term (``scalars``: the optimizer's,
        before :meth:`per_batch`), over the parameters the term acts on
        (:data:`xbp.optim.DECAYED`); None without such a term."""
        if not self.optimizer.per_step_l2:
            return None
        net = self.net
        xp = net.xp
        total: Any = 0.0
        with net.backend.precision_scope(net.precision):
            for p in params:
                for k in DECAYED:
                    if k in p:
                        r = xp.reshape(p[k], (-1,))
                        total = total + r @ r  # scikit-learn's dot product
        return (0.5 * scalars[0][0]) * total

    def unpack(self, opt_state: Any, row: Any) -> tuple[Any, ...]:
        """A device row of :meth:`scalar_rows` as :meth:`scalars`' nested form."""
        return tree.unflatten(self.scalars(opt_state), row)[0]

    # -- the two halves (pure: traced and captured as they are) ---------------------
    def gradients(
        self,
        params: Params,
        batch: Batch,
        scalars: Any,
        state: Params | None = None,
        *,
        overlap: bool = True,
    ) -> tuple[Any, Params, Any, Params]:
        """Cost, gradients, output and the layers' new state on this process's rows
        (no reduction of the gradients yet; batch statistics are the global batch's).

        ``overlap`` hands each layer's gradients to the strategy's ``grad_ready``
        hook as the backward pass produces them (off inside traced code, where the
        exchange cannot run). For plain SGD the learning rate (``-lr * lr_scale``)
        is folded into the output error, so the "gradients" are already the
        updates; fp16's loss scale multiplies the output error too."""
        opt, loss_scale = scalars
        factor = opt[-1][0] if self.optimizer.scale_only else None
        if loss_scale:
            factor = loss_scale[0] if factor is None else factor * loss_scale[0]
        state = self.net.state if state is None else state
        new_state: list[Any] = [None] * len(state)
        strategy = self.strategy
        cost, grads, out = self.net.value_and_grad(
            batch.x,
            batch.y,
            params=params,
            n_total=batch.n_total,
            grad_scale=factor,
            grad_ready=strategy.grad_ready if overlap else None,
            sample_weight=batch.w,
            dropout_key=batch.key,
            state=state,
            state_out=new_state,
            reduce_stats=strategy.reduce_stats if strategy.reduces else None,
        )
        merged = [old if new is None else new for old, new in zip(state, new_state)]
        return cost, grads, out, merged

    def updates(
        self, params: Params, opt_state: Any, grads: Params, scalars: Any, n_total: Any = None
    ) -> tuple[Params, Any]:
        """The optimizer's updates from (reduced) gradients, and its new state
        (``n_total``: the batch's divisor, for :meth:`per_batch`)."""
        if n_total is not None:
            scalars = self.per_batch(scalars, n_total)
        opt, loss_scale = scalars
        if loss_scale:
            unscale = 1.0 / loss_scale[0]
            grads = [{k: g * unscale for k, g in p.items()} for p in grads]
        if self.optimizer.scale_only:  # folded into the backward pass already
            return grads, self.optimizer.advanced(opt_state)
        return self.optimizer.update(grads, opt_state, params, scalars=opt)

    def apply(
        self, params: Params, opt_state: Any, grads: Params, scalars: Any, n_total: Any = None
    ) -> tuple[Params, Any, Params]:
        """:meth:`updates` added to the weights: in place where the arrays are
        writable (NumPy, CuPy, torch, captured graphs), rebound where not (JAX)."""
        updates, opt_state = self.updates(params, opt_state, grads, scalars, n_total)
        params = apply_updates([dict(p) for p in params], updates)
        return params, opt_state, updates

    def sums(self, cost: Any, out: Any, batch: Batch) -> tuple[Any, Any]:
        """The step's contribution to the epoch: ``cost * n_total`` and the correct count."""
        correct = None
        if batch.labels is not None:
            correct = count_correct(self.net.xp, out, batch.labels, batch.w)
        return cost * batch.n_total, correct

    # -- the step ----------------------------------------------------------------------
    def __call__(
        self,
        params: Params,
        opt_state: Any,
        batch: Batch,
        scalars: Any,
        state: Params | None = None,
    ) -> StepOut:
        state = self.net.state if state is None else state
        cost, grads, out, new_state = self.gradients(params, batch, scalars, state)
        if self.strategy.reduces:
            cost, grads = self.strategy.reduce_grads(cost, grads)
        # before the update, which may write the weights in place; a skipped step counts
        # it as its cost (every step's term lines up with its cost in the epoch's sums)
        penalty = self.penalty_sum(params, scalars[0])
        if scalars[1] and not all_finite(self.net.xp, grads):
            # fp16 overflow: nothing changes (the one host read per step of loss scaling)
            zero = [{k: self.net.xp.zeros_like(g) for k, g in p.items()} for p in grads]
            cost_sum, correct = self.sums(cost, out, batch)
            return StepOut(
                params, opt_state, state, cost, cost_sum, correct, zero, out, False, penalty
            )
        params, opt_state, updates = self.apply(params, opt_state, grads, scalars, batch.n_total)
        cost_sum, correct = self.sums(cost, out, batch)
        return StepOut(
            params, opt_state, new_state, cost, cost_sum, correct, updates, out, True, penalty
        )

    # -- compiled steps, cached by what they compute ---------------------------------
    def key(self, opt_state: Any) -> tuple[Any, ...]:
        """What a compiled form of this step computes: the network's parts, the
        optimizer's rule and the optimizer state's structure."""
        return (self.net.parts(), self.optimizer.key, tree.structure(opt_state))

    _CACHE: OrderedDict[Any, Any] = OrderedDict()
    _CACHE_SIZE = 16

    def compiled(self, opt_state: Any, what: Any, build: Callable[[], Any]) -> Any:
        """The compiled function ``what`` (a runner's own key: its kind, batch size,
        ...) of this step, built by ``build`` on first use and reused by every later
        step with the same parts (a new network of the same structure, a later fit)."""
        cache = Step._CACHE
        key = (self.key(opt_state), what)
        fn = cache.get(key)
        if fn is None:
            fn = cache[key] = build()
            while len(cache) > Step._CACHE_SIZE:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return fn
