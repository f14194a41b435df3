# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.stream import checksum_job
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import ChecksumResult, SetAside
from ansible_collections.backurne.rbd.plugins.modules import checksum

S1 = "backup;daily;2;2026-11-01T00:00:00.000000"
S2 = "backup;daily;2;2026-11-02T00:00:00.000000"
UUID = "7b10d7af-b932-4c66-b2c3-3996152ec465"


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Both clusters' listings per (pool, namespace), and a record of every listing and comparison."""
    state: dict[str, Any] = {"live": {}, "backup": {}, "listed": [], "compared": []}

    def list_images(self: RbdRunner, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        side = "live" if self.is_remote else "backup"
        state["listed"].append((side, pool, namespace))
        return state[side].get((pool, namespace), {})

    def compare(live, backup, live_loc, backup_loc, snap, hasher=(), timeout=None) -> ChecksumResult:
        assert live.is_remote and not backup.is_remote
        state["compared"].append((str(live_loc), str(backup_loc), snap))
        if ImageSpec.of(backup_loc).image in state.get("tampered", ()):
            return ChecksumResult(str(live_loc), snap, "h1", "h2", False, "checksums differ: live h1, backup h2")
        return ChecksumResult(str(live_loc), snap, "h1", "h1", True, None)

    def set_aside(live, backup, live_spec, backup_spec, mismatched, prefix, compare, lock_ttl, remove=True):
        state["set_aside"].append((backup_spec.image, mismatched, prefix, remove))
        return SetAside(differing=[mismatched], removed=[mismatched], confirmed=S1, listing=[S1])

    state["set_aside"], state["recorded"] = [], []
    monkeypatch.setattr(RbdRunner, "list_images", list_images)
    monkeypatch.setattr(checksum_job, "compare_snapshot", compare)
    monkeypatch.setattr(checksum_job, "set_aside_mismatches", set_aside)
    monkeypatch.setattr(
        checksum_job, "record_set_aside", lambda where, results, when: state["recorded"].extend(results)
    )
    return state


def args(**extra: Any) -> dict[str, Any]:
    base = {"live_host": "10.0.0.5", "pool": "backups", "source_pool": "rbd", "fail_on_error": False}
    base.update(extra)
    return base


def test_each_item_is_read_from_its_own_pool_and_namespace(run_module, sides) -> None:
    vm, ct = f"{UUID};scsi0;web1", "ceph-ct;vm-104-disk-0;ct1"
    sides["live"] = {("vms", None): {"vm-100-disk-0": [S1, S2]}, ("cts", "ct"): {"vm-104-disk-0": [S1]}}
    sides["backup"] = {("backups", None): {vm: [S1, S2], ct: [S1], "plain;disk;None": [S1]}}
    sides["live"][("rbd", None)] = {"disk": [S1]}
    result = run_module(
        checksum.main,
        args(
            items=[
                {"image": "vm-100-disk-0", "backup_image": vm, "source_pool": "vms", "source_namespace": None},
                {"image": "vm-104-disk-0", "backup_image": ct, "source_pool": "cts", "source_namespace": "ct"},
                # No source of its own: the options' pool.
                {"image": "disk", "backup_image": "plain;disk;None"},
            ]
        ),
    )
    assert result["mismatched"] == [], result
    # One listing per live pool/namespace and one of the backup pool, not one per image.
    assert sorted(sides["listed"]) == [
        ("backup", "backups", None),
        ("live", "cts", "ct"),
        ("live", "rbd", None),
        ("live", "vms", None),
    ]
    assert sorted(sides["compared"]) == sorted(
        [
            (str(ImageSpec("vms", None, "vm-100-disk-0")), str(ImageSpec("backups", None, vm)), S2),
            (str(ImageSpec("cts", "ct", "vm-104-disk-0")), str(ImageSpec("backups", None, ct)), S1),
            (str(ImageSpec("rbd", None, "disk")), str(ImageSpec("backups", None, "plain;disk;None")), S1),
        ]
    )
    by_image = {item["image"]: item for item in result["images"]}
    assert (by_image["vm-104-disk-0"]["source_pool"], by_image["vm-104-disk-0"]["source_namespace"]) == ("cts", "ct")
    assert (by_image["disk"]["source_pool"], by_image["disk"]["source_namespace"]) == ("rbd", None)
    assert all(item["match"] for item in result["images"])


def test_known_snapshots_need_no_listing(run_module, sides) -> None:
    items = [{"image": "vm-1-disk-0", "backup_image": "x;scsi0;a", "snapshot": S1, "source_pool": "vms"}]
    result = run_module(checksum.main, args(items=items))
    assert sides["listed"] == []
    live, backup = ImageSpec("vms", None, "vm-1-disk-0"), ImageSpec("backups", None, "x;scsi0;a")
    assert sides["compared"] == [(str(live), str(backup), S1)]
    assert result["images"][0]["match"] is True


def test_an_image_gone_from_its_own_pool_is_skipped_not_failed(run_module, sides) -> None:
    # The same image name exists in another pool: only the item's own pool counts.
    sides["live"] = {("rbd", None): {"vm-1-disk-0": [S1]}, ("vms", None): {}}
    sides["backup"] = {("backups", None): {"x;scsi0;a": [S1]}}
    items = [{"image": "vm-1-disk-0", "backup_image": "x;scsi0;a", "source_pool": "vms"}]
    result = run_module(checksum.main, args(items=items))
    assert result["mismatched"] == []
    assert "no longer exists" in result["images"][0]["skipped"]
    assert sides["compared"] == []


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"source_pool": 5}, "source_pool must be a string"),
        ({"source_pool": "vms", "source_namespace": ["ns"]}, "source_namespace a string or null"),
        ({"source_pool": ""}, "empty pool name"),
        ({"source_pool": "vms", "source_namespace": "a/b"}, "namespace name 'a/b'"),
    ],
)
def test_a_bad_source_fails_naming_the_item_before_any_rbd_call(run_module, sides, bad, expected) -> None:
    items = [
        {"image": "ok-disk", "backup_image": "x;scsi0;a", "source_pool": "vms"},
        {"image": "vm-2-disk-0", "backup_image": "x;scsi1;a", **bad},
    ]
    result = run_module(checksum.main, args(items=items))
    assert result["failed"] is True
    assert "items[1]" in result["msg"] and "vm-2-disk-0" in result["msg"] and expected in result["msg"], result
    assert sides["listed"] == [] and sides["compared"] == []


def test_a_mismatch_names_the_image_and_its_backup(run_module, sides) -> None:
    sides["tampered"] = {"x;scsi0;a"}
    items = [
        {"image": "vm-1-disk-0", "backup_image": "x;scsi0;a", "snapshot": S1, "source_pool": "vms"},
        {"image": "vm-1-disk-1", "backup_image": "x;scsi1;a", "snapshot": S1, "source_pool": "vms"},
    ]
    result = run_module(checksum.main, args(items=items, fail_on_error=True))
    assert result["failed"] is True and result["mismatched"] == ["vm-1-disk-0"]
    assert "'vm-1-disk-0'" in result["msg"] and "'x;scsi0;a'" in result["msg"] and "checksums differ" in result["msg"]
    assert "vm-1-disk-1" not in result["msg"]


def test_a_mismatch_sets_the_snapshot_aside_and_returns_the_corrected_listing(run_module, sides) -> None:
    sides["tampered"] = {"x;scsi0;a"}
    items = [
        # As the transfer module returns them: what it sent this run.
        {"image": "vm-1-disk-0", "backup_image": "x;scsi0;a", "snapshot": S2, "snapshots": [S2], "source_pool": "vms"},
        {"image": "vm-1-disk-1", "backup_image": "x;scsi1;a", "snapshot": S2, "snapshots": [S2], "source_pool": "vms"},
    ]
    result = run_module(checksum.main, args(items=items, snap_prefix="bk"))
    assert result["changed"] is True and result["mismatched"] == ["vm-1-disk-0"]
    assert sides["set_aside"] == [("x;scsi0;a", S2, "bk;", True)]
    bad, good = result["images"]
    assert (bad["set_aside"], bad["confirmed_base"]) == ([S2], S1)
    assert bad["note"].startswith(
        f"backup snapshot {S2!r} of 'x;scsi0;a' differed from live (checksums h1 != h2): removed"
    )
    assert bad["error"].endswith(bad["note"]) and "'vm-1-disk-0'" in bad["error"]
    assert (good["set_aside"], good["note"]) == ([], None)
    assert "_sent" not in bad and "_listing" not in bad
    assert result["backup_snapshots"] == {"x;scsi0;a": [S1]}
    assert result["confirmed_snapshots"] == {"x;scsi0;a": [S1]}
    assert [r["backup_image"] for r in sides["recorded"]] == ["x;scsi0;a"]


def test_set_aside_off_or_check_mode_removes_nothing(run_module, sides) -> None:
    sides["tampered"] = {"x;scsi0;a"}
    items = [{"image": "vm-1-disk-0", "backup_image": "x;scsi0;a", "snapshot": S2, "source_pool": "vms"}]
    result = run_module(checksum.main, args(items=items, set_aside=False))
    assert sides["set_aside"] == [] and result["changed"] is False
    assert result["images"][0]["set_aside"] == [] and result["backup_snapshots"] == {}
    # Still an event for the check: a mismatch left in place.
    assert [(r["backup_image"], r["set_aside"]) for r in sides["recorded"]] == [("x;scsi0;a", [])]
    sides["recorded"].clear()
    result = run_module(checksum.main, args(items=items, _ansible_check_mode=True))
    assert sides["set_aside"] == [("x;scsi0;a", S2, "backup;", False)]
    assert result["backup_snapshots"] == {} and sides["recorded"] == []


def test_a_snapshot_that_could_not_be_compared_is_not_confirmed(run_module, sides, monkeypatch) -> None:
    def unreadable(live, backup, live_loc, backup_loc, snap, hasher=(), timeout=None) -> ChecksumResult:
        return ChecksumResult(str(live_loc), snap, "h1", None, False, "backup: rbd export failed")

    monkeypatch.setattr(checksum_job, "compare_snapshot", unreadable)
    monkeypatch.setattr(RbdRunner, "snapshot_names", lambda self, spec: [S1, S2])
    items = [{"image": "disk", "backup_image": "x;d;None", "snapshot": S2, "snapshots": [S2]}]
    result = run_module(checksum.main, args(items=items))
    assert result["mismatched"] == ["disk"] and sides["set_aside"] == [] and sides["recorded"] == []
    # Live-side expiry sees S1 as the newest backed-up snapshot, not S2.
    assert result["confirmed_snapshots"] == {"x;d;None": [S1]} and result["backup_snapshots"] == {}
