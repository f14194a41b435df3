# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Holds: a backup snapshot pinned against backup-side expiry (a legal hold, "keep until the
incident is closed"), with a reason and an optional end.

A hold lives with the backup image on the backup cluster, as image-meta::

    backurne.hold.<snapshot name> = {"reason": "...", "until": "2027-01-31T00:00:00" | null,
                                     "by": "alice", "at": "2026-12-03T14:02:11"}

so it travels with the image (no side database to lose) and is read in the listing pass that
already reads each backup image's header (librbd keeps image-meta in the header omap as
``metadata_<key>``). Pure: key/value pairs in, holds and the "held snapshots are kept" rule out.
Times are naive UTC, as everywhere in the policy. A hold whose value cannot be read is kept as a
hold without end: a damaged hold must never let a snapshot go.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC, parse_isoformat
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import BackupExpiry

HOLD_KEY_PREFIX = "backurne.hold."
MAX_REASON = 500
MAX_BY = 200
UNREADABLE = "unreadable hold (kept: fix or release it)"
UNKNOWN = "holds could not be read (kept until they can)"


class HoldError(ValueError):
    """A hold asked for is not valid; the message names the culprit."""


@dataclass(frozen=True)
class Hold:
    snapshot: str
    reason: str
    until: datetime | None  # None: until released
    by: str
    at: datetime | None

    def active(self, now: datetime) -> bool:
        """Held now: no end, or an end still ahead (an expired hold counts as released)."""
        return self.until is None or self.until > now

    def value(self) -> str:
        """The image-meta value (JSON)."""
        return json.dumps(
            {
                "reason": self.reason,
                "until": self.until.isoformat() if self.until else None,
                "by": self.by,
                "at": self.at.isoformat() if self.at else None,
            },
            sort_keys=True,
        )

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "snapshot": self.snapshot,
            "reason": self.reason,
            "until": self.until.isoformat() if self.until else None,
            "by": self.by,
            "at": self.at.isoformat() if self.at else None,
        }
        if now is not None:
            out["active"] = self.active(now)
        return out


def hold_key(snapshot: str) -> str:
    return HOLD_KEY_PREFIX + snapshot


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    moment = parse_isoformat(value)
    return _naive_utc(moment) if moment.tzinfo is not None else moment


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def parse_hold(snapshot: str, value: str) -> Hold:
    """The hold stored under ``backurne.hold.<snapshot>``; an unreadable value holds without end."""
    try:
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return Hold(
            snapshot=snapshot,
            reason=str(data.get("reason") or ""),
            until=_time(data.get("until")),
            by=str(data.get("by") or ""),
            at=_time(data.get("at")),
        )
    except (ValueError, TypeError):
        return Hold(snapshot, UNREADABLE, None, "", None)


def holds_from_metadata(metadata: Mapping[str, str]) -> dict[str, Hold]:
    """The holds among an image's image-meta pairs, by snapshot name."""
    holds: dict[str, Hold] = {}
    for key, value in metadata.items():
        if key.startswith(HOLD_KEY_PREFIX) and len(key) > len(HOLD_KEY_PREFIX):
            snapshot = key[len(HOLD_KEY_PREFIX) :]
            holds[snapshot] = parse_hold(snapshot, value)
    return holds


def held_now(holds: Mapping[str, Hold] | Iterable[Hold], now: datetime) -> set[str]:
    """The snapshot names held at ``now``."""
    values = holds.values() if isinstance(holds, Mapping) else holds
    return {hold.snapshot for hold in values if hold.active(now)}


def parse_until(value: object, now: datetime) -> datetime | None:
    """A hold's end from user input: None/'' (until released), an ISO date or time (UTC), in the future."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        until = value if value.tzinfo is None else _naive_utc(value)
    elif isinstance(value, str):
        try:
            until = parse_isoformat(value.strip())
        except ValueError:
            raise HoldError(f"until {value!r} is not an ISO date or time (2027-01-31 or 2027-01-31T12:00)") from None
        if until.tzinfo is not None:
            until = _naive_utc(until)
    else:
        raise HoldError(f"until must be an ISO date or time, got {value!r}")
    if until <= now:
        raise HoldError(f"until {until.isoformat()} is not in the future (now {now.isoformat(timespec='seconds')})")
    return until


def new_hold(snapshot: str, reason: object, until: object, by: object, now: datetime) -> Hold:
    """A validated hold; HoldError names the field that is wrong."""
    if not isinstance(reason, str) or not reason.strip():
        raise HoldError(f"a hold of {snapshot!r} needs a reason")
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:
        raise HoldError(f"the reason of a hold is at most {MAX_REASON} characters, got {len(reason)}")
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_BY:
        raise HoldError(f"a hold of {snapshot!r} needs who asked for it (by), 1 to {MAX_BY} characters")
    if any(ord(c) < 32 for c in by):
        raise HoldError(f"by {by!r} contains control characters")
    return Hold(snapshot, reason, parse_until(until, now), by.strip(), now.replace(microsecond=0))


def apply_holds(expiry: BackupExpiry, holds: Mapping[str, Hold] | None, now: datetime) -> BackupExpiry:
    """Backup-side expiry with the holds applied: a held snapshot is never deleted, and an image
    with a held snapshot is never removed (its fade-out waits for the release). ``holds`` None
    (they could not be read): nothing is deleted this time."""
    if holds is None:
        unknown = dict.fromkeys(expiry.delete, UNKNOWN)
        return BackupExpiry(delete=[], remove_image=False, kept_reasons={**expiry.kept_reasons, **unknown})
    if not holds:
        return expiry
    delete, kept = keep_held(expiry.delete, holds, now)
    remove = expiry.remove_image and not kept  # a kept snapshot keeps its image
    return BackupExpiry(delete=delete, remove_image=remove, kept_reasons={**expiry.kept_reasons, **kept})


def keep_held(delete: Iterable[str], holds: Mapping[str, Hold], now: datetime) -> tuple[list[str], dict[str, str]]:
    """Backup-side expiry's hook: (what may still be deleted, kept reasons of the held ones).

    ``delete`` keeps its order (Ceph's creation order); a held snapshot leaves it with a kept
    reason naming the hold.
    """
    held = held_now(holds, now)
    still: list[str] = []
    kept: dict[str, str] = {}
    for name in delete:
        if name in held:
            hold = holds[name]
            end = f" until {hold.until.isoformat()}" if hold.until else ""
            kept[name] = f"held{end}: {hold.reason}" + (f" (by {hold.by})" if hold.by else "")
        else:
            still.append(name)
    return still, kept
