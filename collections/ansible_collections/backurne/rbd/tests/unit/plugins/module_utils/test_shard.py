# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from collections import Counter

import pytest

from ansible_collections.backurne.rbd.plugins.filter.merge_results import merge_results
from ansible_collections.backurne.rbd.plugins.module_utils.policy.priority import plan_priority, priority_order
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import in_shard, shard_of

H = "backup;hourly;24;2026-11-29T10:00:00.000000"
D = "backup;daily;30;2026-11-29T10:00:00.000001"


def test_shard_values_are_fixed() -> None:
    # sha256(name)[:8] big-endian mod count: documented, so it must never drift.
    assert [shard_of(f"prod;vm-{index};None", 3) for index in range(8)] == [2, 2, 1, 1, 1, 2, 1, 1]
    assert shard_of("prod;vm-1;None", 1) == 0


def test_every_image_in_exactly_one_shard() -> None:
    names = [f"prod;img{index};None" for index in range(300)]
    for count in (1, 2, 3, 5):
        owners = Counter(next(i for i in range(count) if in_shard(name, i, count)) for name in names)
        assert sum(owners.values()) == len(names)
        assert all(sum(in_shard(name, i, count) for i in range(count)) == 1 for name in names)
        assert min(owners.values()) > len(names) / count / 2, owners


@pytest.mark.parametrize(("index", "count"), [(0, 0), (2, 2), (-1, 2)])
def test_bad_shard_arguments(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        in_shard("x", index, count)


def test_priority_from_due_or_transferred_profiles() -> None:
    profiles = parse_profiles({"hourly": {"count": 24, "priority": "high"}, "daily": {"count": 30}})
    assert plan_priority({"due": ["daily"], "transfers": []}, profiles, "backup") == "normal"
    assert plan_priority({"due": ["hourly"], "transfers": []}, profiles, "backup") == "high"
    # Nothing due now, but a pending high-priority snapshot still to send.
    assert plan_priority({"due": [], "transfers": [{"from_snap": None, "to_snap": H}]}, profiles, "backup") == "high"
    assert plan_priority({"due": [], "transfers": [{"from_snap": None, "to_snap": D}]}, profiles, "backup") == "normal"
    # A foreign or unknown name never raises.
    assert plan_priority({"due": ["gone"], "transfers": [{"to_snap": "manual"}]}, profiles, "backup") == "normal"
    assert plan_priority({"due": ["hourly"]}, {"hourly": {"priority": "high"}}, "backup") == "high"


def test_priority_order_is_stable_high_first() -> None:
    items = [
        {"image": "a", "priority": "normal"},
        {"image": "b", "priority": "high"},
        {"image": "c"},
        {"image": "d", "priority": "high"},
    ]
    assert [item["image"] for item in priority_order(items)] == ["b", "d", "a", "c"]


def test_merge_results_of_several_nodes() -> None:
    node1 = {"changed": True, "images": [{"image": "a"}], "failed_images": [], "backup_snapshots": {"c;a;None": [D]}}
    node2 = {"changed": False, "images": [{"image": "b"}], "failed_images": [{"image": "b", "error": "x"}]}
    merged = merge_results([node1, node2, {"skipped": True}, {}])
    assert merged["changed"] is True
    assert [item["image"] for item in merged["images"]] == ["a", "b"]
    assert merged["failed_images"] == [{"image": "b", "error": "x"}]
    assert merged["backup_snapshots"] == {"c;a;None": [D]}
    assert merge_results([{"skipped": True}])["skipped"] is True
    # A node whose whole task failed is not silently dropped.
    crashed = merge_results([node1, {"failed": True, "msg": "boom"}])
    assert crashed["failed_images"] == [{"image": None, "error": "boom"}]
    with pytest.raises(TypeError):
        merge_results(node1)  # type: ignore[arg-type]


def test_merge_results_merges_the_checksum_listings() -> None:
    node1 = {"images": [], "backup_snapshots": {"c;a;None": [D]}, "confirmed_snapshots": {"c;a;None": [D]}}
    node2 = {"images": [], "backup_snapshots": {}, "confirmed_snapshots": {"c;b;None": []}}
    merged = merge_results([node1, node2])
    assert merged["backup_snapshots"] == {"c;a;None": [D]}
    assert merged["confirmed_snapshots"] == {"c;a;None": [D], "c;b;None": []}
    assert "confirmed_snapshots" not in merge_results([{"images": []}])
