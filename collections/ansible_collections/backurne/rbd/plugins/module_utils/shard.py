# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# How the images of one run are split across several backup nodes, and in which order a batch
# is worked through.
#
# Shard of a backup image: the first 8 bytes of sha256(backup image name, UTF-8), big-endian,
# mod the number of nodes. A cryptographic hash only because it is stable everywhere (Python's
# hash() is salted per process) and spreads names that differ in one character evenly; it is
# computed once per image per run. The backup image name (IDENT;DISK;COMMENT) is the key
# because it is what the cluster-wide lock protects, and the backup side's expiry works on it
# too, so one node owns an image for its transfer, its verification and its backup-side expiry.
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ansible_collections.backurne.rbd.plugins.module_utils.naming import parse_snap_name

T = TypeVar("T", bound=Mapping[str, Any])

HIGH = "high"


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that owns backup image `name`."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(name: str, index: int, count: int) -> bool:
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
    return count == 1 or shard_of(name, count) == index


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


def priority_order(items: Sequence[T]) -> list[T]:
    """Items whose `priority` is high first; the input order is kept otherwise (stable)."""
    return sorted(items, key=lambda item: item.get("priority") != HIGH)
