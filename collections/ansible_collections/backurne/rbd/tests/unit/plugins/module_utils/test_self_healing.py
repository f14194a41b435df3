# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-healing (checksum.set_aside_mismatches) and the HEAD guard, on stand-in runners.

The lab tests (tests/integration/test_faults_selfheal.py) run the same code on real Ceph; these
pin the decisions: what is removed, where the walk back stops, what stays unconfirmed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import Lock, LockBusy
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError
from ansible_collections.backurne.rbd.plugins.module_utils.stream import checksum as core
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import (
    ChecksumResult,
    SetAside,
    set_aside_mismatches,
    set_aside_note,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.head_guard import reset_written_head

A, B, C, D = (f"backup;daily;7;2026-11-0{day}T00:00:00.000000" for day in range(1, 5))
LIVE = ImageSpec("rbd", None, "web")
BACKUP = ImageSpec("backups", "ns", "prod;web;None")


class Side:
    """One cluster's snapshots of one image; records removals and rollbacks."""

    def __init__(self, snapshots: list[str], differs: bool = False) -> None:
        self.snapshots = list(snapshots)
        self.removed: list[str] = []
        self.rolled_back: list[str] = []
        self.differs = differs
        self.fail_remove: set[str] = set()

    def snapshot_names(self, spec: ImageSpec) -> list[str]:
        return list(self.snapshots)

    def snap_remove(self, spec: ImageSpec) -> None:
        if spec.snap in self.fail_remove:
            raise RbdError([], 16, "(16) Device or resource busy", "local", action="rbd snap rm", subject=str(spec))
        self.snapshots.remove(spec.snap)
        self.removed.append(str(spec.snap))

    def head_differs(self, spec: ImageSpec) -> bool:
        return self.differs

    def snap_rollback(self, spec: ImageSpec, timeout: float | None = None) -> None:
        self.rolled_back.append(str(spec.snap))


@pytest.fixture
def locks(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"busy": None, "taken": 0, "released": 0}

    def acquire(runner, pool, namespace, image, ttl, now=None):
        if state["busy"]:
            return LockBusy(pool, namespace, image, state["busy"], "client.1")
        state["taken"] += 1
        return Lock(pool, namespace, image, "me", "client.2", "rbd_header.1")

    def release(runner, lock):
        state["released"] += 1

    monkeypatch.setattr(core, "try_acquire", acquire)
    monkeypatch.setattr(core, "release", release)
    return state


def comparer(bad: set[str], unreadable: frozenset[str] = frozenset()):
    seen: list[str] = []

    def compare(snapshot: str) -> ChecksumResult:
        seen.append(snapshot)
        if snapshot in unreadable:
            return ChecksumResult("rbd/web", snapshot, "h", None, False, "backup: timed out")
        if snapshot in bad:
            return ChecksumResult("rbd/web", snapshot, "h", "x", False, "checksums differ: live h, backup x")
        return ChecksumResult("rbd/web", snapshot, "h", "h", True)

    return compare, seen


def run(live: Side, backup: Side, mismatched: str, compare, remove: bool = True) -> SetAside:
    return set_aside_mismatches(
        live, backup, LIVE, BACKUP, mismatched, "backup;", compare, timedelta(hours=6), remove=remove
    )  # type: ignore[arg-type]


def test_the_mismatched_snapshot_goes_and_the_walk_stops_at_the_first_match(locks) -> None:
    live, backup = Side([A, B, C]), Side([A, B, C])
    compare, seen = comparer(bad=set())
    outcome = run(live, backup, C, compare)
    assert seen == [B]  # the newest older shared one; A is never read
    assert (outcome.removed, outcome.confirmed, outcome.listing) == ([C], B, [A, B])
    assert backup.removed == [C] and live.removed == []
    assert outcome.unconfirmed() == [] and outcome.errors == []
    assert locks["taken"] == locks["released"] == 1


def test_a_damaged_base_is_found_and_removed_too(locks) -> None:
    # C was sent onto a damaged B: both differ, A is the newest good one.
    live, backup = Side([A, B, C]), Side([A, B, "pin", C])
    compare, seen = comparer(bad={B})
    outcome = run(live, backup, C, compare)
    assert seen == [B, A]  # "pin" is not on live: not shared, not read
    assert outcome.removed == [B, C] and backup.snapshots == [A, "pin"]
    assert outcome.confirmed == A and outcome.listing == [A, "pin"]
    note = set_aside_note(BACKUP.image, ChecksumResult("rbd/web", C, "h", "x", False), outcome)
    assert note == (
        f"backup snapshot {C!r} of 'prod;web;None' differed from live (checksums h != x): removed; "
        f"older snapshot(s) {B!r} differed too: removed; "
        f"the next run re-sends from the newest confirmed shared snapshot {A!r}"
    )


def test_nothing_confirmed_left_means_a_full_next(locks) -> None:
    live, backup = Side([B, C]), Side([B, C])
    outcome = run(live, backup, C, comparer(bad={B})[0])
    assert outcome.removed == [B, C] and outcome.listing == [] and outcome.confirmed is None
    note = set_aside_note(BACKUP.image, ChecksumResult("rbd/web", C, "h", "x", False), outcome)
    assert note.endswith("no confirmed shared snapshot is left: the next run sends a full backup")


def test_an_older_snapshot_that_cannot_be_read_stops_the_walk_unconfirmed(locks) -> None:
    live, backup = Side([A, B, C]), Side([A, B, C])
    outcome = run(live, backup, C, comparer(bad=set(), unreadable=frozenset({B}))[0])
    assert outcome.removed == [C] and outcome.undecided == B and outcome.confirmed is None
    # B is neither removed nor counted as backed up; A still counts.
    assert outcome.unconfirmed() == [B]
    assert "older snapshot" in outcome.errors[0] and "timed out" in outcome.errors[0]


def test_foreign_snapshots_are_never_removed(locks) -> None:
    live, backup = Side(["manual", C]), Side(["manual", C])
    outcome = run(live, backup, "manual", comparer(bad=set())[0])
    assert backup.removed == [] and outcome.foreign == ["manual"] and outcome.removed == []
    # A differing snapshot still there never counts as backed up.
    assert outcome.unconfirmed() == ["manual"]
    note = set_aside_note(BACKUP.image, ChecksumResult("rbd/web", "manual", "h", "x", False), outcome)
    assert "not a backurne snapshot, left in place" in note


def test_a_failed_removal_is_reported_and_not_counted(locks) -> None:
    live, backup = Side([B, C]), Side([B, C])
    backup.fail_remove = {C}
    outcome = run(live, backup, C, comparer(bad=set())[0])
    assert outcome.removed == [] and outcome.listing == [B, C]
    assert outcome.unconfirmed() == [C] and "could not remove" in outcome.errors[0]


def test_a_locked_image_is_left_alone(locks) -> None:
    locks["busy"] = "backurne;other;1;2026-11-29T00:00:00"
    live, backup = Side([B, C]), Side([B, C])
    outcome = run(live, backup, C, comparer(bad=set())[0])
    assert backup.removed == [] and outcome.listing is None
    assert outcome.errors == [f"not removed: backup image {BACKUP} is locked by {locks['busy']} (client.1)"]


def test_check_mode_removes_nothing(locks) -> None:
    live, backup = Side([A, B, C]), Side([A, B, C])
    outcome = run(live, backup, C, comparer(bad={B})[0], remove=False)
    assert backup.removed == [] and outcome.removed == [B, C]
    note = set_aside_note(BACKUP.image, ChecksumResult("rbd/web", C, "h", "x", False), outcome)
    assert f"{C!r} of 'prod;web;None' differed from live (checksums h != x): would be removed" in note
    assert f"{B!r} differed too: would be removed" in note


def test_head_guard_rolls_back_only_a_differing_head() -> None:
    dest = ImageSpec("backups", None, "prod;web;None")
    clean = Side([B])
    assert reset_written_head(clean, dest, B) is None  # type: ignore[arg-type]
    assert clean.rolled_back == []
    written = Side([B], differs=True)
    note = reset_written_head(written, dest, B)  # type: ignore[arg-type]
    assert written.rolled_back == [B]
    assert note == (
        f"HEAD of backup image 'prod;web;None' had writes since snapshot {B!r}: "
        "rolled back to it before the incremental"
    )
