# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The jobs of the checksum, retention and check modules, driven as plain objects (no Ansible).

The module tests (tests/unit/plugins/modules) run the same jobs through main(); these pin that the
core is usable on its own: its decisions, its failures and what it never imports.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.policy.expiry_job import (
    ExpiryJob,
    ExpiryPolicy,
    ExpiryRun,
    OtherSide,
    backup_expiry_plans,
    given_listing,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import Hold, hold_key
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.policy.selection import selected
from ansible_collections.backurne.rbd.plugins.module_utils.report.health_job import (
    HealthCheckJob,
    HealthSettings,
    parse_expected,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum_job import checksum_items

D1, D2, D3 = (f"backup;daily;2;2026-11-0{day}T00:00:00.000000" for day in range(1, 4))
NOW = datetime(2026, 11, 3, 12)
CORE = (
    "stream.checksum_job",
    "policy.expiry_job",
    "report.health_job",
    "module_base.pool_pair",
    "module_base.failure",
    "policy.selection",
)


class Pool:
    """One pool of one side: its listing, and what was removed from it."""

    def __init__(
        self,
        images: dict[str, list[str]],
        fail: dict[str, RbdError] | None = None,
        meta: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.images = images
        self.fail = fail or {}
        self.meta = meta or {}  # image -> its image-meta (holds); "meta" in fail: unreadable
        self.removed: list[str] = []
        self.meta_reads: list[str] = []

    def list_images(self, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        if "list" in self.fail:
            raise self.fail["list"]
        return {name: list(snaps) for name, snaps in self.images.items()}

    def list_images_with_meta(
        self, pool: str, namespace: str | None, meta_prefix: str
    ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
        metas = {
            image: {k: v for k, v in meta.items() if k.startswith(meta_prefix)} for image, meta in self.meta.items()
        }
        return self.list_images(pool, namespace), metas

    def image_meta(self, spec: ImageSpec) -> dict[str, str]:
        self.meta_reads.append(spec.image)
        if "meta" in self.fail:
            raise self.fail["meta"]
        return dict(self.meta.get(spec.image, {}))

    def snap_remove(self, spec: ImageSpec) -> None:
        if spec.image in self.fail:
            raise self.fail[spec.image]
        self.images[spec.image].remove(str(spec.snap))
        self.removed.append(f"{spec.image}@{spec.snap}")

    def remove(self, spec: ImageSpec) -> None:
        del self.images[spec.image]
        self.removed.append(spec.image)


def policy(**extra: Any) -> ExpiryPolicy:
    values: dict[str, Any] = {
        "side": "backup",
        "live_cluster": "prod",
        "prefix": "backup",
        "profiles": parse_profiles({"daily": {"count": 2}}),
        "now": NOW,
        "keep_min": 1,
    }
    values.update(extra)
    return ExpiryPolicy(**values)


def test_core_jobs_import_without_ansible() -> None:
    blocker = (
        "import importlib, importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'ansible' or name.startswith('ansible.'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module('ansible_collections.backurne.rbd.plugins.module_utils.' + name)\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_backup_expiry_keeps_other_clusters_and_foreign_snapshots() -> None:
    listing = {
        "prod;web;None": [D1, D2, D3],
        "other;web;None": [D1, D2, D3],
        "prod;gone;None": ["manual", D1],
    }
    plans = backup_expiry_plans(listing, OtherSide({"web": [D3]}), policy())
    assert [plan["image"] for plan in plans] == ["prod;gone;None", "prod;web;None"]
    gone, web = plans
    assert web["deleted"] == [D1] and web["removed"] is False
    # The source is gone, but the image holds a snapshot not ours: never removed, "manual" never deleted.
    assert gone["removed"] is False and "manual" not in gone["deleted"]


def test_expiry_job_in_check_mode_changes_nothing_and_diffs() -> None:
    pool = Pool({"prod;web;None": [D1, D2, D3]})
    how = ExpiryRun("backups", None, check_mode=True, diff_mode=True)
    result = ExpiryJob(pool, None, OtherSide({"web": [D3]}), policy(), how).run()  # type: ignore[arg-type]
    assert pool.removed == [] and result["changed"] is True
    assert result["diff"] == {"before": {"prod;web;None": [D1, D2, D3]}, "after": {"prod;web;None": [D2, D3]}}


def test_expiry_job_failure_names_the_image_and_keeps_the_others() -> None:
    busy = RbdError([], 16, "(16) Device or resource busy", "local", action="rbd snap rm", subject="x")
    pool = Pool({"prod;a;None": [D1, D2, D3], "prod;b;None": [D1, D2, D3]}, fail={"prod;a;None": busy})
    other = OtherSide({"a": [D3], "b": [D3]})
    with pytest.raises(ModuleFailure) as failed:
        ExpiryJob(pool, None, other, policy(), ExpiryRun("backups", None)).run()  # type: ignore[arg-type]
    assert "'prod;a;None' on backup pool backups" in failed.value.msg
    assert pool.removed == [f"prod;b;None@{D1}"]
    assert failed.value.result["failed_images"][0]["image"] == "prod;a;None"


def test_expiry_job_counts_a_snapshot_already_gone_from_a_given_listing_as_deleted() -> None:
    gone = RbdError([], 2, "(2) No such file or directory", "local", action="rbd snap rm", subject="x")
    pool = Pool({"prod;web;None": [D2, D3]}, fail={"prod;web;None": gone})
    listing = given_listing({"prod;web;None": [D1, D2, D3]})
    result = ExpiryJob(pool, listing, OtherSide({"web": [D3]}), policy(), ExpiryRun("backups", None)).run()  # type: ignore[arg-type]
    assert result["images"][0]["deleted"] == [D1] and result["failed_images"] == []


def held(snapshot: str, until: datetime | None = None) -> dict[str, str]:
    hold = Hold(snapshot, "INC-1", until, "tester", NOW)
    return {hold_key(snapshot): hold.value()}


def test_expiry_job_keeps_a_held_snapshot_read_with_its_own_listing() -> None:
    pool = Pool({"prod;web;None": [D1, D2, D3]}, meta={"prod;web;None": held(D1)})
    result = ExpiryJob(pool, None, OtherSide({"web": [D3]}), policy(), ExpiryRun("backups", None)).run()  # type: ignore[arg-type]
    assert pool.removed == [] and result["changed"] is False
    assert pool.meta_reads == []  # the holds came with the listing


def test_expiry_job_reads_the_holds_of_a_given_listing_only_where_it_would_delete() -> None:
    pool = Pool(
        {"prod;web;None": [D1, D2, D3], "prod;db;None": [D2, D3]},
        meta={"prod;web;None": held(D1, until=NOW - timedelta(days=1)), "prod;db;None": held(D2)},
    )
    listing = given_listing({"prod;web;None": [D1, D2, D3], "prod;db;None": [D2, D3]})
    other = OtherSide({"web": [D3], "db": [D3]})
    ExpiryJob(pool, listing, other, policy(), ExpiryRun("backups", None)).run()  # type: ignore[arg-type]
    assert pool.removed == [f"prod;web;None@{D1}"]  # a hold past its end counts as released
    assert pool.meta_reads == ["prod;web;None"]  # db: nothing to delete, so no read


def test_expiry_job_deletes_nothing_of_an_image_whose_holds_cannot_be_read() -> None:
    denied = RbdError([], 1, "(1) Operation not permitted", "local", action="rbd image-meta list", subject="x")
    pool = Pool({"prod;web;None": [D1, D2, D3]}, fail={"meta": denied})
    listing = given_listing({"prod;web;None": [D1, D2, D3]})
    result = ExpiryJob(pool, listing, OtherSide({"web": [D3]}), policy(), ExpiryRun("backups", None)).run()  # type: ignore[arg-type]
    assert pool.removed == [] and result["failed_images"] == []
    assert pool.images["prod;web;None"] == [D1, D2, D3]


def settings(**extra: Any) -> HealthSettings:
    values: dict[str, Any] = {
        "live_cluster": "prod",
        "pool": "backups",
        "namespace": None,
        "source_pool": "rbd",
        "source_namespace": None,
        "prefix": "backup",
        "profiles": parse_profiles({"daily": {"count": 2}}),
        "now": NOW,
        "include": [],
        "exclude": [],
        "grace_factor": 1.25,
        "expiry_grace": timedelta(days=1),
        "extra_retention": timedelta(0),
        "keep_min": 1,
        "history_dir": None,
        "check_mode": False,
    }
    values.update(extra)
    return HealthSettings(**values)


def test_health_job_is_unknown_when_the_backup_pool_cannot_be_listed() -> None:
    down = RbdError([], 1, "(110) Connection timed out", "local", action="rbd ls", subject="backups")
    live, backup = Pool({"web": [D3]}), Pool({}, fail={"list": down})
    warnings: list[str] = []
    result = HealthCheckJob(live, backup, settings(), None, warnings.append).run()  # type: ignore[arg-type]
    assert result["status"] == 3 and result["checked"] == 0
    assert result["line"].startswith("BACKURNE UNKNOWN - prod: cannot list the backup images")


def test_health_job_reports_a_missing_shared_snapshot() -> None:
    # The backup's newest (D2) is 12 h old, but the live image no longer holds it.
    live, backup = Pool({"web": ["backup;daily;2;2026-11-02T06:00:00.000000"]}), Pool({"prod;web;None": [D2]})
    job = HealthCheckJob(live, backup, settings(now=datetime(2026, 11, 2, 12)), None, print)  # type: ignore[arg-type]
    result = job.run()
    assert [(f["image"], f["code"]) for f in result["findings"]] == [("web", "no-shared-snapshot")]
    assert result["status"] == 2 and result["checked"] == 1


def test_parse_expected_refuses_one_image_listed_twice_differently() -> None:
    items = [
        {"image": "vm-1-disk-0", "backup_image": "u;scsi0;a"},
        {"image": "vm-1-disk-0", "backup_image": "u;scsi1;a"},
    ]
    with pytest.raises(ModuleFailure, match="image 'vm-1-disk-0' is listed twice, differently"):
        parse_expected(items, "prod", None, "rbd", None)


def test_checksum_items_take_the_items_own_pool_and_refuse_a_bad_sample() -> None:
    params: dict[str, Any] = {
        "hasher": ["xxhsum"],
        "images": ["web"],
        "live_cluster": "prod",
        "items": [{"image": "vm-1-disk-0", "backup_image": "u;scsi0;a", "source_pool": "vms"}],
        "source_pool": "rbd",
        "source_namespace": "ns",
        "sample": 100,
    }
    items = checksum_items(params)
    assert [(i["image"], i["backup_image"], i["source_pool"], i["source_namespace"]) for i in items] == [
        ("vm-1-disk-0", "u;scsi0;a", "vms", None),
        ("web", "prod;web;None", "rbd", "ns"),
    ]
    with pytest.raises(ModuleFailure, match="sample must be a percentage from 1 to 100, got 0"):
        checksum_items({**params, "sample": 0})


@pytest.mark.parametrize(
    ("image", "include", "exclude", "only", "expected"),
    [
        ("web1", [], [], None, True),
        ("web1", ["db*"], [], None, False),
        ("web1", ["web*"], ["web1"], None, False),
        ("web1", [], [], ["web2"], False),
        ("web2", ["web*"], [], ["web2"], True),
    ],
)
def test_selected(image: str, include: list[str], exclude: list[str], only: list[str] | None, expected: bool) -> None:
    assert selected(image, include, exclude, only) is expected
