"""Parameters and optimizer state as views of flat buffers, one buffer per parameter name.

An optimizer's rules are elementwise (or, like gradient clipping, reduce over every
element), so applying them to one flat vector per parameter name (every layer's
``W`` side by side, every ``b``) computes the same numbers as applying them layer by
layer, in a few whole-vector operations instead of a few per layer: on small
networks, where each array operation costs more in dispatch than in arithmetic,
that is most of an update's time. :class:`Flat` keeps the flat buffers and hands out
per-layer *views* of them, so the network and the optimizer state keep their
per-layer structure (saving, pickling, checkpoints, snapshots see the usual trees)
while :class:`xbp.train.step.Step` updates the buffers in place (libraries with
writable arrays only; see :meth:`xbp.train.step.Step.apply`).

Examples
--------
>>> import numpy as np, array_api_compat.numpy as xp
>>> from xbp.optim.flat import Flat
>>> params = [{"W": np.ones((2, 2)), "b": np.zeros(2)}, {"W": np.ones((2, 1)), "b": np.zeros(1)}]
>>> flat = Flat(xp, params, ())
>>> flat.buffers["W"].shape, flat.buffers["b"].shape
((6,), (3,))
>>> flat.buffers["W"][0] = 7.0  # the per-layer views see the buffer
>>> float(flat.params[0]["W"][0, 0])
7.0
"""

from __future__ import annotations

from typing import Any

from . import tree

__all__ = ["Flat"]

Params = list[dict[str, Any]]


class Flat:
    """``params`` and the parameter-shaped parts of an optimizer ``state`` copied into
    flat buffers (one per parameter name), with per-layer views of them.

    Attributes
    ----------
    buffers : dict
        ``{name: flat parameter buffer}``.
    params : list of dict
        Per-layer views of :attr:`buffers` (the network's weights while it trains).
    flat_state : tree
        ``state`` with each parameter-shaped list replaced by ``[{name: flat buffer}]``
        (what the optimizer updates).
    view_state : tree
        ``state`` with each parameter-shaped list replaced by per-layer views of those
        buffers (what the loop holds and saves).
    """

    def __init__(self, xp: Any, params: Params, state: Any) -> None:
        self.xp = xp
        self.shapes = [{k: tuple(v.shape) for k, v in p.items()} for p in params]
        self.names = sorted({k for p in params for k in p})
        self.buffers = self.pack(params)
        self.params = self.views(self.buffers)
        self.state_buffers: list[Any] = []

        def flat(node: Params) -> Params:
            bufs = self.pack(node)
            self.state_buffers.extend(bufs[k] for k in sorted(bufs))
            return [bufs]

        self.flat_state = self._map(state, flat)
        it = iter(self.state_buffers)
        self.view_state = self._map(
            state, lambda node: self.views({k: next(it) for k in sorted(self.names)})
        )

    def _is_params(self, node: Any) -> bool:
        """Whether ``node`` is shaped as the parameters (a list of per-layer dicts)."""
        return (
            isinstance(node, list)
            and len(node) == len(self.shapes)
            and all(
                isinstance(d, dict)
                and set(d) == set(s)
                and all(tuple(getattr(d[k], "shape", ())) == s[k] for k in s)
                for d, s in zip(node, self.shapes)
            )
        )

    def _map(self, node: Any, fn: Any) -> Any:
        if self._is_params(node):
            return fn(node)
        if isinstance(node, tuple):
            vals = [self._map(t, fn) for t in node]
            return type(node)(*vals) if hasattr(node, "_fields") else tuple(vals)
        if isinstance(node, list):
            return [self._map(t, fn) for t in node]
        if isinstance(node, dict):
            return {k: self._map(node[k], fn) for k in sorted(node)}
        return node

    def pack(self, node: Params) -> dict[str, Any]:
        """``{name: every layer's array of that name, flattened and joined}`` (new arrays)."""
        xp = self.xp
        return {k: xp.concat([xp.reshape(p[k], (-1,)) for p in node if k in p]) for k in self.names}

    def views(self, flat: dict[str, Any]) -> Params:
        """Per-layer views of flat arrays laid out as :meth:`pack` lays them."""
        xp = self.xp
        out: Params = []
        start = dict.fromkeys(self.names, 0)
        for shapes in self.shapes:
            layer = {}
            for k, shape in shapes.items():
                size = 1
                for d in shape:
                    size *= d
                layer[k] = xp.reshape(flat[k][start[k] : start[k] + size], shape)
                start[k] += size
            out.append(layer)
        return out

    def holds(self, params: Params, state: Any) -> bool:
        """Whether ``params`` are this object's views and ``state`` the state it last
        handed out (:meth:`advance`), so the buffers hold their current values."""
        if state is not self.last_state or len(params) != len(self.params):
            return False
        return all(p.get(k) is v for p, q in zip(params, self.params) for k, v in q.items())

    last_state: Any = None

    def advance(self, new_flat_state: Any) -> Any:
        """Copy the optimizer's new flat state into the buffers (in place) and return the
        per-layer state with its counts advanced by one update."""
        for buf, new in zip(self.state_buffers, tree.arrays(new_flat_state)):
            if new is not buf:
                buf[...] = new
        self.flat_state = tree.rebuild(new_flat_state, self.state_buffers)
        self.view_state = tree.rebuild(self.view_state, tree.arrays(self.view_state), 1)
        self.last_state = self.view_state
        return self.view_state
