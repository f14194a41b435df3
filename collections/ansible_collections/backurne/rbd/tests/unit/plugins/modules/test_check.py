# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.modules import check

D1 = "backup;daily;3;2026-11-28T00:00:00.000000"
D2 = "backup;daily;3;2026-11-29T00:00:00.000000"
NOW = "2026-11-29T12:00:00"


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake live (runner with ssh) and backup (local runner) pools."""
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


def test_unparsable_creation_time_counts_as_old(run_module, clusters) -> None:
    clusters["live"] = {"mystery": []}
    result = run_module(check.main, args())
    assert [f["code"] for f in result["findings"]] == ["no-backup"]


def test_image_gone_between_listing_and_info_counts_as_old(run_module, clusters) -> None:
    clusters["live"] = {"gone": []}
    clusters["fail"]["info"] = RbdError(["rbd", "info"], 2, "(2) No such file or directory", "node x")
    assert run_module(check.main, args())["status"] == 2


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
