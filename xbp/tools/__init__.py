"""Tools around a network: gradient checks (``gradcheck``), the explained step
(``explain``), benchmarks (``bench``)."""

from .explain import explain
from .gradcheck import gradcheck

__all__ = ["explain", "gradcheck"]
