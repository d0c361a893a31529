"""A counter-based random generator written in array-API integer operations.

Dropout needs a fresh mask every training step. Drawing it on the host and
moving it would cost a transfer per batch, and every library's own generator
gives different numbers for the same seed. Instead each mask element is a
hash of ``(seed, step, layer, element)``: a pure function of integers,
evaluated on the device with the standard's ``bitwise_xor``,
``bitwise_right_shift``, ``bitwise_and``, ``+``, ``*`` and ``>=``, so the same
seed gives bit-identical masks on NumPy, array-api-strict, PyTorch, JAX and
CuPy, inside compiled steps too (the key is a device array the compiled code
reads, never a Python number baked into a trace).

The hash is Chris Wellons' ``lowbias32`` integer finaliser (two
multiply-xorshift rounds, full avalanche over 32 bits), applied in a chain:
``k = h(h(h(h(seed) ^ step_lo) ^ step_hi) ^ layer)``, then per element
``h(h(element) ^ k)``. The 32-bit words are held in ``int64`` arrays and every
product is split in 16-bit halves so it stays below ``2**49``: PyTorch's
``uint32`` lacks shifts, additions and comparisons on the CPU (torch 2.13),
while ``int64`` arithmetic is exact on every backend (JAX needs
``jax_enable_x64``, which float64 training enables anyway). The formulas are
in ``docs/math.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["hash32", "dropout_key", "keep_mask", "MASK32"]

MASK32 = 0xFFFFFFFF
_M1 = 0x7FEB352D
_M2 = 0x846CA68B


def _mul32(x: Any, c: int) -> Any:
    """``x * c mod 2**32`` for int64 ``x`` in [0, 2**32) and a 32-bit constant ``c``.

    ``c = c_hi * 2**16 + c_lo``; ``x * c_lo < 2**48`` and only the low 16 bits
    of ``x * c_hi`` survive the shift, so nothing overflows int64."""
    lo = x * (c & 0xFFFF)
    hi = (x * (c >> 16)) & 0xFFFF
    return (lo + hi * 0x10000) & MASK32


def hash32(x: Any) -> Any:
    """lowbias32: a bijective 32-bit integer hash of int64 arrays holding [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 15)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


def dropout_key(seed: int, step: int, row_offset: int = 0) -> list[int]:
    """The host form of a step's key ``[seed, step, row_offset]`` (int64 on the device).

    ``row_offset`` is the first global row of the rows a process computes, so a
    batch shared between processes draws the mask of the whole batch."""
    return [int(seed) & MASK32, int(step), int(row_offset)]


def keep_mask(
    xp: Any, key: Any, layer: int, shape: tuple[int, int], rate: float, dtype: Any, device: Any
) -> Any:
    """The inverted-dropout mask of one layer's input: ``1/(1-rate)`` where kept, 0 where dropped.

    ``key`` is the device int64 array ``[seed, step, row_offset]``; element
    ``(r, c)`` of the ``(rows, cols)`` mask is kept when
    ``h(h((row_offset + r) * cols + c) ^ k) >= round(rate * 2**32)``."""
    rows, cols = shape
    step = key[1]
    k = hash32(key[0] & MASK32)
    k = hash32(k ^ (step & MASK32))
    k = hash32(k ^ ((step >> 32) & MASK32))
    k = hash32(k ^ layer)
    r = xp.arange(rows, dtype=key.dtype, device=device) + key[2]
    c = xp.arange(cols, dtype=key.dtype, device=device)
    element = (xp.reshape(r, (rows, 1)) * cols + xp.reshape(c, (1, cols))) & MASK32
    bits = hash32(hash32(element) ^ k)
    keep = bits >= int(round(rate * 2.0**32))
    return xp.astype(keep, dtype) * (1.0 / (1.0 - rate))
