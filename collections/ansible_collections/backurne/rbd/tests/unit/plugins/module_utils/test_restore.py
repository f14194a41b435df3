# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The restore decisions without Ceph: snapshot selectors, target names, the plan (validation,
# never-overwrite, force). The data path itself is tested against the lab
# (tests/integration/test_restore_playbook.py).
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore import (
    RestoreConflict,
    RestoreError,
    RestoreNotFound,
    RestoreRequest,
    default_target_name,
    kept_name,
    plan_restore,
    restore_snapshot,
    select_snapshot,
)

S1 = "backup;daily;7;2026-11-27T10:00:00.000000"
S2 = "backup;daily;7;2026-11-28T10:00:00.000000"
S3 = "backup;weekly;4;2026-11-29T10:00:00.000000"
FOREIGN = "manual-before-upgrade"
NOW = datetime(2026, 11, 30, 1, 2, 3)
BIMG = "prod1;web1;None"


class FakeRunner:
    """Answers the read calls plan_restore makes; any write is a test failure."""

    def __init__(self, images: dict[str, dict[str, Any]], label: str, remote: bool = False) -> None:
        # {"pool/[ns/]image": {"size": int, "snaps": {name: size}}}
        self.images = images
        self.label = label
        self.is_remote = remote
        self.calls: list[list[str]] = []

    def _missing(self, spec: ImageSpec) -> RbdError:
        return RbdError(["rbd"], 2, "rbd: error opening image: (2) No such file or directory", self.label)

    def json(self, args: Sequence[str], *, timeout: float | None = None) -> Any:
        self.calls.append(list(args))
        spec = _spec(args)
        if str(spec) not in self.images:
            raise self._missing(spec)
        if args[0] == "status":
            return {"watchers": [{"address": a} for a in self.images[str(spec)].get("watchers", [])]}
        assert args[:2] == ["snap", "ls"], f"unexpected call {args}"
        return [{"id": i, "name": n, "size": s} for i, (n, s) in enumerate(self.images[str(spec)]["snaps"].items())]

    def image_info(self, spec: ImageSpec | str) -> dict[str, Any]:
        parsed = ImageSpec.of(spec)
        self.calls.append(["info", str(parsed)])
        if str(parsed) not in self.images:
            raise self._missing(parsed)
        return {"size": self.images[str(parsed)]["size"], "id": "abc"}

    def exists(self, spec: ImageSpec | str) -> bool:
        return str(ImageSpec.of(spec)) in self.images

    def run(self, args: Sequence[str], **_: Any) -> str:
        raise AssertionError(f"planning must not write: {args}")


def _spec(args: Sequence[str]) -> ImageSpec:
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    return ImageSpec(opts["pool"], opts.get("namespace"), opts["image"])


def runners(live_images: dict[str, Any] | None = None) -> tuple[FakeRunner, FakeRunner]:
    backup = FakeRunner(
        {f"backups/{BIMG}": {"size": 0, "snaps": {S1: 1 << 30, S2: 2 << 30, FOREIGN: 1, S3: 3 << 30}}}, "local"
    )
    live = FakeRunner(live_images or {}, "node live1", remote=True)
    return backup, live


def plan(**overrides: Any) -> Any:
    backup, live = overrides.pop("runners", runners())
    kwargs: dict[str, Any] = {
        "backup_pool": "backups",
        "backup_namespace": None,
        "backup_image": BIMG,
        "snapshot": "latest",
        "target_pool": "rbd",
        "now": NOW,
    }
    kwargs.update(overrides)
    now = kwargs.pop("now")
    return plan_restore(backup, live, RestoreRequest(**kwargs), now=now)


class TestSelectSnapshot:
    names = (S1, FOREIGN, S2, S3)  # Ceph's creation order, as listed

    def test_latest_is_the_last_taken(self) -> None:
        assert select_snapshot(self.names, "latest") == S3

    def test_latest_is_by_ceph_order_not_by_the_time_in_the_name(self) -> None:
        # A backurne 2.x name in local time ahead of UTC (S3) taken before S2: S2 is the latest.
        assert select_snapshot((S1, S3, S2), "latest") == S2
        assert select_snapshot((S1, S3, S2), "before:2026-12-01") == S2

    @pytest.mark.parametrize(
        ("selector", "expected"),
        [
            ("before:2026-11-29T10:00:00", S2),  # strictly before
            ("before: 2026-11-29T10:00:01", S3),
            ("before:2026-11-28", S1),
            ("before:2026-11-29T11:00:00+02:00", S2),  # offsets are converted to UTC
        ],
    )
    def test_before(self, selector: str, expected: str) -> None:
        assert select_snapshot(self.names, selector) == expected

    def test_exact_name(self) -> None:
        assert select_snapshot(self.names, S1) == S1

    @pytest.mark.parametrize(
        ("selector", "message"),
        [
            ("before:2026-11-27T10:00:00", "older than 2026-11-27T10:00:00"),
            ("before:yesterday", "'yesterday' is not an ISO 8601 time"),
            ("backup;daily;7;2020-01-01T00:00:00.000000", "does not exist of backup image 'web1'"),
            (FOREIGN, "is not a backurne snapshot"),
            ("  ", "empty snapshot selector"),
        ],
    )
    def test_bad_selectors_name_the_culprit(self, selector: str, message: str) -> None:
        with pytest.raises(RestoreError, match=message.replace("(", r"\(")):
            select_snapshot(self.names, selector, image="web1")

    def test_latest_without_ours(self) -> None:
        with pytest.raises(RestoreNotFound, match="no backurne snapshot"):
            select_snapshot([FOREIGN], "latest")

    def test_other_prefix(self) -> None:
        theirs = "b2;daily;7;2026-11-29T10:00:00"
        assert select_snapshot([S3, theirs], "latest", prefix="b2") == theirs


class TestNames:
    def test_default_target_is_disk_and_compact_snapshot_time(self) -> None:
        assert default_target_name(BIMG, S3) == "web1-restore-20261129T100000"
        # No ':' in it: qemu's rbd: URIs split on ':'.
        assert ":" not in default_target_name("uuid-1;scsi0;vm1", S1)
        assert default_target_name("uuid-1;scsi0;vm1", S1) == "scsi0-restore-20261127T100000"

    def test_default_target_needs_our_snapshot(self) -> None:
        with pytest.raises(RestoreError, match="give the target image name"):
            default_target_name(BIMG, FOREIGN)

    def test_kept_name_is_utc(self) -> None:
        aware = datetime(2026, 11, 30, 3, 0, 0, tzinfo=timezone(timedelta(hours=2)))
        assert kept_name("web1", aware) == "web1.backurne-replaced-20261130T010000Z"
        assert (
            kept_name("web1", datetime(2026, 11, 30, 1, 0, 0, tzinfo=UTC)) == "web1.backurne-replaced-20261130T010000Z"
        )


class TestPlan:
    def test_new_image_with_default_name(self) -> None:
        result = plan(snapshot="before:2026-11-29")
        assert result.snapshot == S2
        assert result.size_bytes == 2 << 30
        assert result.target == "rbd/web1-restore-20261128T100000"
        assert result.action == "create" and not result.target_exists and result.kept_as is None
        assert result.source == f"backups/{BIMG}@{S2}"
        assert result.to_dict()["snapshot_created"] == "2026-11-28T10:00:00"

    def test_namespaces(self) -> None:
        backup = FakeRunner({f"backups/ns1/{BIMG}": {"size": 0, "snaps": {S1: 5}}}, "local")
        live = FakeRunner({}, "node live1", remote=True)
        result = plan(runners=(backup, live), backup_namespace="ns1", target_namespace="vms", target_image="x")
        assert result.target == "rbd/vms/x" and result.backup_namespace == "ns1" and result.target_namespace == "vms"

    def test_existing_target_refused_without_force(self) -> None:
        backup, live = runners({"rbd/web1": {"size": 7, "snaps": {}}})
        with pytest.raises(RestoreConflict, match=r"target image rbd/web1 already exists on node live1: not overwrit"):
            plan(runners=(backup, live), target_image="web1")

    def test_force_plans_a_replace_keeping_the_current_image(self) -> None:
        backup, live = runners({"rbd/web1": {"size": 7, "snaps": {}}})
        result = plan(runners=(backup, live), target_image="web1", force=True)
        assert result.action == "replace" and result.target_exists and result.target_size_bytes == 7
        assert result.kept_as == "web1.backurne-replaced-20261130T010203Z"

    def test_force_refuses_an_image_in_use(self) -> None:
        backup, live = runners({"rbd/web1": {"size": 7, "snaps": {}, "watchers": ["10.0.0.9:0/123"]}})
        with pytest.raises(RestoreConflict, match=r"rbd/web1 is in use \(1 watcher\(s\): 10.0.0.9:0/123\)"):
            plan(runners=(backup, live), target_image="web1", force=True)

    def test_force_finds_a_free_kept_name(self) -> None:
        taken = "rbd/web1.backurne-replaced-20261130T010203Z"
        backup, live = runners({"rbd/web1": {"size": 7, "snaps": {}}, taken: {"size": 7, "snaps": {}}})
        result = plan(runners=(backup, live), target_image="web1", force=True)
        assert result.kept_as == "web1.backurne-replaced-20261130T010203Z-2"

    def test_force_on_a_new_target_is_a_create(self) -> None:
        assert plan(force=True).action == "create"

    def test_missing_backup_image(self) -> None:
        with pytest.raises(RestoreNotFound, match=r"backup image backups/prod1;nope;None does not exist"):
            plan(backup_image="prod1;nope;None")

    @pytest.mark.parametrize(
        ("target", "message"),
        [
            ("a;b", "contains ';'"),
            ("a/b", "forbidden '/'"),
            ("a@b", "forbidden '@'"),
            ("-rf", "leading '-'"),
            (" web1", "leading/trailing blanks"),
            ("a\nb", "control character"),
        ],
    )
    def test_bad_target_names(self, target: str, message: str) -> None:
        with pytest.raises(RestoreError, match=message):
            plan(target_image=target)

    def test_bad_backup_image_name(self) -> None:
        with pytest.raises(RestoreError, match="backup image: image name"):
            plan(backup_image="a/b")

    def test_planning_only_reads(self) -> None:
        backup, live = runners({"rbd/web1": {"size": 7, "snaps": {}}})
        plan(runners=(backup, live), target_image="web1", force=True)
        # FakeRunner.run raises on any write; only reads were made.
        assert all(call[0] in ("snap", "info", "status") for call in backup.calls + live.calls)


class TestRestoreValidation:
    def test_bad_input_is_a_failed_result_and_touches_nothing(self) -> None:
        backup, live = runners()
        request = RestoreRequest("backups", None, BIMG, "before:1999-01-01", "rbd")
        result = restore_snapshot(backup, live, request)  # type: ignore[arg-type]
        assert not result.ok and result.failed_stage == "validate"
        assert "older than 1999-01-01" in (result.error or "")
        assert result.to_dict()["created"] is False

    def test_backup_runner_must_be_local(self) -> None:
        backup, live = runners()
        backup.is_remote = True
        result = restore_snapshot(backup, live, RestoreRequest("backups", None, BIMG, "latest", "rbd"))  # type: ignore[arg-type]
        assert result.failed_stage == "validate" and "must be local" in (result.error or "")
