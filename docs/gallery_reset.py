"""Run between the gallery's examples (sphinx-gallery ``reset_modules``).

The examples run in the Sphinx process one after the other: parts one example registers
(an activation, a loss, a layer) must not reach the next example, nor the choices the
command-line reference lists. The built-in tables are taken when this module is
imported, which conf.py does before any example runs.
"""

from __future__ import annotations

import xbp

_PARTS = (xbp.nn.activations.ACTIVATIONS, xbp.nn.losses.LOSSES, xbp.nn.layers._REGISTERED)
_BUILT_IN = [dict(table) for table in _PARTS]


def forget_registered_parts(gallery_conf: object, fname: str, when: str = "before") -> None:
    """Put the activation, loss and layer tables back to the built-in ones."""
    for table, built_in in zip(_PARTS, _BUILT_IN):
        table.clear()
        table.update(built_in)
