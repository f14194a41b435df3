# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# In which order a batch is worked through: the images a backup window deferred last run
# first, then those with a high-priority profile due (or to transfer), the input order kept
# otherwise.
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import parse_snap_name

T = TypeVar("T", bound=Mapping[str, Any])

HIGH = "high"


def plan_priority(plan: Mapping[str, Any], profiles: Mapping[str, Any], prefix: str) -> str:
    """Priority "high" when a due profile, or the profile of a snapshot to transfer, has priority high.

    `profiles` maps a profile name to an object with a `priority` attribute (policy.Profile)
    or a dict with a "priority" key.
    """

    def priority(name: str | None) -> str:
        profile = profiles.get(name) if name else None
        if profile is None:
            return "normal"
        value = profile.get("priority") if isinstance(profile, Mapping) else getattr(profile, "priority", None)
        return str(value or "normal")

    names = list(plan.get("due") or [])
    for step in plan.get("transfers") or []:
        parsed = parse_snap_name(str(step.get("to_snap", "")), prefix)
        if parsed is not None:
            names.append(parsed.profile)
    return HIGH if any(priority(name) == HIGH for name in names) else "normal"


def priority_order(items: Sequence[T], deferred: Collection[str] = ()) -> list[T]:
    """Items the last run deferred first (their `backup_image` in ``deferred``), then those
    whose `priority` is high; the input order is kept otherwise (stable).

    A deferred image waited a whole run already: it goes before a high-priority one that did
    not (within the deferred ones, high priority first).
    """
    return sorted(items, key=lambda item: (item.get("backup_image") not in deferred, item.get("priority") != HIGH))
