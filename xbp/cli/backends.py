"""``xbp backends``: which array libraries and devices are usable here."""

from __future__ import annotations

import argparse


# -- the other commands -------------------------------------------------------------------
def cmd_backends(args: argparse.Namespace) -> int:
    from ..backends.select import available_backends

    rows = [("backend", "version", "installed", "usable", "devices", "notes")]
    for info in available_backends():
        rows.append(
            (
                info.name,
                info.version or "-",
                "yes" if info.installed else "no",
                "yes" if info.usable else "no",
                ", ".join(info.devices) or "-",
                info.reason or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5])
    return 0
