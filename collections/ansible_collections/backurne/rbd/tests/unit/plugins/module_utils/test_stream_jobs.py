# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The transfer and restore jobs of the core, without Ansible: what needs no cluster (check mode,
# the shard, the plans' validation and sources, the restore requests and diff), and the stream
# and lock option groups of the module factory. The data path runs against the lab
# (tests/integration/test_core_transfer.py, test_restore_playbook.py).
from datetime import timedelta
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import LOCK_ARGS, STREAM_ARGS
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import _shared_options
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import in_shard
from ansible_collections.backurne.rbd.plugins.module_utils.stream.backup_job import (
    TransferBatch,
    TransferSettings,
    check_plans,
    plan_source,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore_job import (
    RestoreBatch,
    RestoreSettings,
    restore_diff,
    restore_requests,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import BandwidthLimit
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, StreamOptions

S0 = "backup;daily;7;2026-01-01T00:00:00.000000"
S1 = "backup;daily;7;2026-01-02T00:00:00.000000"


class Untouchable:
    """A runner a check-mode job must never call."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"check mode called the runner's {name}")


def settings(**extra: Any) -> TransferSettings:
    params = {"pool": "bk", "namespace": None, "source_pool": "rbd", "source_namespace": None, "snap_prefix": "backup"}
    derived: dict[str, Any] = {"stream": StreamOptions(), "lock_ttl": timedelta(hours=6), "workers": 2}
    return TransferSettings.from_params(params, **{**derived, **extra})


def plan(image: str, *steps: tuple[str | None, str], **extra: Any) -> dict[str, Any]:
    transfers = [{"from_snap": base, "to_snap": snap} for base, snap in steps]
    return {"image": image, "backup_image": f"c;{image};None", "transfers": transfers, **extra}


def test_check_mode_plans_every_image_and_touches_nothing() -> None:
    batch = TransferBatch(Untouchable(), Untouchable(), settings(check_mode=True))  # type: ignore[arg-type]
    plans = [
        plan("web", (None, S0), (S0, S1)),
        plan("db", (S0, S1)),
        plan("down", (S0, S1), ok=False, error="live side failed"),
        plan("foreign", (S0, "manual")),
    ]
    out = batch.run(plans, diff=True)
    statuses = [(r["image"], r["status"], r["kind"], r["snapshots"]) for r in out["images"]]
    assert statuses == [
        ("web", "planned", "full", [S0, S1]),
        ("db", "planned", "incremental", [S1]),
        ("down", "up-to-date", "incremental", []),
        ("foreign", "up-to-date", "incremental", []),  # not ours: never sent
    ]
    # A check run reads no backup image: nothing before, nothing after, and no change reported
    # as moved (the diff lists the images it would change, with what it would add).
    assert out["changed"] is True and out["failed_images"] == [] and out["backup_snapshots"] == {}
    assert out["diff"]["after"] == {"c;web;None": [S0, S1], "c;db;None": [S1]}


def test_a_shard_keeps_only_its_own_images_in_input_order() -> None:
    plans = [plan(f"vm{index}", (None, S0)) for index in range(12)]
    mine = [p["image"] for p in plans if in_shard(p["backup_image"], 1, 3)]
    batch = TransferBatch(Untouchable(), Untouchable(), settings(check_mode=True, shard_index=1, shard_count=3))  # type: ignore[arg-type]
    out = batch.run(plans)
    assert [r["image"] for r in out["images"]] == mine
    assert 0 < len(mine) < 12


def test_a_plan_without_image_name_is_refused_before_anything() -> None:
    with pytest.raises(ValueError, match=r"^plans\[1\] has no image name$"):
        check_plans([plan("web"), {"backup_image": "c;x;None"}])
    batch = TransferBatch(Untouchable(), Untouchable(), settings())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"plans\[0\]"):
        batch.run([{"image": 3}])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ("rbd", "opt-ns")),
        ({"source_pool": "vmpool", "source_namespace": "pve"}, ("vmpool", "pve")),
        ({"source_pool": "vmpool"}, ("vmpool", None)),  # the namespace goes with the pool
        ({"source_pool": None, "source_namespace": "pve"}, ("rbd", "pve")),
    ],
)
def test_plan_source(extra: dict[str, Any], expected: tuple[str, str | None]) -> None:
    assert plan_source({"image": "a", **extra}, "rbd", "opt-ns") == expected


def restore_params(**extra: Any) -> dict[str, Any]:
    return {
        "pool": "backups",
        "namespace": None,
        "image": "prod1;web1;None",
        "snapshot": "latest",
        "target_image": None,
        "force": False,
        "restores": None,
        "target_pool": "rbd",
        "target_namespace": None,
        "snap_prefix": "backup",
        "verify": True,
        "hasher": ["xxhsum"],
        "workers": 1,
        **extra,
    }


def test_restore_requests_one_or_several_and_an_empty_hasher() -> None:
    assert restore_requests(restore_params()) == [
        {"image": "prod1;web1;None", "snapshot": "latest", "target_image": None, "force": False}
    ]
    several = [{"image": "a", "snapshot": "latest", "target_image": "x", "force": True}]
    assert restore_requests(restore_params(restores=several)) == several
    with pytest.raises(ValueError, match="hasher must not be empty"):
        restore_requests(restore_params(hasher=[]))


def test_restore_settings_refuse_no_worker_and_an_empty_batch_changes_nothing() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        RestoreSettings.from_params(restore_params(workers=0), stream=StreamOptions())
    batch = RestoreBatch(
        Untouchable(), Untouchable(), RestoreSettings.from_params(restore_params(), stream=StreamOptions())
    )  # type: ignore[arg-type]
    assert batch.run([]) == {"changed": False, "restores": []}


def test_restore_diff_skips_failed_and_shows_a_replaced_image_kept() -> None:
    plan_replace = {
        "target": "rbd/web1",
        "target_exists": True,
        "target_size_bytes": 10,
        "target_pool": "rbd",
        "target_namespace": None,
        "size_bytes": 20,
        "source": "backups/x@s",
    }
    results = [
        {"plan": plan_replace, "ok": True, "kept_as": "web1.kept"},
        {"plan": {**plan_replace, "target": "rbd/other"}, "ok": False, "kept_as": None},
    ]
    assert restore_diff(results) == {
        "before": {"rbd/web1": {"exists": True, "size_bytes": 10}, "rbd/web1.kept": {"exists": False}},
        "after": {
            "rbd/web1.kept": {"exists": True, "size_bytes": 10, "content": "previous rbd/web1"},
            "rbd/web1": {"exists": True, "size_bytes": 20, "content": "backups/x@s"},
        },
    }


def stream_params(**extra: Any) -> dict[str, Any]:
    return {**{key: spec.get("default") for key, spec in {**STREAM_ARGS, **LOCK_ARGS}.items()}, **extra}


def test_stream_group_builds_the_options_and_stall_zero_turns_the_watch_off() -> None:
    shared = _shared_options("transfer", stream_params(compression_level=3, stall_timeout=0), ("stream", "lock"))
    assert not isinstance(shared, str)
    assert shared.stream == StreamOptions(Compression(True, 3, 0), 21600, None)
    limited = _shared_options("transfer", stream_params(bwlimit="1M", bwlimit_node="1.5G"), ("stream", "lock"))
    assert not isinstance(limited, str)
    assert limited.stream.bwlimit == BandwidthLimit(per_transfer=1 << 20, per_node=3 << 29)
    assert shared.lock_ttl == timedelta(hours=6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"timeout": 0},
            "restore: timeout must be at least 1 second and stall_timeout at least 0 (0 = off), "
            "got timeout=0 stall_timeout=300",
        ),
        ({"stall_timeout": -1}, "got timeout=21600 stall_timeout=-1"),
        ({"compression_level": 25}, "restore: zstd level must be 1..19, got 25"),
        ({"compression_threads": -1}, "restore: zstd threads must be >= 0, got -1"),
        ({"lock_ttl": "soon"}, "restore: lock_ttl: "),
        ({"bwlimit": "fast"}, "restore: bwlimit: 'fast' is not a rate"),
        ({"bwlimit_node": "-2M"}, "restore: bwlimit_node: '-2M' is not a rate"),
    ],
)
def test_stream_and_lock_groups_name_the_bad_option(extra: dict[str, Any], message: str) -> None:
    shared = _shared_options("restore", stream_params(**extra), ("stream", "lock"))
    assert isinstance(shared, str) and message in shared, shared
