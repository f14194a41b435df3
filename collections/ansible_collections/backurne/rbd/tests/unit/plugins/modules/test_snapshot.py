# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.modules import snapshot

OLD = "backup;daily;7;2026-11-28T00:00:00.000000"
NOW = "2026-11-29T12:00:00"


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A fake live pool; snap_create appends to it (or fails for images named 'broken*')."""
    pool = {"web": [OLD], "new": [], "broken": [], "skip-me": []}
    created: list[str] = []

    def list_images(self: RbdRunner, pool_name: str, namespace: str | None = None) -> dict[str, list[str]]:
        return {name: list(snaps) for name, snaps in pool.items()}

    def snap_create(self: RbdRunner, spec: Any) -> None:
        if spec.image.startswith("broken"):
            raise RbdError(
                ["rbd", "snap", "create"], 1, "rbd: failed to create snapshot: (1) Operation not permitted", "local"
            )
        pool[spec.image].append(spec.snap)
        created.append(f"{spec.image}@{spec.snap}")

    monkeypatch.setattr(RbdRunner, "list_images", list_images)
    monkeypatch.setattr(RbdRunner, "snap_create", snap_create)
    pool["_created"] = created  # type: ignore[assignment]
    return pool


def args(**extra: Any) -> dict[str, Any]:
    base = {
        "live_cluster": "prod",
        "profiles": {"daily": {"count": 7}},
        "now": NOW,
        "exclude": ["skip-*", "_created"],
        "backup_snapshots": {"prod;web;None": [OLD]},
        "fail_on_error": False,
    }
    base.update(extra)
    return base


def test_check_mode_plans_and_creates_nothing(run_module, live) -> None:
    result = run_module(snapshot.main, args(_ansible_check_mode=True, _ansible_diff=True))
    assert result["changed"] is True
    plans = {p["image"]: p for p in result["images"]}
    assert set(plans) == {"web", "new", "broken"}
    assert plans["web"]["kind"] == "incremental" and plans["web"]["base"] == OLD
    assert plans["new"]["kind"] == "full" and plans["new"]["base"] is None
    assert plans["new"]["new_snapshots"] == ["backup;daily;7;2026-11-29T12:00:00.000000"]
    assert live["_created"] == []
    assert result["diff"]["after"]["web"] == sorted([OLD, "backup;daily;7;2026-11-29T12:00:00.000000"])


def test_real_run_creates_and_isolates_failures(run_module, live) -> None:
    result = run_module(snapshot.main, args())
    assert sorted(live["_created"]) == [
        "new@backup;daily;7;2026-11-29T12:00:00.000000",
        "web@backup;daily;7;2026-11-29T12:00:00.000000",
    ]
    assert [f["image"] for f in result["failed_images"]] == ["broken"]
    assert "broken" in result["failed_images"][0]["error"]
    assert "Operation not permitted" in result["failed_images"][0]["error"]
    broken = next(p for p in result["images"] if p["image"] == "broken")
    assert broken["transfers"] == []


def test_nothing_due_is_not_a_change(run_module, live) -> None:
    recent = "backup;daily;7;2026-11-29T11:00:00.000000"
    result = run_module(
        snapshot.main,
        args(include=["web"], backup_snapshots={"prod;web;None": [recent]}, now="2026-11-29T11:30:00"),
    )
    assert result["changed"] is False
    assert live["_created"] == []


def test_fail_on_error_fails_the_task(run_module, live) -> None:
    result = run_module(snapshot.main, args(include=["broken"], fail_on_error=True))
    assert result["failed"] is True
    assert "broken" in result["msg"]


def test_only_images_narrows_include(run_module, live) -> None:
    result = run_module(snapshot.main, args(include=["web", "new"], only_images=["w*", "broken"]))
    assert [plan["image"] for plan in result["images"]] == ["web"]
    assert live["_created"] == ["web@backup;daily;7;2026-11-29T12:00:00.000000"]


def test_only_images_matching_nothing_are_named(run_module, live) -> None:
    # "broken" matches an image (outside include): a match all the same, not a typo.
    result = run_module(snapshot.main, args(include=["web"], only_images=["w*", "typo*", "broken"]))
    assert result["unmatched_limits"] == ["typo*"]
    assert run_module(snapshot.main, args())["unmatched_limits"] == []
