"""The one walker of nested state: parameters, optimizer state, step scalars.

A *tree* is nested tuples (NamedTuples included), lists and dicts whose
leaves are arrays, Python ints (host-side step counts) or numbers. Every
module that saves, copies, compiles or rebuilds such a tree goes through
these functions, so the order of the leaves is defined in one place: depth
first, dict keys sorted.

Examples
--------
>>> from xbp import tree
>>> state = ({"b": 2.0, "a": 1.0}, (3, [4.0]))
>>> tree.leaves(state)
[1.0, 2.0, 3, 4.0]
>>> tree.map(state, lambda v: v * 10)
({'a': 10.0, 'b': 20.0}, (30, [40.0]))
>>> tree.rebuild(state, [7.0, 8.0, 9.0], advance=1)
({'a': 7.0, 'b': 8.0}, (4, [9.0]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["leaves", "map", "arrays", "rebuild", "structure", "flatten", "unflatten"]


def _walk(tree: Any) -> Iterator[Any]:
    if isinstance(tree, (tuple, list)):
        for t in tree:
            yield from _walk(t)
    elif isinstance(tree, dict):
        for k in sorted(tree):
            yield from _walk(tree[k])
    else:
        yield tree


def leaves(tree: Any) -> list[Any]:
    """Every leaf, depth first, dict keys sorted."""
    return list(_walk(tree))


def map(tree: Any, fn: Callable[[Any], Any]) -> Any:  # noqa: A001 - the tree's own map
    """The same structure with ``fn`` applied to every leaf (in :func:`leaves`' order)."""
    if isinstance(tree, tuple):
        vals = [map(t, fn) for t in tree]
        return type(tree)(*vals) if hasattr(tree, "_fields") else tuple(vals)
    if isinstance(tree, list):
        return [map(t, fn) for t in tree]
    if isinstance(tree, dict):
        return {k: map(tree[k], fn) for k in sorted(tree)}
    return fn(tree)


def _is_count(leaf: Any) -> bool:
    return isinstance(leaf, int) and not isinstance(leaf, bool)


def arrays(tree: Any) -> list[Any]:
    """The array leaves (host-side counts left out): what travels through compiled code."""
    return [leaf for leaf in _walk(tree) if not _is_count(leaf)]


def rebuild(template: Any, new_arrays: list[Any], advance: int = 0) -> Any:
    """``template`` with its array leaves replaced by ``new_arrays`` (in order) and every
    count advanced by ``advance`` (an optimizer's counts count updates)."""
    it = iter(new_arrays)
    return map(template, lambda t: t + advance if _is_count(t) else next(it))


def structure(tree: Any) -> Any:
    """A hashable description: container types, counts as ``"count"``, arrays as
    ``(shape, dtype)`` (the library's dtype object). Two trees with equal structures fit
    one compiled function."""
    if isinstance(tree, tuple):
        return (type(tree).__name__, tuple(structure(s) for s in tree))
    if isinstance(tree, list):
        return ("list", tuple(structure(s) for s in tree))
    if isinstance(tree, dict):
        return ("dict", tuple((k, structure(tree[k])) for k in sorted(tree)))
    if _is_count(tree):
        return "count"
    if isinstance(tree, (float, int)):
        return "number"
    return (tuple(tree.shape), tree.dtype)  # a dtype object hashes faster than its name


def flatten(tree: Any) -> list[float]:
    """Numeric leaves as host floats (a step's scalars, one device row)."""
    return [float(v) for v in _walk(tree)]


def unflatten(template: Any, row: Any, start: int = 0) -> tuple[Any, int]:
    """``template``'s nested tuples filled from ``row[start:]``; returns the tree and
    the next unused index. ``row`` may be a device vector (compiled code) or a list."""
    if isinstance(template, (tuple, list)):
        vals = []
        for t in template:
            v, start = unflatten(t, row, start)
            vals.append(v)
        return tuple(vals), start
    return row[start], start + 1
