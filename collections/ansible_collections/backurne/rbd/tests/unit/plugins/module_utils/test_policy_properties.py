# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Safety properties of the policy over random snapshot sets (ours and foreign).

A world's snapshots are generated in creation order (Ceph's order: both listings keep it) with
random times in their names, as backurne 2.x's local-time names and clock skew make them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.backurne.rbd.plugins.module_utils.policy import naming
from ansible_collections.backurne.rbd.plugins.module_utils.policy import retention as policy
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import Profile, Snap

PREFIX = "backup"
EPOCH = datetime(2026, 1, 1)
PROFILE_NAMES = ("hourly", "daily", "weekly", "monthly", "every6h")
# Snapshots of a profile that is not configured (removed from the config since).
UNCONFIGURED = "yearly"
INTERVALS = (timedelta(hours=1), timedelta(hours=6), timedelta(days=1), timedelta(days=7), timedelta(days=30))
# Lookalikes that must never be taken for ours.
FOREIGN = (
    "manual-before-upgrade",
    "backup",
    "backup;",
    "Backup;daily;30;2026-01-01T00:00:00.000000",
    "backupx;daily;30;2026-01-01T00:00:00.000000",
    "backup2;daily;3;2025-12-01T00:00:00",
    "other;daily;30;2025-01-01T00:00:00.000000",
    "backup;daily;0;2025-01-01T00:00:00.000000",
    "backup;daily;030;2025-01-01T00:00:00.000000",
    "backup;daily;30;2025-01-01",
    "backup;daily;30;2025-01-01T00:00:00.000000;x",
    "backup;daily;30;2025-01-01T00:00:00+00:00",
    " backup;daily;30;2025-01-01T00:00:00.000000",
)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class World:
    profiles: dict[str, Profile]
    live: list[str]
    backup: list[str]
    now: datetime
    created: list[str]  # every name, in creation order (both listings are subsequences)


profile_strategy = st.builds(
    lambda name, count, interval, max_on_live, high: Profile(
        name, count, interval, max_on_live, "high" if high else "normal"
    ),
    st.sampled_from(PROFILE_NAMES),
    st.integers(1, 40),
    st.sampled_from(INTERVALS),
    st.integers(0, 3),
    st.booleans(),
)


foreign_strategy = st.one_of(
    st.sampled_from(FOREIGN),
    st.text(min_size=1, max_size=30).filter(lambda text: not text.startswith(f"{PREFIX};")),
)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    chosen = draw(st.lists(profile_strategy, min_size=1, max_size=5, unique_by=lambda p: p.name))
    profiles = {profile.name: profile for profile in chosen}
    now = EPOCH + timedelta(hours=draw(st.integers(0, 24 * 365)))
    # Sometimes backups stopped long ago and nearly everything is past expiry.
    stale = timedelta(days=draw(st.sampled_from((0, 0, 0, 60, 400))))
    names: list[str] = []  # in creation order; the times in the names need not follow it
    for _index in range(draw(st.integers(0, 16))):
        profile = draw(st.sampled_from((*PROFILE_NAMES, UNCONFIGURED)))
        count = draw(st.integers(1, 12))
        if profile in profiles and draw(st.booleans()):
            # Around its expiry, where off-by-one mistakes show.
            lifetime = count * profiles[profile].interval
            created = now - lifetime + timedelta(hours=draw(st.integers(-2, 2)))
        else:
            # Whole hours make equal times (ties) likely; a few come from the
            # future, standing for clock skew.
            created = now - timedelta(hours=draw(st.integers(-3, 24 * 120)))
        names.append(naming.make_snap_name(PREFIX, profile, count, created - stale))
    if draw(st.booleans()):
        # Foreign snapshots anywhere among ours: positions count every name listed.
        for foreign in draw(st.lists(foreign_strategy, max_size=5)):
            names.insert(draw(st.integers(0, len(names))), foreign)
    live: list[str] = []
    backup: list[str] = []
    for name in dict.fromkeys(names):
        # Where each snapshot lives: live only, backup only, or both.
        side = draw(st.sampled_from(("live", "backup", "both", "both")))
        if side != "backup":
            live.append(name)
        if side != "live":
            backup.append(name)
    return World(profiles, live, backup, now, list(dict.fromkeys(names)))


def ours(names: list[str]) -> dict[str, Snap]:
    """Ours, in listing (Ceph) order."""
    snaps = {name: Snap.from_name(name, PREFIX) for name in names}
    return {name: snap for name, snap in snaps.items() if snap is not None}


def positions(names: list[str]) -> dict[str, int]:
    return {name: index for index, name in enumerate(names)}


def is_ours(name: str) -> bool:
    return name.startswith(f"{PREFIX};") and Snap.from_name(name, PREFIX) is not None


@SETTINGS
@given(worlds())
def test_live_expiry_is_safe(world: World) -> None:
    doomed = policy.live_expiry(world.live, world.backup, world.profiles, PREFIX)
    assert len(doomed) == len(set(doomed))
    assert set(doomed) <= set(world.live)
    assert all(is_ours(name) for name in doomed)
    base = policy.newest_shared(world.live, world.backup, PREFIX)
    if base is None:
        assert doomed == []
        return
    assert base.name not in doomed
    live = ours(world.live)
    at = positions(world.live)
    # Never a snapshot newer (by Ceph order) than the base, whatever its name says.
    assert all(at[name] < at[base.name] for name in doomed)
    assert doomed == sorted(doomed, key=at.__getitem__)
    for name in doomed:
        assert live[name].profile in world.profiles
    for profile in world.profiles.values():
        older = [s for s in live.values() if s.profile == profile.name and at[s.name] < at[base.name]]
        kept = [s.name for s in older if s.name not in doomed]
        newest_older = older[max(0, len(older) - profile.max_on_live) :] if profile.max_on_live else []
        assert sorted(kept) == sorted(s.name for s in newest_older)


@SETTINGS
@given(
    worlds(),
    st.booleans(),
    st.integers(0, 4),
    st.sampled_from((timedelta(0), timedelta(days=1), timedelta(days=30))),
    st.booleans(),
)
def test_backup_expiry_is_safe(
    world: World, source_exists: bool, keep_min: int, extra: timedelta, with_live: bool
) -> None:
    live_names = world.live if with_live else []
    result = policy.backup_expiry(
        world.backup,
        world.profiles,
        PREFIX,
        world.now,
        source_exists=source_exists,
        live_snap_names=live_names,
        extra_retention_time=extra,
        keep_min=keep_min,
    )
    deleted = set(result.delete)
    assert len(result.delete) == len(deleted)
    assert deleted <= set(world.backup)
    assert all(is_ours(name) for name in result.delete)
    # Every name is accounted for: deleted, or kept with a reason.
    assert deleted.isdisjoint(result.kept_reasons)
    assert deleted | set(result.kept_reasons) == set(world.backup)

    backup = ours(world.backup)
    for name in result.delete:
        expires = backup[name].expires_at(world.profiles)
        assert expires is not None
        assert expires <= world.now

    shared = policy.newest_shared(live_names, world.backup, PREFIX)
    newest_first = list(reversed(backup.values()))
    after_shared: set[str] = set()
    if shared is not None:
        assert shared.name not in deleted
        # Nothing newer than the base by the backup image's Ceph order goes either.
        after_shared = {s.name for s in newest_first[: [s.name for s in newest_first].index(shared.name)]}
        assert deleted.isdisjoint(after_shared)

    floor = max(keep_min, 1) if source_exists else 0
    for index, snap in enumerate(newest_first):
        # Nothing is kept without cause: what is expired and unprotected goes.
        expires = snap.expires_at(world.profiles)
        if snap.name not in deleted and expires is not None and expires <= world.now:
            if (shared is not None and snap.name == shared.name) or snap.name in after_shared or index < floor:
                continue
            # Source gone: only the fade-out keeps an expired one.
            assert not source_exists
            last_expiry = newest_first[0].expires_at(world.profiles)
            assert last_expiry is None or last_expiry + extra > world.now
            assert index == 0 or index < keep_min
    if source_exists:
        assert result.remove_image is False
        if newest_first:
            assert newest_first[0].name not in deleted
        kept = len(backup) - len(deleted)
        assert kept >= min(max(keep_min, 1), len(backup))
    elif newest_first and newest_first[0].name in deleted:
        newest = newest_first[0]
        expires = newest.expires_at(world.profiles)
        assert expires is not None
        assert expires + extra <= world.now

    if result.remove_image:
        assert not source_exists
        assert deleted == set(backup)
        assert set(world.backup) == set(backup)


@SETTINGS
@given(worlds(), st.booleans())
def test_plan_chain_is_consistent(world: World, force: bool) -> None:
    # A run happens after every snapshot it finds (clock skew aside).
    times = [snap.created for snap in (ours(world.live) | ours(world.backup)).values()]
    now = max([world.now, *(created + timedelta(seconds=1) for created in times)])
    plan = policy.plan_image("img", "c;img;None", world.live, world.backup, world.profiles, PREFIX, now, force)
    base = policy.newest_shared(world.live, world.backup, PREFIX)
    assert plan.base == (None if base is None else base.name)
    source = plan.base
    for from_snap, to_snap in plan.transfers:
        assert from_snap == source
        assert to_snap not in world.backup
        source = to_snap
    targets = [Snap.from_name(to_snap, PREFIX) for _source, to_snap in plan.transfers]
    assert all(snap is not None and snap.profile in world.profiles for snap in targets)
    # Each diff moves forward in creation (Ceph) order, past everything of ours on backup;
    # the new snapshots are created after every existing one.
    created_order = positions([*world.created, *plan.new_snapshots])
    keys = [created_order[to_snap] for _source, to_snap in plan.transfers]
    assert keys == sorted(set(keys))
    backup_keys = [created_order[name] for name in ours(world.backup)]
    assert not backup_keys or all(key > max(backup_keys) for key in keys)
    # Pending snapshots are sent only while the backup image's newest is the base.
    newest_backup = next(reversed(ours(world.backup)), None)
    if newest_backup is not None and newest_backup != plan.base:
        assert [to_snap for _source, to_snap in plan.transfers] == plan.new_snapshots
    assert set(plan.new_snapshots).isdisjoint(world.live)
    if plan.new_snapshots:
        assert [target for _source, target in plan.transfers][-len(plan.new_snapshots) :] == plan.new_snapshots
    assert len(plan.new_snapshots) == len(plan.due)
    if force:
        assert plan.due == [p.name for p in sorted(world.profiles.values(), key=lambda p: p.priority != "high")]
    if not plan.transfers:
        assert plan.kind == "none"
    else:
        assert plan.kind == ("full" if plan.transfers[0][0] is None else "incremental")
