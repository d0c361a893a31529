"""``Network.summary()``: a network's layers, shapes and settings as a table.

It reads only public attributes of the network, so it sits beside the kernel
without knowing how the forward and backward passes work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Summary", "summarize"]


class Summary(str):
    """The table as a string; shown as the table itself (not quoted) at a prompt."""

    def __repr__(self) -> str:
        return str(self)


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def summarize(net: Any) -> Summary:
    """The table :meth:`xbp.Network.summary` returns.

    One row per layer (index and type, input and output widths, activation or
    what the layer does, dropout rate, the shapes of ``W`` and ``b`` where it
    has them and its parameter count),
    then the totals and the settings: loss, dtype, backend and device,
    matrix-product precision.
    """
    dtype = net.backend.dtype_name(net.dtype)
    header = ("layer", "in -> out", "activation", "dropout", "W", "b", "parameters")
    rows = []
    total = 0
    for i, d in enumerate(net.layers, start=1):
        shapes = d.param_shapes()
        count = sum(_count(s) for s in shapes.values())
        total += count
        dropout = float(d.dropout)
        w, b = shapes.get("W"), shapes.get("b")
        what = d.describe()
        others = [k for k in shapes if k not in ("W", "b")]
        if others:  # e.g. a normalisation's scale and shift
            what += f" ({', '.join(others)})"
        rows.append(
            (
                f"{i} {type(d).__name__}",
                f"{d.n_in} -> {d.n_out}",
                what,
                f"{dropout:g}",
                "-" if w is None else str(w),
                "-" if b is None else str(b),
                f"{count:,}",
            )
        )
    widths = [max(len(r[k]) for r in (header, *rows)) for k in range(len(header))]
    right = {1, 3, 6}  # numbers line up on the right

    def line(r: tuple[str, ...]) -> str:
        cells = [
            v.rjust(w) if k in right else v.ljust(w) for k, (v, w) in enumerate(zip(r, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    itemsize = 4 if dtype == "float32" else 8
    out = [
        f"Network: {len(net.layers)} layers, {'-'.join(str(s) for s in net.sizes)}",
        rule,
        line(header),
        rule,
        *(line(r) for r in rows),
        rule,
        f"parameters: {total:,} ({total * itemsize:,} bytes of {dtype})",
        f"loss: {net.loss.name}",
        f"dtype: {dtype}",
        f"backend: {net.backend.name} on {net.device!s}",
        f"precision: {net.precision}",
    ]
    return Summary("\n".join(out))
