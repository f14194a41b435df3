# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
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


def test_given_listing_is_used_instead_of_listing(run_module, pool, monkeypatch) -> None:
    def no_listing(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the pool must not be listed when snapshots are given")

    monkeypatch.setattr(RbdRunner, "list_images", no_listing)
    pool["images"] = {"web": [D1, D2, D3]}
    result = run_module(retention.main, args("live", {"prod;web;None": [D2]}, snapshots={"web": [D1, D2, D3]}))
    assert pool["removed_snaps"] == [f"web@{D1}"]
    assert result["changed"] is True


def test_snapshot_already_gone_counts_as_deleted_with_a_given_listing(run_module, pool, monkeypatch) -> None:
    from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError

    def gone(self: RbdRunner, spec: Any) -> None:
        raise RbdError(["rbd"], 2, "rbd: failed to remove snapshot: (2) No such file or directory", "local")

    monkeypatch.setattr(RbdRunner, "snap_remove", gone)
    given = run_module(retention.main, args("live", {"prod;web;None": [D2]}, snapshots={"web": [D1, D2]}))
    assert given["failed_images"] == [] and given["images"][0]["deleted"] == [D1]
    # Listed by the module itself, the same error is a real failure.
    pool["images"] = {"web": [D1, D2]}
    listed = run_module(retention.main, args("live", {"prod;web;None": [D2]}))
    assert listed["failed_images"] and "No such file" in listed["failed_images"][0]["error"]


def test_backup_side_expires_only_its_shard(run_module, pool) -> None:
    from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import shard_of

    names = [f"prod;img{index};None" for index in range(12)]
    pool["images"] = {name: [D1, D2, D3, D4] for name in names}
    other = {name.split(";")[1]: [D4] for name in names}
    for index in range(2):
        run_module(retention.main, args("backup", other, shard_index=index, shard_count=2))
    touched = {entry.split("@")[0] for entry in pool["removed_snaps"]}
    assert touched == set(names)  # both shards together: every image, each once
    assert len(pool["removed_snaps"]) == 2 * len(names)
    assert {shard_of(name, 2) for name in names} == {0, 1}


def test_bad_shard_is_refused(run_module, pool) -> None:
    pool["images"] = {"prod;web;None": [D1, D2, D3, D4]}
    result = run_module(retention.main, args("backup", {"web": [D4]}, shard_index=2, shard_count=2))
    assert result["failed"] is True and "shard_index" in result["msg"]
    assert pool["removed_snaps"] == []
