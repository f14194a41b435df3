# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The jobs of the info and capacity modules, without Ansible (the lab tests run them on Ceph)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.capacity import CapacityCheck
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.inventory import (
    InventoryError,
    PoolInventory,
    describe_image,
    parse_optional_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError

NEWER = "backup;daily;7;2026-11-29T10:00:00.000000"
# Written by backurne 2.x in local time: its name says earlier, Ceph's order says it is the newest.
NEWEST_2X = "backup;daily;7;2026-11-29T09:00:00.000000"
LISTING = {"web;disk;None": [NEWER, "manual", NEWEST_2X], "db;disk;None": [], "other": ["x"]}


class Listed:
    """What PoolInventory reads from a runner: one listing, then per-image metadata."""

    def __init__(self, meta: dict[str, dict[str, str]] | None = None, fail: str = "") -> None:
        self.meta = meta or {}
        self.fail = fail
        self.meta_read: list[str] = []

    def list_images(self, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        if self.fail == "list":
            raise RbdError(["rbd", "ls"], 2, "rbd: error opening pool: (2) No such file or directory", "local")
        return {name: list(snaps) for name, snaps in LISTING.items()}

    def image_meta(self, spec: ImageSpec) -> dict[str, str]:
        self.meta_read.append(str(spec))
        if self.fail == "meta":
            raise RbdError(["rbd", "image-meta"], 2, "(2) No such file or directory", "local")
        return self.meta.get(spec.image, {})


def inventory(runner: Any, **kwargs: Any) -> PoolInventory:
    return PoolInventory(runner=runner, pool="rbd", namespace=kwargs.pop("namespace", "ns"), prefix="backup", **kwargs)


def test_describe_image_parses_ours_in_listed_order_and_keeps_foreign_apart() -> None:
    profiles = parse_optional_profiles({"daily": {"count": 7}})
    described = describe_image("web;disk;None", [NEWER, "manual", NEWEST_2X], "backup", profiles)
    assert (described["ident"], described["disk"], described["comment"]) == ("web", "disk", "None")
    assert [snap["name"] for snap in described["snapshots"]] == [NEWER, NEWEST_2X]  # never re-sorted
    assert described["snapshots"][0] == {
        "name": NEWER,
        "profile": "daily",
        "count": 7,
        "created": "2026-11-29T10:00:00",
        "expires": "2026-12-06T10:00:00",
    }
    assert described["foreign_snapshots"] == ["manual"]


def test_describe_image_without_profiles_reports_no_expiry_and_a_foreign_name() -> None:
    described = describe_image("other", ["x"], "backup", None)
    assert described["ident"] is None and described["snapshots"] == [] and described["foreign_snapshots"] == ["x"]


def test_profiles_given_but_wrong_name_the_option() -> None:
    assert parse_optional_profiles(None) is None
    with pytest.raises(InventoryError, match=r"^profiles: "):
        parse_optional_profiles({"daily": {"count": 0}})


def test_run_sorts_images_by_name_and_passes_the_listing_on() -> None:
    result = inventory(Listed()).run()
    assert result["changed"] is False
    assert [image["name"] for image in result["images"]] == ["db;disk;None", "other", "web;disk;None"]
    assert result["snapshots"] == LISTING  # every name, ours and foreign, in Ceph's order
    assert all("meta" not in image for image in result["images"])


def test_run_keeps_only_the_images_asked_for() -> None:
    result = inventory(Listed(), images=["web;disk;None", "gone"]).run()
    assert list(result["snapshots"]) == ["web;disk;None"]
    assert [image["name"] for image in result["images"]] == ["web;disk;None"]


def test_with_meta_reads_each_listed_image_and_keeps_backurne_keys_only() -> None:
    runner = Listed(meta={"web;disk;None": {"backurne.pve.vmid": "101", "other.key": "x"}})
    result = inventory(runner, images=["web;disk;None", "db;disk;None"], with_meta=True).run()
    assert runner.meta_read == ["rbd/ns/db;disk;None", "rbd/ns/web;disk;None"]
    assert {image["name"]: image["meta"] for image in result["images"]} == {
        "db;disk;None": {},
        "web;disk;None": {"backurne.pve.vmid": "101"},
    }


@pytest.mark.parametrize(
    ("fail", "namespace", "message"),
    [
        ("list", "ns", "listing pool rbd/ns: "),
        ("list", None, "listing pool rbd: "),
        ("meta", "ns", "image 'db;disk;None' in pool rbd/ns: reading its metadata: "),
    ],
)
def test_a_failed_read_names_the_pool_and_image(fail: str, namespace: str | None, message: str) -> None:
    with pytest.raises(InventoryError) as caught:
        inventory(Listed(fail=fail), namespace=namespace, with_meta=True).run()
    assert str(caught.value).startswith(message) and "No such file or directory" in str(caught.value)


class Monitor:
    """What CapacityCheck reads: the node's files, then two monitor answers (16.2's JSON)."""

    def __init__(self, file_problem: str | None = None, quota_used: int = 0, refuse: bool = False) -> None:
        self.problem = file_problem
        self.quota_used = quota_used
        self.refuse = refuse
        self.asked: list[str] = []

    def file_problem(self) -> str | None:
        return self.problem

    def mon_json(self, command: dict[str, Any], words: Any, *, timeout: float | None = None, open_session: bool = True):
        self.asked.append(command["prefix"])
        if self.refuse:
            raise RbdError(["ceph", *words], 13, "Error EACCES: access denied", "local")
        if command["prefix"] == "osd dump":
            osds = [{"osd": 0, "up": 1, "in": 1, "state": ["exists", "nearfull", "up"]}]
            return {"flags": "sortbitwise", "pools": [{"pool_name": "rbd", "flags_names": "hashpspool"}], "osds": osds}
        return {"quota_max_bytes": 1024, "current_num_bytes": self.quota_used}


def test_capacity_file_problem_fails_before_any_monitor_command() -> None:
    monitor = Monitor(file_problem="keyring /x (option keyring of the backup node) does not exist")
    report = CapacityCheck(monitor, "rbd").run()
    assert report.failure == "backup cluster: keyring /x (option keyring of the backup node) does not exist"
    assert report.result == {"problems": ["keyring /x (option keyring of the backup node) does not exist"]}
    assert monitor.asked == []


def test_capacity_unreadable_state_names_the_pool() -> None:
    report = CapacityCheck(Monitor(refuse=True), "rbd").run()
    assert report.failure is not None
    assert report.failure.startswith("backup cluster: cannot read the state of pool rbd: ")
    assert "EACCES" in report.result["problems"][0]


def test_capacity_nearfull_warns_and_the_run_goes_on() -> None:
    report = CapacityCheck(Monitor(), "rbd").run()
    assert report.failure is None
    assert report.result["problems"] == [] and report.result["state"]["nearfull_osds"] == [0]
    assert report.result["capacity_warnings"] == ["OSD(s) osd.0 of the backup cluster are nearfull"]
    assert report.warnings == ["backup cluster: OSD(s) osd.0 of the backup cluster are nearfull"]


def test_capacity_over_quota_fails_unless_the_run_only_expires() -> None:
    failing = CapacityCheck(Monitor(quota_used=4096), "rbd").run()
    assert failing.failure is not None and failing.failure.startswith("backup cluster cannot take the backups: ")
    assert "over its quota" in failing.failure and failing.result["problems"]
    expiry_only = CapacityCheck(Monitor(quota_used=4096), "rbd", writes=False).run()
    assert expiry_only.failure is None
    assert any("over its quota" in warning for warning in expiry_only.result["capacity_warnings"])
