# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backup-side expiry of a Proxmox VE cluster (image_map) split across backup nodes, as
tasks/backup_proxmox.yml runs it: each node expires only the images of its shard."""

from __future__ import annotations

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import shard_of
from ansible_collections.backurne.rbd.plugins.modules import retention

DAYS = [f"backup;daily;2;2026-11-0{day}T00:00:00.000000" for day in (1, 2, 3, 4)]


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    done: dict[str, list[str]] = {"snaps": [], "images": []}

    def no_listing(self: RbdRunner, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        raise AssertionError("the run's listing is given: no rbd ls")

    monkeypatch.setattr(RbdRunner, "list_images", no_listing)
    monkeypatch.setattr(RbdRunner, "image_meta", lambda self, spec: {})  # no hold on these images
    monkeypatch.setattr(RbdRunner, "snap_remove", lambda self, spec: done["snaps"].append(f"{spec.image}@{spec.snap}"))
    monkeypatch.setattr(RbdRunner, "remove", lambda self, spec: done["images"].append(spec.image))
    return done


def test_each_node_expires_only_its_share_of_the_proxmox_images(run_module, removed) -> None:
    kept = [f"{index:08d}-b932-4c66-b2c3-3996152ec465;scsi0;vm{index}" for index in range(10)]
    gone = "ceph-ct;vm-999-disk-0;old"  # its guest was deleted: the map says null
    snapshots = {name: list(DAYS) for name in kept} | {gone: [DAYS[0]], "other;x;None": list(DAYS)}
    image_map: dict[str, str | None] = {name: name for name in kept} | {gone: None}
    live = {name: [DAYS[3]] for name in kept}
    by_node: dict[int, set[str]] = {}
    for index in range(2):
        before = len(removed["snaps"]) + len(removed["images"])
        result = run_module(
            retention.main,
            {
                "side": "backup",
                "live_cluster": "pve1",
                "profiles": {"daily": {"count": 2}},
                "now": "2026-11-04T12:00:00",
                "snapshots": snapshots,
                "other_snapshots": live,
                "image_map": image_map,
                "shard_index": index,
                "shard_count": 2,
                "extra_retention_time": "0",
                "fail_on_error": False,
            },
        )
        assert result["failed_images"] == [], result
        touched = [entry.split("@")[0] for entry in removed["snaps"]] + removed["images"]
        by_node[index] = set(touched[before:])
        assert all(shard_of(name, 2) == index for name in by_node[index]), by_node
    # The two shards are really both used, do not overlap and cover every owned image.
    assert by_node[0] and by_node[1] and not by_node[0] & by_node[1]
    assert by_node[0] | by_node[1] == {*kept, gone}
    assert len([e for e in removed["snaps"] if e.split("@")[0] in kept]) == 2 * len(kept)  # D1 and D2 of each
    assert removed["images"] == [gone]  # the vanished guest's image, by its owner only
    assert not any(entry.startswith("other;") for entry in removed["snaps"])  # not in the map: not ours
