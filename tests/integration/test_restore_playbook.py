"""Full-image restore against the real lab: playbooks/restore.yml, the example playbook, the core.

One module-scoped set-up (a namespace on both clusters, two images backed up twice by
playbooks/backup.yml) is shared by every test: each test restores into its own target name, and
the one that replaces a live image (``force``) uses an image no other test reads.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playbook_helpers import (
    POOL,
    REPO,
    PlaybookRun,
    assert_ok,
    backup_image,
    checksum,
    cluster_name,
    day,
    images,
    iso,
    make_inventory,
    run_backup,
    run_playbook,
    snap_name,
    snaps,
)

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner, SshTarget
from ansible_collections.backurne.rbd.plugins.module_utils.stream import restore as core
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, StreamOptions

RESTORE = REPO / "playbooks" / "restore.yml"
EXAMPLE = REPO / "playbooks" / "examples" / "restore_newest_before.yml"
T_RESTORE = "Restore the snapshot as a new image"
SIZE_MB = 8


class Backed:
    """The shared set-up: what was backed up, and where."""

    def __init__(self, lab: Any, ns: str, inventory: dict[str, Any], workdir: Path) -> None:
        self.lab = lab
        self.ns = ns
        self.inventory = inventory
        self.workdir = workdir
        self.cluster = cluster_name(inventory)
        self.s0 = snap_name("daily", 7, day(0))
        self.s1 = snap_name("daily", 7, day(1))

    def bimage(self, image: str) -> str:
        return backup_image(self.cluster, image)

    def live_images(self) -> list[str]:
        return images(self.lab, "live", self.ns)

    def backup_images(self) -> list[str]:
        return images(self.lab, "backup", self.ns)

    def restore(self, extra_vars: dict[str, Any], check: bool = False, playbook: Path = RESTORE) -> PlaybookRun:
        return run_playbook(playbook, self.inventory, self.workdir, extra_vars, check=check)


def _namespace(lab: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    created = []
    try:
        for cluster in ("live", "backup"):
            lab.rbd(cluster, "namespace", "create", f"{POOL}/{name}", admin=True)
            created.append(cluster)
        yield name
    finally:
        for cluster in created:
            lab.purge_namespace(cluster, name)


@pytest.fixture(scope="module")
def backed(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backed]:
    for ns in _namespace(lab):
        inventory = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
        state = Backed(lab, ns, inventory, tmp_path_factory.mktemp("restore"))
        for seed, image in enumerate(("disk1", "disk2")):
            lab.write_image("live", f"{POOL}/{ns}/{image}", SIZE_MB, seed=seed)
        assert_ok(run_backup(inventory, state.workdir, now=day(0)))
        for seed, image in enumerate(("disk1", "disk2")):
            lab.overwrite("live", f"{POOL}/{ns}/{image}", 0.2, seed=100 + seed)
        assert_ok(run_backup(inventory, state.workdir, now=day(1)))
        for image in ("disk1", "disk2"):
            assert {state.s0, state.s1} <= set(snaps(lab, "backup", ns, state.bimage(image))), "set-up: backups missing"
        yield state


def restore_result(run: PlaybookRun) -> dict[str, Any]:
    (item,) = run.result(T_RESTORE)["restores"]
    return item


def test_restore_new_image_equals_backup_snapshot(backed: Backed) -> None:
    lab, ns = backed.lab, backed.ns
    live_before = backed.live_images()
    backup_before = backed.backup_images()
    run = backed.restore(
        {
            "backurne_restore_image": {"cluster": backed.cluster, "image": "disk1"},
            "backurne_restore_snapshot": {"before": iso(day(0.5))},
        }
    )
    assert_ok(run)
    item = restore_result(run)
    target = "disk1-restore-" + day(0).strftime("%Y%m%dT%H%M%S")
    assert item["snapshot"] == backed.s0 and item["status"] == "restored" and item["action"] == "create"
    assert item["target"] == f"{POOL}/{ns}/{target}"
    assert backed.live_images() == sorted([*live_before, target])
    expected = checksum(lab, "backup", ns, backed.bimage("disk1"), backed.s0)
    assert checksum(lab, "live", ns, target) == expected == item["checksum_target"] == item["checksum_source"]
    # The newer backup differs: the selector really picked the older snapshot.
    assert checksum(lab, "backup", ns, backed.bimage("disk1"), backed.s1) != expected
    info = lab.rbd_json("live", "info", f"{POOL}/{ns}/{target}", admin=True)
    assert info["size"] == SIZE_MB * 1024 * 1024
    # No backup snapshot on the restored image (the next backup would take it as its base),
    # and no temporary clone left on the backup cluster.
    assert snaps(lab, "live", ns, target) == []
    assert backed.backup_images() == backup_before
    assert run.changed()["lab-backup"] >= 1


def test_existing_target_is_not_overwritten_without_force(backed: Backed) -> None:
    lab, ns = backed.lab, backed.ns
    before = checksum(lab, "live", ns, "disk1")
    live_before = backed.live_images()
    run = backed.restore({"backurne_restore_image": backed.bimage("disk1"), "backurne_restore_target_image": "disk1"})
    assert run.rc != 0
    text = run.failure_text()
    assert f"{POOL}/{ns}/disk1 already exists" in text and "not overwritten" in text, text
    assert checksum(lab, "live", ns, "disk1") == before
    assert backed.live_images() == live_before


def test_force_keeps_the_previous_image(backed: Backed) -> None:
    lab, ns = backed.lab, backed.ns
    old = checksum(lab, "live", ns, "disk2")
    old_snaps = snaps(lab, "live", ns, "disk2")
    run = backed.restore(
        {
            "backurne_restore_image": backed.bimage("disk2"),
            "backurne_restore_snapshot": backed.s0,
            "backurne_restore_target_image": "disk2",
            "backurne_restore_force": True,
        }
    )
    assert_ok(run)
    item = restore_result(run)
    assert item["action"] == "replace" and item["kept_as"].startswith("disk2.backurne-replaced-"), item
    assert checksum(lab, "live", ns, "disk2") == checksum(lab, "backup", ns, backed.bimage("disk2"), backed.s0)
    # The previous image is recoverable: same content, same snapshots, under the kept name.
    assert checksum(lab, "live", ns, item["kept_as"]) == old
    assert snaps(lab, "live", ns, item["kept_as"]) == old_snaps
    assert checksum(lab, "live", ns, "disk2") != old


def test_nonexistent_snapshot_fails_naming_it_and_leaves_nothing(backed: Backed) -> None:
    missing = snap_name("daily", 7, day(-30))
    live_before, backup_before = backed.live_images(), backed.backup_images()
    run = backed.restore({"backurne_restore_image": backed.bimage("disk1"), "backurne_restore_snapshot": missing})
    assert run.rc != 0
    text = run.failure_text()
    assert f"snapshot {missing!r} does not exist" in text and backed.bimage("disk1") in text, text
    assert backed.live_images() == live_before
    assert backed.backup_images() == backup_before


def test_check_mode_returns_the_plan_and_changes_nothing(backed: Backed) -> None:
    live_before, backup_before = backed.live_images(), backed.backup_images()
    run = backed.restore(
        {"backurne_restore_image": backed.bimage("disk1"), "backurne_restore_target_image": "disk1-check"},
        check=True,
    )
    assert_ok(run)
    result = run.result(T_RESTORE)
    assert result["changed"] is True
    (item,) = result["restores"]
    assert item["status"] == "planned"
    plan = item["plan"]
    assert plan["snapshot"] == backed.s1 and plan["action"] == "create" and plan["target_exists"] is False
    assert plan["target"] == f"{POOL}/{backed.ns}/disk1-check"
    assert plan["size_bytes"] == SIZE_MB * 1024 * 1024
    assert backed.live_images() == live_before
    assert backed.backup_images() == backup_before


def test_example_playbook_restores_newest_backup_before_a_date(backed: Backed) -> None:
    lab, ns = backed.lab, backed.ns
    run = backed.restore(
        {
            "backurne_example_cluster": backed.cluster,
            "backurne_example_image": "disk1",
            "backurne_example_before": iso(day(1, minutes=30)),
            "backurne_example_target": "disk1-example",
        },
        playbook=EXAMPLE,
    )
    assert_ok(run)
    assert checksum(lab, "live", ns, "disk1-example") == checksum(lab, "backup", ns, backed.bimage("disk1"), backed.s1)


# -- the core, with a failure injected into a real restore ---------------------------------------


def _runners(lab: Any) -> tuple[RbdRunner, RbdRunner]:
    def access(cluster: str) -> CephAccess:
        return CephAccess(ceph_client="backurne", keyring=str(lab.keyring(cluster)), ceph_conf=str(lab.conf(cluster)))

    ssh = SshTarget(
        host=lab.live_ip,
        port=lab.port,
        identity_file=str(lab.ssh_key),
        known_hosts_file=str(lab.known_hosts),
        control_master=False,
    )
    return RbdRunner(access("backup")), RbdRunner(access("live"), ssh=ssh)


class _Truncating(Compression):
    """No compression, and the live side cuts the stream: the real import-diff fails midway."""

    def compressor_argv(self) -> list[str]:
        return ["cat"]

    def decompressor_argv(self) -> list[str]:
        return ["head", "-c", "300000"]


def test_failed_restore_removes_its_target_and_puts_the_replaced_image_back(backed: Backed) -> None:
    lab, ns = backed.lab, backed.ns
    backup, live = _runners(lab)
    lab.write_image("live", f"{POOL}/{ns}/victim", 4, seed=7)
    old = checksum(lab, "live", ns, "victim")
    live_before, backup_before = backed.live_images(), backed.backup_images()
    request = core.RestoreRequest(POOL, ns, backed.bimage("disk1"), backed.s0, POOL, ns, "victim", force=True)
    result = core.restore_snapshot(backup, live, request, StreamOptions(_Truncating()))
    assert not result.ok and result.failed_stage == "import", result
    assert result.bytes_logical > 300000  # the export ran; the live side saw only the start
    assert any("removed the partly restored image" in note for note in result.notes), result.notes
    assert any("back to" in note for note in result.notes), result.notes
    assert result.kept_as is None and not result.created
    assert backed.live_images() == live_before
    assert checksum(lab, "live", ns, "victim") == old
    assert backed.backup_images() == backup_before


def test_force_refuses_an_image_in_use(backed: Backed) -> None:
    lab, ns = backed.lab, backed.ns
    backup, live = _runners(lab)
    lab.write_image("live", f"{POOL}/{ns}/busy", 1, seed=9)
    old = checksum(lab, "live", ns, "busy")
    live_before = backed.live_images()
    # `rbd watch` holds a watch (as a running VM does) until its stdin says enter or closes.
    watcher = subprocess.Popen(
        lab.rbd_argv("live", "watch", f"{POOL}/{ns}/busy", admin=True),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not lab.rbd_json("live", "status", f"{POOL}/{ns}/busy", admin=True)["watchers"]:
            assert time.monotonic() < deadline, "rbd watch did not register"
            time.sleep(0.2)
        request = core.RestoreRequest(POOL, ns, backed.bimage("disk1"), "latest", POOL, ns, "busy", force=True)
        result = core.restore_snapshot(backup, live, request)
    finally:
        watcher.communicate(b"\n", timeout=30)
    assert not result.ok and result.failed_stage == "validate", result
    assert f"target image {POOL}/{ns}/busy is in use (1 watcher(s)" in (result.error or "")
    assert backed.live_images() == live_before
    assert checksum(lab, "live", ns, "busy") == old


def test_snapshot_removed_by_retention_mid_restore_is_still_restored(
    backed: Backed, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, ns = backed.lab, backed.ns
    backup, live = _runners(lab)
    bimage = backed.bimage("gone")
    snap = snap_name("daily", 7, day(0))
    lab.write_image("backup", f"{POOL}/{ns}/{bimage}", 4, seed=11)
    lab.rbd("backup", "snap", "create", f"{POOL}/{ns}/{bimage}@{snap}", admin=True)
    expected = checksum(lab, "backup", ns, bimage, snap)
    real_stream = core._stream

    def retention_strikes_first(*args: Any, **kwargs: Any) -> None:
        # What backup retention does, between the clone and the export.
        lab.rbd("backup", "snap", "rm", "--no-progress", f"{POOL}/{ns}/{bimage}@{snap}", admin=True)
        real_stream(*args, **kwargs)

    monkeypatch.setattr(core, "_stream", retention_strikes_first)
    result = core.restore_snapshot(backup, live, core.RestoreRequest(POOL, ns, bimage, snap, POOL, ns, "gone-restored"))
    assert result.ok, result
    assert any("was removed during the restore" in note for note in result.notes), result.notes
    assert checksum(lab, "live", ns, "gone-restored") == expected == result.checksum_target
    # The clone is gone, and with it the trashed snapshot.
    assert snaps(lab, "backup", ns, bimage) == []
    assert lab.rbd_json("backup", "snap", "ls", "--all", f"{POOL}/{ns}/{bimage}", admin=True) == []
    assert not [name for name in backed.backup_images() if name.startswith(core.CLONE_PREFIX)]
