# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Backup policy: profiles, what is due, the plan of an image, and expiry.

Everything here is pure: snapshot names in, decisions out. ``now`` is always
passed in and every time is naive UTC. Only our snapshots (``PREFIX;...`` names
that parse) are ever proposed for deletion; anything else is foreign.

Snapshot order comes from Ceph, not from names. Every listing passed in is one
image's snapshot names in Ceph's creation order (snapshot id ascending, oldest
first), as ``rbd ls -l`` and the in-process listing return them; "newest",
"older than the base" and "the chain moves forward" are positions in such a
list. backurne 2.x wrote local time into its names, so a name's time can be
hours off (ahead of UTC east of Greenwich, behind it west); the snapshot id only
grows. A name still gives the profile, the count and, where a *time* is needed,
the age: due-ness (the newest snapshot's age) and expiry (creation + count x
interval) read the name's time, which is backurne 2.x's contract.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    make_snap_name,
    parse_snap_name,
    validate_prefix,
    validate_profile_name,
)

BUILTIN_INTERVALS: dict[str, timedelta] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=30),
}

PRIORITIES = ("high", "normal")
PROFILE_KEYS = ("count", "interval", "max_on_live", "priority")

# The snapshots of one run are one tick apart, in creation order. With equal times
# the names could not tell which came first, and `rbd export-diff --from-snap`
# refuses (EINVAL) a base newer than its target: a retried chain would wedge.
CREATION_TICK = timedelta(microseconds=1)

_DURATION_PART_RE = re.compile(r"([0-9]+)([wdhms])")
_DURATION_RE = re.compile(r"(?:[0-9]+[wdhms])+")
_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

TransferKind = Literal["full", "incremental", "none"]


class PolicyError(ValueError):
    """Invalid policy input; the message names the profile, key or value at fault."""


def _duration_seconds(value: object) -> float | None:
    # bool is an int subclass; `interval: true` is a mistake, not one second.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    if isinstance(value, str):
        text = value.strip().lower()
        if _SECONDS_RE.fullmatch(text):
            return float(text)
        if _DURATION_RE.fullmatch(text):
            parts = _DURATION_PART_RE.findall(text)
            return float(sum(int(num) * _UNIT_SECONDS[unit] for num, unit in parts))
    return None


def parse_duration(value: str | int | float) -> timedelta:
    """A positive duration: seconds as a number, or ``90s``, ``1h30m``, ``2w``..."""
    seconds = _duration_seconds(value)
    if seconds is None:
        raise PolicyError(f"invalid duration {value!r}: expected seconds or a string like '1h30m'")
    if not seconds > 0:
        raise PolicyError(f"invalid duration {value!r}: must be positive")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise PolicyError(f"invalid duration {value!r}: too long") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Profile:
    """Take a snapshot every ``interval``; keep each one ``count`` intervals."""

    name: str
    count: int
    interval: timedelta
    max_on_live: int = 0
    priority: str = "normal"

    def __post_init__(self) -> None:
        try:
            validate_profile_name(self.name)
        except NamingError as exc:
            raise PolicyError(f"invalid profile name: {exc}") from None
        where = f"profile {self.name!r}"
        if not _is_int(self.count) or self.count < 1:
            raise PolicyError(f"{where}: key 'count' must be an integer >= 1, got {self.count!r}")
        if not isinstance(self.interval, timedelta) or self.interval <= timedelta(0):
            raise PolicyError(f"{where}: key 'interval' must be a positive duration, got {self.interval!r}")
        if not _is_int(self.max_on_live) or self.max_on_live < 0:
            raise PolicyError(f"{where}: key 'max_on_live' must be an integer >= 0, got {self.max_on_live!r}")
        if self.priority not in PRIORITIES:
            raise PolicyError(f"{where}: key 'priority' must be one of {', '.join(PRIORITIES)}, got {self.priority!r}")


def parse_profiles(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Profile]:
    """Validate the user's profiles; the result keeps the order of ``spec``."""
    if not isinstance(spec, Mapping) or not spec:
        raise PolicyError("at least one backup profile must be defined")
    profiles: dict[str, Profile] = {}
    for name, options in spec.items():
        try:
            validate_profile_name(name)
        except NamingError as exc:
            raise PolicyError(f"invalid profile name: {exc}") from None
        where = f"profile {name!r}"
        if not isinstance(options, Mapping):
            raise PolicyError(f"{where}: expected a mapping of options, got {options!r}")
        for key in options:
            if key not in PROFILE_KEYS:
                raise PolicyError(f"{where}: unknown key {key!r} (allowed: {', '.join(PROFILE_KEYS)})")
        if "count" not in options:
            raise PolicyError(f"{where}: key 'count' is required")
        if "interval" in options:
            try:
                interval = parse_duration(options["interval"])
            except PolicyError as exc:
                raise PolicyError(f"{where}: key 'interval': {exc}") from None
        elif name in BUILTIN_INTERVALS:
            interval = BUILTIN_INTERVALS[name]
        else:
            raise PolicyError(
                f"{where}: key 'interval' is required (only {', '.join(BUILTIN_INTERVALS)} have a default)"
            )
        profiles[name] = Profile(
            name=name,
            count=options["count"],
            interval=interval,
            max_on_live=options.get("max_on_live", 0),
            priority=options.get("priority", "normal"),
        )
    return profiles


def _saturating_add(moment: datetime, delta: timedelta) -> datetime:
    # A huge COUNT in a hand-made name must not crash a run: it means "never".
    try:
        return moment + delta
    except OverflowError:
        return datetime.max


def _check_now(now: object) -> None:
    if not isinstance(now, datetime) or now.tzinfo is not None:
        raise PolicyError(f"now must be a naive UTC datetime, got {now!r}")


@dataclass(frozen=True)
class Snap:
    """One of our snapshots; ``name`` is the exact name on disk, never rebuilt.

    ``order`` is its position in the Ceph-ordered listing it was read from (see the module
    docstring), None when it was parsed from a bare name. It is not part of equality: the
    same snapshot has one position on live and another on backup.
    """

    name: str
    profile: str
    count: int
    created: datetime
    order: int | None = field(default=None, compare=False)

    @classmethod
    def from_name(cls, name: str, prefix: str, order: int | None = None) -> Snap | None:
        parsed = parse_snap_name(name, prefix)
        if parsed is None:
            return None
        return cls(name, parsed.profile, parsed.count, parsed.created, order)

    @property
    def sort_key(self) -> tuple[datetime, str]:
        """The time in the name, then the name: for display and for times only.

        Never the creation order: a backurne 2.x name holds local time (see the module
        docstring); ``order`` (a listing's position) is.
        """
        return (self.created, self.name)

    def expires_at(self, profiles: Mapping[str, Profile]) -> datetime | None:
        """``created + count * interval``; None for an unconfigured profile.

        The count is the one written in the name, as backurne 2.x did: lowering a
        profile's count must not suddenly expire the snapshots already taken.
        """
        profile = profiles.get(self.profile)
        if profile is None:
            return None
        try:
            lifetime = self.count * profile.interval
        except OverflowError:
            return datetime.max
        return _saturating_add(self.created, lifetime)


def _ours(names: Iterable[str], prefix: str) -> dict[str, Snap]:
    """Our snapshots of one Ceph-ordered listing, oldest first, each numbered by its position."""
    validate_prefix(prefix)
    snaps: dict[str, Snap] = {}
    for position, name in enumerate(names):
        if name in snaps:
            continue  # a name is unique per image; a repeat adds nothing
        snap = Snap.from_name(name, prefix, order=position)
        if snap is not None:
            snaps[name] = snap
    return snaps


def _position(snap: Snap) -> int:
    # Every Snap compared here comes from _ours(), which numbers them.
    return -1 if snap.order is None else snap.order


def due_profiles(
    profiles: Mapping[str, Profile],
    backup_snaps: Iterable[Snap],
    now: datetime,
    force: bool = False,
    only: Collection[str] | None = None,
    tolerance: timedelta = timedelta(0),
) -> list[Profile]:
    """Profiles due for a snapshot: high priority first, then in spec order.

    ``backup_snaps`` come oldest first, in Ceph's creation order: the newest of a profile
    is its last one. Due: no backup snapshot of that profile, or the newest one is at
    least one interval old by the time in its name (``created <= now - interval``, as in
    backurne 2.x), or ``force``. A 2.x name in local time ahead of UTC therefore delays
    its profile by that offset once, one behind UTC makes it due early once; either way
    the next snapshot, in UTC, sets it right.
    ``tolerance`` makes a profile due that much earlier: a run scheduled every interval
    that starts a few seconds earlier than the previous one would otherwise skip a whole
    interval (an hourly cron taking a snapshot every other hour).
    """
    _check_now(now)
    if not isinstance(tolerance, timedelta) or tolerance < timedelta(0):
        raise PolicyError(f"due tolerance must be a duration >= 0, got {tolerance!r}")
    if isinstance(only, str):
        # A bare string is a Collection of characters; it can only mean one name.
        only = (only,)
    for name in only or ():
        if name not in profiles:
            raise PolicyError(f"unknown profile {name!r} requested in 'only'")
    newest: dict[str, datetime] = {}
    for snap in backup_snaps:
        newest[snap.profile] = snap.created  # the last one of its profile wins
    due = []
    for profile in profiles.values():
        if only is not None and profile.name not in only:
            continue
        last = newest.get(profile.name)
        # Compare ages: now - interval could underflow datetime.min.
        if force or last is None or now - last >= profile.interval - min(tolerance, profile.interval / 2):
            due.append(profile)
    # A stable sort keeps the spec order within each priority.
    due.sort(key=lambda profile: profile.priority != "high")
    return due


def newest_shared(live_snap_names: Iterable[str], backup_snap_names: Iterable[str], prefix: str) -> Snap | None:
    """The incremental base: the newest of our snapshots present on both sides.

    Newest by the live side's order (the returned Snap's ``order`` is its live position):
    live is where the snapshots were taken, so its snapshot ids are their creation order.
    The backup side's ids are the order of the imports, the same for every chain we send,
    but not what a snapshot's data says when a backup image was rebuilt or re-sent.
    """
    return _newest_shared(_ours(live_snap_names, prefix), backup_snap_names)


def _newest_shared(live: Mapping[str, Snap], backup_snap_names: Iterable[str]) -> Snap | None:
    """newest_shared on parsed live snapshots: the Snap returned is ``live``'s own, with its
    position in the full live listing (foreign names included) to compare with the others."""
    on_backup = set(backup_snap_names)
    shared = [snap for name, snap in live.items() if name in on_backup]
    return shared[-1] if shared else None


def _pending(
    live: Mapping[str, Snap], backup: Mapping[str, Snap], base: Snap | None, profiles: Mapping[str, Profile]
) -> list[Snap]:
    """Our live snapshots the chain may still deliver, oldest first (live order).

    Those after the base by live order, of a configured profile, missing on backup. Only
    when the backup image's newest snapshot of ours is the base (or it has none of ours):
    otherwise its head holds a state live does not have (e.g. a live snapshot removed by
    hand) and no Ceph order places a live snapshot against it. Names are not asked (2.x
    local time could make an older snapshot look newer and rewind the head); the run's
    new snapshot, sent from the base, carries every change since the base instead.
    """
    newest_backup = next(reversed(backup.values()), None)
    if newest_backup is not None and (base is None or newest_backup.name != base.name):
        return []
    return [
        snap
        for name, snap in live.items()
        if name not in backup and snap.profile in profiles and (base is None or _position(snap) > _position(base))
    ]


@dataclass
class ImagePlan:
    """One run for one image. ``transfers`` run in order, each from the previous."""

    image: str
    backup_image: str
    due: list[str]
    new_snapshots: list[str]
    base: str | None
    kind: TransferKind
    transfers: list[tuple[str | None, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "backup_image": self.backup_image,
            "due": list(self.due),
            "new_snapshots": list(self.new_snapshots),
            "base": self.base,
            "kind": self.kind,
            "transfers": [{"from_snap": source, "to_snap": target} for source, target in self.transfers],
        }


def plan_image(
    image: str,
    backup_image: str,
    live_snap_names: Iterable[str],
    backup_snap_names: Iterable[str],
    profiles: Mapping[str, Profile],
    prefix: str,
    now: datetime,
    force: bool = False,
    only: Collection[str] | None = None,
    tolerance: timedelta = timedelta(0),
) -> ImagePlan:
    """Plan one image: snapshots to create on live, transfers to the backup image.

    Both listings are in Ceph's creation order (module docstring). The base is the
    newest shared snapshot by live order. Our live snapshots missing on backup (left
    by a failed run) are sent first, so a retry converges without a new snapshot;
    they count as backed up when deciding what is due, since this very chain
    delivers them first. Only those after the base qualify, and only while the
    backup image's newest snapshot is the base (see _pending): its head holds the
    newest imported state and a diff applied to it must move forward. Pending
    snapshots of unconfigured profiles are not sent: nothing would ever expire them
    on the backup side.

    ``new_snapshots`` must be created in list order (see CREATION_TICK), after
    every existing snapshot: they are appended to the live listing.
    """
    _check_now(now)
    live = _ours(live_snap_names, prefix)
    backup = _ours(backup_snap_names, prefix)
    base = _newest_shared(live, backup)
    pending = _pending(live, backup, base, profiles)
    # Every pending snapshot is after all of ours on backup (see _pending): oldest first.
    due = due_profiles(profiles, [*backup.values(), *pending], now, force, only, tolerance)
    new_snapshots = [
        make_snap_name(prefix, profile.name, profile.count, now + index * CREATION_TICK)
        for index, profile in enumerate(due)
    ]
    transfers: list[tuple[str | None, str]] = []
    source = None if base is None else base.name
    for target in [snap.name for snap in pending] + new_snapshots:
        transfers.append((source, target))
        source = target
    kind: TransferKind
    if not transfers:
        kind = "none"
    elif transfers[0][0] is None:
        kind = "full"
    else:
        kind = "incremental"
    return ImagePlan(
        image=image,
        backup_image=backup_image,
        due=[profile.name for profile in due],
        new_snapshots=new_snapshots,
        base=None if base is None else base.name,
        kind=kind,
        transfers=transfers,
    )


def unconfigured_snaps(snap_names: Iterable[str], profiles: Mapping[str, Profile], prefix: str) -> list[str]:
    """Our snapshots of unconfigured profiles, oldest first (Ceph order): kept, worth reporting."""
    return [snap.name for snap in _ours(snap_names, prefix).values() if snap.profile not in profiles]


def live_expiry(
    live_snap_names: Iterable[str],
    backup_snap_names: Iterable[str],
    profiles: Mapping[str, Profile],
    prefix: str,
) -> list[str]:
    """Live snapshots to delete, oldest first.

    Kept: the base and everything newer (a transfer may still need them), per
    profile the newest ``max_on_live`` older ones, and unconfigured profiles.
    Without a shared snapshot nothing goes: live may hold the only copy. Older
    and newer are live positions (Ceph order), never the names' times: a 2.x
    snapshot named in local time ahead of UTC must not make the snapshot just
    sent look older than the base.
    """
    live = _ours(live_snap_names, prefix)
    base = _newest_shared(live, backup_snap_names)
    if base is None:
        return []
    older: dict[str, list[Snap]] = {}
    for snap in live.values():  # oldest first
        if _position(snap) < _position(base) and snap.profile in profiles:
            older.setdefault(snap.profile, []).append(snap)
    doomed: set[str] = set()
    for profile_name, snaps in older.items():
        keep = profiles[profile_name].max_on_live
        doomed.update(snap.name for snap in snaps[: max(0, len(snaps) - keep)])
    return [name for name in live if name in doomed]


@dataclass
class BackupExpiry:
    """Backup-side expiry of one image; every name not deleted has a kept reason."""

    delete: list[str]
    remove_image: bool
    kept_reasons: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "delete": list(self.delete),
            "remove_image": self.remove_image,
            "kept_reasons": dict(self.kept_reasons),
        }


def backup_expiry(
    backup_snap_names: Iterable[str],
    profiles: Mapping[str, Profile],
    prefix: str,
    now: datetime,
    source_exists: bool,
    live_snap_names: Iterable[str] = (),
    extra_retention_time: timedelta = timedelta(0),
    keep_min: int = 1,
) -> BackupExpiry:
    """Backup snapshots past their expiry, within the safety rules below.

    ``backup_snap_names`` and ``live_snap_names`` are in Ceph's creation order:
    "newest" is a position in the backup listing (and for the shared one, in the
    live listing); "past expiry" is the name's time + count x interval.

    Never deleted: foreign snapshots, unconfigured profiles, unexpired snapshots,
    the newest one shared with live, those after it in the backup image's order
    (a head live cannot place: kept until a newer one is shared) and, while the
    source exists, the newest ``max(keep_min, 1)``. Once the source is gone, the newest stays until its
    expiry + ``extra_retention_time`` (``keep_min`` holding until then too); then
    the image fades out and is removed when none of ours is left and no foreign
    snapshot pins it.
    """
    _check_now(now)
    if not _is_int(keep_min) or keep_min < 0:
        raise PolicyError(f"keep_min must be an integer >= 0, got {keep_min!r}")
    if not isinstance(extra_retention_time, timedelta) or extra_retention_time < timedelta(0):
        raise PolicyError(f"extra_retention_time must be a duration >= 0, got {extra_retention_time!r}")
    names = list(dict.fromkeys(backup_snap_names))
    ours = _ours(names, prefix)
    foreign = [name for name in names if name not in ours]
    newest_first = list(reversed(ours.values()))
    shared = newest_shared(live_snap_names, ours.keys(), prefix)
    after_shared: set[str] = set()
    if shared is not None:
        after_shared = {snap.name for snap in newest_first if _position(snap) > _position(ours[shared.name])}

    fade_out_at: datetime | None = None
    if source_exists:
        faded_out = False
        floor = max(keep_min, 1)
    else:
        last_expiry = newest_first[0].expires_at(profiles) if newest_first else None
        if last_expiry is not None:
            fade_out_at = _saturating_add(last_expiry, extra_retention_time)
        faded_out = not newest_first or (fade_out_at is not None and fade_out_at <= now)
        floor = 0 if faded_out else keep_min

    delete: list[str] = []
    kept_reasons: dict[str, str] = {}
    for index, snap in enumerate(newest_first):
        expires = snap.expires_at(profiles)
        if expires is None:
            reason = f"profile {snap.profile!r} is not configured: never expires"
        elif expires > now:
            reason = f"expires at {expires.isoformat()}"
        elif shared is not None and snap.name == shared.name:
            reason = "newest snapshot shared with live: base of the next incremental"
        elif snap.name in after_shared:
            reason = "newer (Ceph order) than the newest snapshot shared with live"
        elif index == 0 and source_exists:
            reason = "newest snapshot while the source image exists"
        elif index == 0 and fade_out_at is not None and not faded_out:
            reason = f"source image gone: last snapshot kept until {fade_out_at.isoformat()}"
        elif index < floor:
            reason = f"keep_min: one of the {floor} newest snapshots"
        else:
            delete.append(snap.name)
            continue
        kept_reasons[snap.name] = reason

    remove_image = not source_exists and faded_out and len(delete) == len(ours) and not foreign
    foreign_reason = f"not one of ours (not a {prefix!r} snapshot name): never touched"
    if not source_exists and faded_out:
        foreign_reason += "; it keeps the backup image from being removed"
    for name in foreign:
        kept_reasons[name] = foreign_reason
    delete.reverse()
    return BackupExpiry(delete=delete, remove_image=remove_image, kept_reasons=kept_reasons)
