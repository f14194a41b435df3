# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The restore module's face: check mode returns the plan and predicts `changed`, the batch is
# validated before anything runs, failures name the image, diff shows the targets. The core is
# replaced by recording fakes here; the real data path is tested against the lab.
from collections.abc import Callable
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.stream import restore_job
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore import (
    RestoreError,
    RestorePlan,
    RestoreRequest,
    RestoreResult,
)
from ansible_collections.backurne.rbd.plugins.modules import restore as module

BASE = {"live_host": "live1", "pool": "backups", "target_pool": "rbd"}
SNAP = "backup;daily;7;2026-11-29T10:00:00.000000"


def make_plan(image: str, target: str, exists: bool = False) -> RestorePlan:
    return RestorePlan(
        source=f"backups/{image}@{SNAP}",
        backup_pool="backups",
        backup_namespace=None,
        backup_image=image,
        snapshot=SNAP,
        snapshot_created="2026-11-29T10:00:00",
        size_bytes=1 << 20,
        target=f"rbd/{target}",
        target_pool="rbd",
        target_namespace=None,
        target_image=target,
        target_exists=exists,
        target_size_bytes=4096 if exists else None,
        action="replace" if exists else "create",
        kept_as=f"{target}.backurne-replaced-20261130T000000Z" if exists else None,
    )


class FakeCore:
    def __init__(self, existing: set[str] = frozenset(), fail_restore: set[str] = frozenset()) -> None:
        self.existing = existing
        self.fail_restore = fail_restore
        self.planned: list[tuple[str, str]] = []
        self.restored: list[str] = []

    def plan(self, backup: Any, live: Any, request: RestoreRequest, *rest: Any) -> RestorePlan:
        image, snapshot = request.backup_image, request.snapshot
        target_image, force = request.target_image, request.force
        self.planned.append((image, snapshot))
        if "missing" in image:
            raise RestoreError(f"backup image backups/{image} does not exist on local")
        target = target_image or image.split(";")[1] + "-restore-20261129T100000"
        exists = target in self.existing
        if exists and not force:
            raise RestoreError(f"target image rbd/{target} already exists on node live1: not overwritten")
        return make_plan(image, target, exists)

    def restore(self, backup: Any, live: Any, request: RestoreRequest, *rest: Any, **kw: Any):
        image = request.backup_image
        plan = self.plan(backup, live, request)
        self.restored.append(image)
        result = RestoreResult(source=plan.source, snapshot=plan.snapshot, target=plan.target, action=plan.action)
        if image in self.fail_restore:
            result.failed_stage, result.error = "import", "import: rbd: import-diff failed: (28) No space left"
            result.notes.append(f"removed the partly restored image {plan.target}")
            return result
        result.ok, result.created, result.kept_as = True, True, plan.kept_as
        result.checksum_source = result.checksum_target = "abc"
        return result


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeCore]:
    def install(**kwargs: Any) -> FakeCore:
        fake = FakeCore(**kwargs)
        monkeypatch.setattr(restore_job, "plan_restore", fake.plan)
        monkeypatch.setattr(restore_job, "restore_snapshot", fake.restore)
        return fake

    return install


def test_check_mode_returns_the_plan_and_predicts_a_change(run_module, core) -> None:
    fake = core()
    result = run_module(module.main, {**BASE, "image": "prod1;web1;None", "_ansible_check_mode": True})
    assert result["changed"] is True
    (item,) = result["restores"]
    assert item["status"] == "planned" and item["plan"]["action"] == "create"
    assert item["target"] == "rbd/web1-restore-20261129T100000" and item["snapshot"] == SNAP
    assert fake.restored == []


def test_check_mode_predicts_a_refusal(run_module, core) -> None:
    fake = core(existing={"web1"})
    args = {**BASE, "image": "prod1;web1;None", "target_image": "web1", "_ansible_check_mode": True}
    result = run_module(module.main, args)
    assert result["failed"] is True and result["changed"] is False
    assert "restore of 'prod1;web1;None'@'latest': target image rbd/web1 already exists" in result["msg"]
    assert fake.restored == []


def test_restore_and_diff(run_module, core) -> None:
    core(existing={"web1"})
    args = {**BASE, "image": "prod1;web1;None", "target_image": "web1", "force": True, "_ansible_diff": True}
    result = run_module(module.main, args)
    assert result["changed"] is True
    (item,) = result["restores"]
    assert item["status"] == "restored" and item["kept_as"] == "web1.backurne-replaced-20261130T000000Z"
    assert result["diff"]["before"] == {
        "rbd/web1": {"exists": True, "size_bytes": 4096},
        "rbd/web1.backurne-replaced-20261130T000000Z": {"exists": False},
    }
    assert result["diff"]["after"]["rbd/web1"]["content"] == f"backups/prod1;web1;None@{SNAP}"
    assert result["diff"]["after"]["rbd/web1.backurne-replaced-20261130T000000Z"]["content"] == "previous rbd/web1"


def test_one_bad_request_stops_the_whole_batch_before_anything_runs(run_module, core) -> None:
    fake = core()
    restores = [{"image": "prod1;web1;None"}, {"image": "prod1;missing;None", "snapshot": "before:2026-01-01"}]
    result = run_module(module.main, {**BASE, "restores": restores})
    assert result["failed"] is True and result["changed"] is False
    assert "restore of 'prod1;missing;None'@'before:2026-01-01': backup image" in result["msg"]
    assert fake.restored == []
    assert [r["status"] for r in result["restores"]] == ["planned", "failed"]


def test_two_restores_onto_one_target_are_refused(run_module, core) -> None:
    fake = core()
    restores = [{"image": "prod1;web1;None", "target_image": "x"}, {"image": "prod1;web2;None", "target_image": "x"}]
    result = run_module(module.main, {**BASE, "restores": restores})
    assert result["failed"] is True and "target rbd/x is the target of several restores" in result["msg"]
    assert fake.restored == []


def test_a_failed_restore_fails_the_task_naming_image_target_and_cause(run_module, core) -> None:
    core(fail_restore={"prod1;web2;None"})
    restores = [{"image": "prod1;web1;None"}, {"image": "prod1;web2;None"}]
    result = run_module(module.main, {**BASE, "restores": restores, "workers": 2})
    assert result["failed"] is True
    assert result["changed"] is True  # web1 was restored
    assert (
        "restore of 'prod1;web2;None'@'latest' onto rbd/web2-restore-20261129T100000: import: rbd: import-diff failed"
        in result["msg"]
    )
    statuses = {r["image"]: r["status"] for r in result["restores"]}
    assert statuses == {"prod1;web1;None": "restored", "prod1;web2;None": "failed"}
    failed = result["restores"][1]
    assert failed["created"] is False and failed["notes"] == [
        "removed the partly restored image rbd/web2-restore-20261129T100000"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"restores": [{"image": "a"}], "image": "b"}, "mutually exclusive"),
        ({}, "one of the following is required: image, restores"),
        ({"image": "a", "workers": 0}, "workers must be at least 1"),
        ({"image": "a", "compression_level": 25}, "zstd level must be 1..19"),
        ({"image": "a", "hasher": []}, "hasher must not be empty"),
    ],
)
def test_bad_arguments(run_module, core, args: dict[str, Any], message: str) -> None:
    fake = core()
    result = run_module(module.main, {**BASE, **args})
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert fake.restored == []
