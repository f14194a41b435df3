# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import History
from ansible_collections.backurne.rbd.plugins.modules import check

D1 = "backup;daily;3;2026-11-28T00:00:00.000000"
D2 = "backup;daily;3;2026-11-29T00:00:00.000000"
NOW = "2026-11-29T12:00:00"


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, Any]:
    """Fake live (runner with ssh) and backup (local runner) pools; a fresh history database."""
    monkeypatch.setenv("BACKURNE_STATE_DIR", str(tmp_path / "state"))
    state: dict[str, Any] = {
        "live": {},
        "backup": {},
        "created": {},
        "tz": "+0000",
        "fail": {},
        "listed": [],
        "info": [],
    }

    def side(runner: RbdRunner) -> str:
        return "live" if runner.is_remote else "backup"

    def list_images(self: RbdRunner, pool_name: str, namespace: str | None = None) -> dict[str, list[str]]:
        name = side(self)
        state["listed"].append(name)
        if name in state["fail"]:
            raise state["fail"][name]
        return {image: list(snaps) for image, snaps in state[name].items()}

    def image_info(self: RbdRunner, spec: Any) -> dict[str, Any]:
        assert side(self) == "live"
        state["info"].append(spec.image)
        if "info" in state["fail"]:
            raise state["fail"]["info"]
        return {"name": spec.image, "create_timestamp": state["created"].get(spec.image, "garbage")}

    def run_pipeline(self: RbdRunner, pipeline_words: Any, **kwargs: Any) -> str:
        assert pipeline_words == [["date", "+%z"]]
        return state["tz"] + "\n"

    monkeypatch.setattr(RbdRunner, "list_images", list_images)
    monkeypatch.setattr(RbdRunner, "image_info", image_info)
    monkeypatch.setattr(RbdRunner, "run_pipeline", run_pipeline)
    return state


def args(**extra: Any) -> dict[str, Any]:
    base = {
        "live_host": "10.0.0.1",
        "ssh_control_master": False,
        "live_cluster": "prod",
        "profiles": {"daily": {"count": 3}},
        "now": NOW,
    }
    base.update(extra)
    return base


def test_healthy_is_ok_without_rbd_info(run_module, clusters) -> None:
    clusters["live"] = {"web": [D2], "db": [D1, D2]}
    clusters["backup"] = {"prod;web;None": [D1, D2], "prod;db;None": [D2]}
    result = run_module(check.main, args())
    assert result["status"] == 0 and result["changed"] is False
    assert result["line"] == "BACKURNE OK - 2 images checked"
    assert result["summary"] == "2 images checked" and result["checked"] == 2
    assert result["findings"] == []
    assert clusters["info"] == []
    assert sorted(clusters["listed"]) == ["backup", "live"]


def test_young_image_is_exempt_old_one_critical(run_module, clusters) -> None:
    clusters["live"] = {"young": [], "old": [], "web": [D2]}
    clusters["backup"] = {"prod;web;None": [D2]}
    clusters["created"] = {"young": "Sun Nov 29 11:00:00 2026", "old": "Wed Nov 25 11:00:00 2026"}
    result = run_module(check.main, args())
    assert result["status"] == 2
    assert [(f["image"], f["code"]) for f in result["findings"]] == [("old", "no-backup")]
    assert result["findings"][0]["cluster"] == "prod"
    assert result["line"].startswith("BACKURNE CRITICAL - 1 critical, 0 warning of 3 images: prod/old no backup")
    assert sorted(clusters["info"]) == ["old", "young"]


def test_live_local_time_is_converted_to_utc(run_module, clusters) -> None:
    # 08:00 local: at UTC 28 h old (inside the 30 h window); at +0300 it is 05:00 UTC, 31 h old.
    clusters["live"] = {"young": []}
    clusters["created"] = {"young": "Sat Nov 28 08:00:00 2026"}
    assert run_module(check.main, args())["status"] == 0
    clusters["tz"] = "+0300"
    assert run_module(check.main, args())["status"] == 2
    clusters["tz"] = "-0200"
    assert run_module(check.main, args())["status"] == 0


def test_unparsable_creation_time_counts_as_old_without_history(run_module, clusters) -> None:
    clusters["live"] = {"mystery": []}
    result = run_module(check.main, args(history=False))
    assert [f["code"] for f in result["findings"]] == ["no-backup"]


def test_unknown_creation_time_falls_back_to_first_seen(run_module, clusters) -> None:
    clusters["live"] = {"mystery": []}
    # Check mode reads the history but does not write it: never seen, so old.
    assert run_module(check.main, args(_ansible_check_mode=True))["status"] == 2
    assert run_module(check.main, args())["status"] == 0  # first seen now
    assert run_module(check.main, args(now="2026-11-30T12:00:00"))["status"] == 0  # 24 h < 30 h
    result = run_module(check.main, args(now="2026-12-01T12:00:00"))
    assert result["status"] == 2
    assert result["findings"][0]["message"] == "no backup (first seen 2d ago)"


def test_image_gone_between_listing_and_info_counts_as_old(run_module, clusters) -> None:
    clusters["live"] = {"gone": []}
    clusters["fail"]["info"] = RbdError(["rbd", "info"], 2, "(2) No such file or directory", "node x")
    assert run_module(check.main, args(history=False))["status"] == 2


def test_include_exclude_and_warning(run_module, clusters) -> None:
    old = "backup;daily;3;2026-11-20T00:00:00.000000"
    clusters["live"] = {"web": [D2], "tmp-1": [], "skip": []}
    clusters["backup"] = {"prod;web;None": [old, D2]}
    result = run_module(check.main, args(include=["web", "tmp-*"], exclude=["tmp-*"]))
    assert result["checked"] == 1
    assert result["status"] == 1
    assert [(f["image"], f["severity"], f["code"]) for f in result["findings"]] == [("web", "warning", "not-expired")]
    assert result["line"].startswith("BACKURNE WARNING - 0 critical, 1 warning of 1 image: prod/web ")
    assert run_module(check.main, args(include=["web"], expiry_grace="10d"))["status"] == 0


def test_grace_factor_option(run_module, clusters) -> None:
    clusters["live"] = {"web": [D1]}
    clusters["backup"] = {"prod;web;None": [D1]}  # 36 h old
    result = run_module(check.main, args())
    assert [f["code"] for f in result["findings"]] == ["too-old"]
    assert "1d12h old (limit 1d6h)" in result["line"]
    assert run_module(check.main, args(grace_factor=1.5))["status"] == 0


def test_no_shared_snapshot(run_module, clusters) -> None:
    clusters["live"] = {"web": [D2]}
    clusters["backup"] = {"prod;web;None": [D1]}
    result = run_module(check.main, args(now="2026-11-28T12:00:00"))
    assert [f["code"] for f in result["findings"]] == ["no-shared-snapshot"]


def test_unreachable_live_node_is_unknown(run_module, clusters) -> None:
    clusters["fail"]["live"] = RbdError(["ssh"], 255, "", "node 10.0.0.1", cause="ssh: connection refused")
    result = run_module(check.main, args())
    assert result.get("failed") is not True
    assert result["status"] == 3 and result["checked"] == 0
    assert result["line"].startswith("BACKURNE UNKNOWN - prod: cannot list the live images:")
    assert "connection refused" in result["line"]


def test_unreachable_backup_cluster_is_unknown(run_module, clusters) -> None:
    clusters["fail"]["backup"] = RbdError(["rbd", "ls"], 1, "timed out", "local")
    result = run_module(check.main, args())
    assert result["status"] == 3 and "cannot list the backup images" in result["line"]


def test_ssh_failure_during_info_is_unknown(run_module, clusters) -> None:
    clusters["live"] = {"new": []}
    clusters["fail"]["info"] = RbdError(["ssh"], 255, "", "node x", cause="ssh: broken pipe")
    assert run_module(check.main, args())["status"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"profiles": {"daily": {}}}, "count"),
        ({"grace_factor": 0.5}, "grace_factor"),
        ({"expiry_grace": "soon"}, "invalid duration"),
        ({"now": "yesterday"}, "check:"),
        ({"live_cluster": "a;b"}, "live_cluster"),
        ({"keep_min": -1}, "keep_min"),
    ],
)
def test_bad_input_fails(run_module, clusters, extra: dict[str, Any], message: str) -> None:
    result = run_module(check.main, args(**extra))
    assert result["failed"] is True
    assert message in result["msg"]
    assert clusters["listed"] == []


def test_failed_transfer_recorded_between_runs_is_critical(run_module, clusters, tmp_path: Any) -> None:
    clusters["live"] = {"web": [D2], "db": [D2]}
    clusters["backup"] = {"prod;web;None": [D2], "prod;db;None": [D2]}
    assert run_module(check.main, args())["status"] == 0
    with History(str(tmp_path / "state")) as history:
        history.record_transfer("prod;web;None", "web", True, datetime(2026, 11, 29, 10))
        history.record_transfer("prod;web;None", "web", False, datetime(2026, 11, 29, 11), "import: (28) No space")
        history.record_transfer("prod;db;None", "db", False, datetime(2026, 11, 29, 9), "ssh: refused")
        history.record_transfer("prod;db;None", "db", True, datetime(2026, 11, 29, 10))
    result = run_module(check.main, args())
    assert result["status"] == 2
    assert [(f["image"], f["code"]) for f in result["findings"]] == [("web", "transfer-failed")]
    assert result["findings"][0]["message"] == "last transfer failed 1h ago: import: (28) No space"
    with History(str(tmp_path / "state")) as history:
        history.record_transfer("prod;web;None", "web", True, datetime(2026, 11, 29, 11, 30))
    assert run_module(check.main, args())["status"] == 0


def test_faded_out_backup_images(run_module, clusters) -> None:
    # Sources gone: "old" expired 2026-11-25 + 3 d daily count -> kept until 11-28 (+1 d grace).
    old = "backup;daily;3;2026-11-22T00:00:00.000000"
    clusters["live"] = {"web": [D2]}
    clusters["backup"] = {
        "prod;web;None": [D2],
        "prod;recent;None": [D2],  # expires 12-02: fine
        "prod;old;None": [old],
        "prod;empty;None": [],
        "other;old;None": [old],  # another cluster's: not ours to judge
        "prod;vm;web1": [old],  # not a plain name
    }
    result = run_module(check.main, args())
    assert result["status"] == 2
    found = {(f["image"], f["code"]): f["message"] for f in result["findings"]}
    assert set(found) == {("prod;old;None", "faded-out"), ("prod;empty;None", "faded-out")}
    assert found[("prod;old;None", "faded-out")].startswith("source image gone, kept 4d12h past its removal time")
    assert found[("prod;empty;None", "faded-out")] == "source image gone and no backup snapshot left"
    # Within extra_retention_time it is fine.
    result = run_module(check.main, args(extra_retention_time="7d"))
    assert [f["image"] for f in result["findings"]] == ["prod;empty;None"]


def test_expected_images_with_their_backup_names(run_module, clusters) -> None:
    clusters["live"] = {"vm-101-disk-0": [D2], "vm-102-disk-0": [], "unrelated": []}
    clusters["backup"] = {"uuid1;scsi0;web1": [D2], "uuid2;scsi0;db1": [D1]}
    clusters["created"] = {"vm-102-disk-0": "Wed Nov 25 11:00:00 2026"}
    expected = [
        {"live_cluster": "prod", "image": "vm-101-disk-0", "backup_image": "uuid1;scsi0;web1"},
        {"live_cluster": "prod", "image": "vm-102-disk-0", "backup_image": "uuid2;scsi0;db1"},
        {"live_cluster": "elsewhere", "image": "vm-200-disk-0", "backup_image": "uuid9;scsi0;x"},
    ]
    result = run_module(check.main, args(expected=expected))
    assert result["checked"] == 2
    # vm-102's only backup (D1, 36 h old) is not on live any more.
    assert [(f["image"], f["code"]) for f in result["findings"]] == [
        ("vm-102-disk-0", "no-shared-snapshot"),
        ("vm-102-disk-0", "too-old"),
    ]
    assert clusters["info"] == []  # both have a backup

    # vm-101 is removed from Proxmox: its backup image, seen before, is now checked as faded out.
    result = run_module(check.main, args(expected=expected[1:], now="2026-12-09T00:00:00"))
    assert ("uuid1;scsi0;web1", "faded-out") in [(f["image"], f["code"]) for f in result["findings"]]


def test_expected_bad_backup_name_fails_naming_it(run_module, clusters) -> None:
    result = run_module(check.main, args(expected=[{"image": "a", "backup_image": "nosemicolons"}]))
    assert result["failed"] is True
    assert result["msg"].startswith("check: expected[0]: needs an image and a backup_image IDENT;DISK;COMMENT, got ")
    assert clusters["listed"] == []


def test_expected_discovery_disks_per_endpoint(run_module, clusters) -> None:
    # proxmox_discover's disks as they are (extra keys), two endpoints: only ours is checked here,
    # the other's backup image is still expected (not faded out).
    clusters["live"] = {"vm-101-disk-0": [D2]}
    clusters["backup"] = {"uuid1;scsi0;web1": [D2], "uuid2;scsi0;db1": []}
    disks = [
        {"endpoint": "ceph-a", "storage": "rbd1", "pool": "rbd", "namespace": None, "image": "vm-101-disk-0",
         "disk": "scsi0", "backup_image": "uuid1;scsi0;web1", "guest": {"vmid": 101}},
        {"endpoint": "ceph-b", "storage": "rbd2", "pool": "rbd", "namespace": None, "image": "vm-102-disk-0",
         "disk": "scsi0", "backup_image": "uuid2;scsi0;db1", "guest": {"vmid": 102}},
    ]  # fmt: skip
    assert run_module(check.main, args(expected=disks))["checked"] == 2  # records both as seen
    result = run_module(check.main, args(expected=disks, endpoint="ceph-a"))
    assert (result["status"], result["checked"], result["findings"]) == (0, 1, [])


def test_expected_items_with_their_own_profiles(run_module, clusters) -> None:
    # A weekly-only guest is not late for a daily it never has; a daily guest is.
    old = "backup;weekly;4;2026-11-26T00:00:00.000000"
    clusters["live"] = {"vm-1": [old], "vm-2": [old]}
    clusters["backup"] = {"u1;scsi0;a": [old], "u2;scsi0;b": [old]}
    expected = [
        {"image": "vm-1", "backup_image": "u1;scsi0;a", "profiles": {"weekly": {"count": 4}}},
        {"image": "vm-2", "backup_image": "u2;scsi0;b"},  # the module's profiles: daily
    ]
    result = run_module(check.main, args(expected=expected))
    assert [(f["image"], f["code"]) for f in result["findings"]] == [("vm-2", "too-old")]
    bad = [{"image": "vm-1", "backup_image": "u1;scsi0;a", "profiles": {"weekly": {"count": 0}}}]
    result = run_module(check.main, args(expected=bad))
    assert result["failed"] is True and result["msg"].startswith("check: expected[0] (vm-1): profiles: ")
