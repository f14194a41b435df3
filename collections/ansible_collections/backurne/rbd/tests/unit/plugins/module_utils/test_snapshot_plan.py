# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The snapshot step's core without Ansible: the one "create the plan's snapshots in order, stop
# at the first failure" loop (snapshot and proxmox_snapshot), the plain SnapshotJob, and the
# Proxmox backup-image metadata.
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure, list_pool
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.policy.snapshot_plan import (
    PlanSettings,
    SnapshotJob,
    create_plan_snapshots,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.backup_images_job import guest_meta

S1, S2, S3 = (f"backup;daily;7;2026-11-2{day}T00:00:00.000000" for day in (7, 8, 9))


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """snap_create records the snapshots it makes and refuses S3 (as a full pool would)."""
    created: list[str] = []

    def snap_create(self: RbdRunner, spec: ImageSpec) -> None:
        if spec.snap == S3:
            raise RbdError(
                ["rbd", "snap", "create"], 122, "rbd: failed to create snapshot: (122) Disk quota exceeded", "local"
            )
        created.append(f"{spec.pool}/{spec.image}@{spec.snap}")

    monkeypatch.setattr(RbdRunner, "snap_create", snap_create)
    return created


def runner() -> RbdRunner:
    return RbdRunner(CephAccess("ceph", "admin", None, None, "the live cluster"))


def test_create_plan_snapshots_in_order_stops_at_first_failure(made: list[str]) -> None:
    listing = {"web1": ["x;manual"]}
    plan = {
        "image": "web1",
        "new_snapshots": [S1, S3, S2],
        "transfers": [{"from_snap": None, "to_snap": S1}, {"from_snap": S1, "to_snap": S3}],
        "ok": True,
    }
    created: list[str] = []
    ok = create_plan_snapshots(runner(), plan, ImageSpec("rbd", None, "web1"), listing, "image 'web1'", created)
    assert not ok
    assert made == [f"rbd/web1@{S1}"]  # S2 never tried after S3 failed
    assert listing["web1"] == ["x;manual", S1] and created == [S1]
    assert plan["ok"] is False and plan["error"].startswith(f"image 'web1': snapshot {S3}: ")
    assert "Disk quota exceeded" in plan["error"]
    assert plan["transfers"] == [{"from_snap": None, "to_snap": S1}]  # only snapshots that exist


def test_snapshot_job_plans_creates_and_fails_the_image(made: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RbdRunner, "list_images", lambda self, pool, ns=None: {"web1": [], "db1": [], "tmp1": []})
    warnings: list[str] = []
    params: dict[str, Any] = {
        "live_cluster": "prod1",
        "pool": "rbd",
        "namespace": None,
        "include": [],
        "exclude": ["tmp*"],
        "only_images": ["nomatch*"],
        "backup_snapshots": {},
        "workers": 2,
        "fail_on_error": False,
    }
    settings = PlanSettings("backup", datetime(2026, 11, 30), timedelta(0))
    job = SnapshotJob(params, runner(), settings, parse_profiles({"daily": {"count": 7}}), False, True, warnings.append)
    result = job()
    # only_images matches nothing: nothing selected, nothing made, and the operator is warned.
    assert result["images"] == [] and made == [] and result["changed"] is False
    assert result["unmatched_limits"] == ["nomatch*"] and "match no image" in warnings[0]

    params["only_images"] = []
    result = SnapshotJob(params, runner(), settings, parse_profiles({"daily": {"count": 7}}), False, True, print)()
    assert [plan["image"] for plan in result["images"]] == ["db1", "web1"]
    assert sorted(made) == sorted(
        f"rbd/{image}@{plan['new_snapshots'][0]}" for image, plan in zip_strict(("db1", "web1"), result["images"])
    )
    assert result["diff"]["after"]["web1"] == result["images"][1]["new_snapshots"]
    assert result["failed_images"] == []


def test_snapshot_job_fails_with_the_result_when_fail_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: RbdRunner, spec: ImageSpec) -> None:
        raise RbdError(["rbd"], 1, "rbd: permission denied", "local")

    monkeypatch.setattr(RbdRunner, "list_images", lambda self, pool, ns=None: {"web1": []})
    monkeypatch.setattr(RbdRunner, "snap_create", refuse)
    params = {"live_cluster": "prod1", "pool": "rbd", "namespace": "ns", "include": [], "exclude": []}
    params.update(only_images=[], backup_snapshots={}, workers=1, fail_on_error=True)
    settings = PlanSettings("backup", datetime(2026, 11, 30), timedelta(0))
    with pytest.raises(ModuleFailure) as failure:
        SnapshotJob(params, runner(), settings, parse_profiles({"daily": {"count": 7}}), False, False, print)()
    assert failure.value.msg.startswith("image 'web1' in live cluster prod1 pool rbd/ns: snapshot backup;daily;7;")
    assert failure.value.result["failed_images"][0]["image"] == "web1"
    assert failure.value.result["changed"] is True  # a snapshot was attempted: the task reports it


def test_list_pool_failure_names_owner_and_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: RbdRunner, pool: str, ns: str | None = None) -> dict[str, list[str]]:
        raise RbdError(["rbd", "ls"], 2, "rbd: error opening pool 'nope': (2) No such file or directory", "local")

    monkeypatch.setattr(RbdRunner, "list_images", broken)
    with pytest.raises(ModuleFailure) as failure:
        list_pool(runner(), "nope", "ns1", "live cluster prod1")
    assert failure.value.msg.startswith("live cluster prod1 pool nope/ns1: cannot list images: ")


def test_guest_meta_saves_config_and_identity() -> None:
    disk = {
        "config": {"name": "web1"},
        "pending": {},
        "disk": "scsi0",
        "guest": {"vmid": 100, "name": "web1", "type": "qemu"},
    }
    meta = guest_meta(disk, "pve-a")
    assert json.loads(meta["backurne.pve.config"]) == {"name": "web1"}
    assert meta["backurne.pve.vmid"] == "100" and meta["backurne.pve.disk"] == "scsi0"
    assert meta["backurne.pve.cluster"] == "pve-a"
