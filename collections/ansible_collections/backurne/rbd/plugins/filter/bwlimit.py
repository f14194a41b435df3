# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# backurne_bwlimit, read once on the controller before anything is touched: a bad value stops
# the run before the first snapshot (the modules would refuse it too, but only after the
# snapshot step). The filter's documentation lives beside this file.
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import parse_rate

_KEYS = ("transfer", "node")


def bwlimit(value: Any, name: str = "backurne_bwlimit") -> dict[str, int | None]:
    """``{"transfer": BYTES_PER_S | None, "node": BYTES_PER_S | None}`` from a rate (per transfer)
    or a mapping with ``transfer`` and/or ``node``; AnsibleFilterError naming ``name`` otherwise."""
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in _KEYS)
        if unknown:
            raise AnsibleFilterError(f"{name}: unknown key(s) {', '.join(unknown)} (known: transfer, node)")
        given = {key: value.get(key) for key in _KEYS}
    else:
        given = {"transfer": value, "node": None}
    limits: dict[str, int | None] = {}
    for key, rate in given.items():
        label = name if not isinstance(value, Mapping) else f"{name}.{key}"
        try:
            limits[key] = parse_rate(rate, label)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from None
    return limits


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"bwlimit": bwlimit}
