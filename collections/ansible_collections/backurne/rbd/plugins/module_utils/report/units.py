# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Byte counts for people (tables, messages, the CLI), the same way everywhere. No import: the
# ceph, stream and report layers and the CLI all use it.
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float | None, largest: str = "TiB") -> str:
    """``count`` bytes in binary units ("1023 B", "1.0 KiB", "5.0 GiB"), "?" for an unknown count;
    nothing larger than ``largest`` (the run report's table stops at GiB)."""
    if count is None:
        return "?"
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == largest:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"  # only for a ``largest`` that is not a unit
