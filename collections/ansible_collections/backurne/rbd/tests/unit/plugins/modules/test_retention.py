# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.modules import retention

D1 = "backup;daily;2;2026-11-01T00:00:00.000000"
D2 = "backup;daily;2;2026-11-02T00:00:00.000000"
D3 = "backup;daily;2;2026-11-03T00:00:00.000000"
D4 = "backup;daily;2;2026-11-04T00:00:00.000000"
FOREIGN = "manual-before-upgrade"


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"images": {}, "removed_snaps": [], "removed_images": []}

    def list_images(self: RbdRunner, pool_name: str, namespace: str | None = None) -> dict[str, list[str]]:
        return {name: list(snaps) for name, snaps in state["images"].items()}

    def snap_remove(self: RbdRunner, spec: Any) -> None:
        state["images"][spec.image].remove(spec.snap)
        state["removed_snaps"].append(f"{spec.image}@{spec.snap}")

    def remove(self: RbdRunner, spec: Any) -> None:
        del state["images"][spec.image]
        state["removed_images"].append(spec.image)

    monkeypatch.setattr(RbdRunner, "list_images", list_images)
    monkeypatch.setattr(RbdRunner, "snap_remove", snap_remove)
    monkeypatch.setattr(RbdRunner, "remove", remove)
    return state


def args(side: str, other: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
    base = {
        "side": side,
        "live_cluster": "prod",
        "profiles": {"daily": {"count": 2}},
        "now": "2026-11-04T12:00:00",
        "other_snapshots": other,
        "fail_on_error": False,
    }
    base.update(extra)
    return base


def test_live_side_keeps_base_and_foreign(run_module, pool) -> None:
    pool["images"] = {"web": [D1, D2, D3, FOREIGN]}
    result = run_module(retention.main, args("live", {"prod;web;None": [D1, D2]}, _ansible_diff=True))
    # Base is D2 (newest shared): D3 is newer, FOREIGN is not ours; D1 is older, max_on_live 0.
    assert pool["removed_snaps"] == [f"web@{D1}"]
    assert result["changed"] is True
    assert result["diff"]["after"]["web"] == sorted([D2, D3, FOREIGN])


def test_backup_side_expires_and_keeps_newest(run_module, pool) -> None:
    pool["images"] = {"prod;web;None": [D1, D2, D3, D4], "other;web;None": [D1], "not-a-backup": [D1]}
    run_module(retention.main, args("backup", {"web": [D4]}))
    # daily x2: D1 expired on 11-03, D2 on 11-04 00:00 (< now), D3 on 11-05, D4 kept.
    assert sorted(pool["removed_snaps"]) == sorted([f"prod;web;None@{D1}", f"prod;web;None@{D2}"])
    assert pool["images"]["other;web;None"] == [D1]
    assert pool["images"]["not-a-backup"] == [D1]


def test_check_mode_predicts_with_assumed_snapshots(run_module, pool) -> None:
    pool["images"] = {"web": [D1, D2, D3]}
    result = run_module(
        retention.main,
        args(
            "live",
            {"prod;web;None": [D2]},
            assume_present={"web": [D4]},
            assume_present_other={"prod;web;None": [D3, D4]},
            _ansible_check_mode=True,
        ),
    )
    # After the run's transfers D4 would be the base: D1, D2, D3 all older, max_on_live 0.
    assert result["images"][0]["deleted"] == [D1, D2, D3]
    assert pool["removed_snaps"] == []


def test_source_gone_fades_out_then_image_removed(run_module, pool) -> None:
    pool["images"] = {"prod;gone;None": [D3, D4]}
    kept = run_module(retention.main, args("backup", {}, extra_retention_time="2d", now="2026-11-07T00:00:00"))
    assert pool["removed_images"] == [] and kept["changed"] is True  # D3 expired, D4 kept until 11-08
    run_module(retention.main, args("backup", {}, extra_retention_time="2d", now="2026-11-08T00:00:01"))
    assert pool["removed_images"] == ["prod;gone;None"]


def test_foreign_snapshot_pins_a_faded_image(run_module, pool) -> None:
    pool["images"] = {"prod;gone;None": [D4, FOREIGN]}
    run_module(retention.main, args("backup", {}, now="2027-01-01T00:00:00"))
    assert pool["removed_images"] == []
    assert pool["images"]["prod;gone;None"] == [FOREIGN]
