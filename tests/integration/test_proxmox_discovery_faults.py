"""Proxmox VE discovery under API faults: backup.yml against a private stand-in and the real lab.

Deletion only on proof: a guest's backups fade out only when a complete listing of its cluster
shows it gone. A node offline, a 5xx on a config read or a config PVE's rules refuse make the
listing partial: nothing of the guests it could not see is expired as gone or removed, and a
warning names them. Also: names from the config for guests without statistics, the current
config saved (pending changes apart) and restored, limits that match nothing.

Each test drives backup.yml (and restore_proxmox.yml) with ``backurne_now`` moved forward
(two years later is far past every expiry: a guest's backups would be removed then if it were
taken for gone) and asserts the exit code, the task results and JSON report, and the backup
images on the backup cluster by checksum.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import POOL, Lab
from playbook_helpers import T0, PlaybookRun, assert_ok, make_inventory, run_backup, run_playbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pveapi"))
from server import RunningServer, set_node_status, start_server

REPO = Path(__file__).resolve().parents[2]
RESTORE = REPO / "playbooks" / "restore_proxmox.yml"
UUID100 = "3a1e5b0c-0d6f-4c2a-9b7e-100000000100"
UUID102 = "3a1e5b0c-0d6f-4c2a-9b7e-100000000102"
UUID107 = "3a1e5b0c-0d6f-4c2a-9b7e-100000000107"
WEB1 = f"{UUID100};scsi0;web1"
APP1 = f"{UUID102};scsi0;app1"
NEW07 = f"{UUID107};scsi0;new-07.example.org"
LATER = T0 + timedelta(days=730)  # two years: far past every expiry
PROFILES = {"daily": {"count": 7}}

T_DISCOVER = "Find the guests' disks through the Proxmox VE API"
T_SAVE = "Save the guests' configs beside their disks on the backup cluster"
T_EXPIRE_BACKUP = "Expire snapshots on the backup cluster"
T_SNAPSHOT_PLAIN = "Snapshot the images whose profiles are due"
T_RESTORE = "Restore the disks"


def fixture(ns_vm: str) -> dict[str, Any]:
    return {
        "cluster": {"name": "lab-pve"},
        "nodes": [{"node": "pve1", "status": "online"}, {"node": "pve2", "status": "online"}],
        "storages": [{"storage": "ceph-vm", "type": "rbd", "pool": POOL, "namespace": ns_vm, "content": "images"}],
        "guests": [
            {
                "vmid": 100,
                "type": "qemu",
                "node": "pve1",
                "status": "running",
                "config": {
                    "name": "web1",
                    "agent": "0",
                    "memory": "4096",
                    "onboot": 1,
                    "smbios1": f"uuid={UUID100}",
                    "scsi0": "ceph-vm:vm-100-disk-0,discard=on,size=4M",
                },
                # Changes PVE has not applied yet: never part of the saved config nor of a restore.
                "pending": {"memory": "8192", "scsi2": "ceph-vm:vm-100-disk-9,size=1M"},
                "pending_delete": ["onboot"],
            },
            {
                "vmid": 102,
                "type": "qemu",
                "node": "pve2",
                "status": "running",
                "config": {
                    "name": "app1",
                    "agent": "0",
                    "smbios1": f"uuid={UUID102}",
                    "scsi0": "ceph-vm:vm-102-disk-0,size=2M",
                },
            },
            {
                # Too new to have statistics: /cluster/resources gives it no name.
                "vmid": 107,
                "type": "qemu",
                "node": "pve1",
                "status": "stopped",
                "no_stats": True,
                "config": {
                    "name": "new-07.example.org",
                    "smbios1": f"uuid={UUID107}",
                    "scsi0": "ceph-vm:vm-107-disk-0,size=1M",
                },
            },
        ],
    }


@dataclass
class Pve:
    lab: Lab
    ns: str
    ns_vm: str
    server: RunningServer
    workdir: Path
    plain_name: str

    def inventory(self, plain: bool = False) -> dict[str, Any]:
        inv = make_inventory(self.lab, self.ns, name=self.plain_name, profiles=PROFILES)
        creds = self.server.credentials
        live_hosts = inv["all"]["children"]["live_clusters"]["hosts"]
        pve_host = {
            "ansible_host": self.lab.live_ip,
            "backurne_live": {
                "name": "lab-pve",
                "type": "proxmox",
                "ceph": dict(live_hosts["lab-live"]["backurne_live"]["ceph"]),
                "proxmox": {
                    "api_host": self.server.host,
                    "api_port": self.server.port,
                    "api_user": creds.user,
                    "api_token_id": creds.token_id,
                    "api_token_secret": creds.token_secret,
                    "ca_path": str(self.server.ca_path),
                },
                "ceph_endpoint": {"default": {"ceph-vm": "lab-pve"}},
            },
        }
        inv["all"]["children"]["live_clusters"]["hosts"] = {**(live_hosts if plain else {}), "lab-pve": pve_host}
        return inv

    def backup(self, now: Any, check: bool = False, **extra: Any) -> tuple[PlaybookRun, dict[str, Any]]:
        """One backup.yml run and its JSON report."""
        report = self.workdir / f"report-{uuid.uuid4().hex[:6]}.json"
        inventory = self.inventory(plain=extra.pop("plain", False))
        # ansible-playbook inherits the environment: the report callback writes its JSON there.
        os.environ["BACKURNE_REPORT_JSON"] = str(report)
        try:
            run = run_backup(inventory, self.workdir, now=now, check=check, extra_vars=extra or None)
        finally:
            del os.environ["BACKURNE_REPORT_JSON"]
        return run, (json.loads(report.read_text()) if report.exists() else {})

    def images(self) -> dict[str, list[str]]:
        """The Proxmox backup images of the backup pool and their snapshots (oldest first)."""
        names = self.lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", self.ns, admin=True) or []
        return {
            name: [s["name"] for s in self.lab.rbd_json("backup", "snap", "ls", f"{POOL}/{self.ns}/{name}", admin=True)]
            for name in names
            if ";" in name and not name.startswith(self.plain_name + ";")
        }

    def backup_sum(self, image: str, snap: str) -> str:
        return self.lab.checksum("backup", f"{POOL}/{self.ns}/{image}@{snap}", admin=True)

    def live_sum(self, image: str, snap: str | None = None) -> str:
        return self.lab.checksum("live", f"{POOL}/{self.ns_vm}/{image}" + (f"@{snap}" if snap else ""), admin=True)

    def guest(self, vmid: int) -> dict[str, Any]:
        with self.server.state.lock:
            return self.server.state.guests[vmid]


@pytest.fixture
def pve(lab: Lab, ns: str, tmp_path: Path) -> Iterator[Pve]:
    ns_vm = f"{ns}-vm{uuid.uuid4().hex[:6]}"
    server = None
    try:
        lab.rbd("live", "namespace", "create", f"{POOL}/{ns_vm}", admin=True)
        lab.write_image("live", f"{POOL}/{ns_vm}/vm-100-disk-0", 4, seed=100, admin=True)
        lab.write_image("live", f"{POOL}/{ns_vm}/vm-102-disk-0", 2, seed=102, admin=True)
        lab.write_image("live", f"{POOL}/{ns_vm}/vm-107-disk-0", 1, seed=107, admin=True)
        lab.rbd("live", "create", "--size", "1M", f"{POOL}/{ns}/plain-disk", admin=True)
        server = start_server(fixture(ns_vm), host=lab.live_ip, workdir=tmp_path / "pveapi")
        yield Pve(lab, ns, ns_vm, server, tmp_path, f"plain{uuid.uuid4().hex[:6]}")
    finally:
        if server is not None:
            server.stop()
        lab.purge_namespace("live", ns_vm)


def warnings_of(run: PlaybookRun, task: str) -> str:
    found: list[str] = []
    for result in run.results(task):
        for warning in result.get("warnings", []):
            found.append(warning if isinstance(warning, str) else json.dumps(warning))
    return "\n".join(found)


def backup_plan(run: PlaybookRun) -> dict[str, dict[str, Any]]:
    """The backup-side expiry plan (or what it did), per backup image."""
    return {item["image"]: item for result in run.results(T_EXPIRE_BACKUP) for item in result.get("images", [])}


def kept(run: PlaybookRun) -> dict[str, dict[str, Any]]:
    return {item["image"]: item for item in run.result(T_SAVE).get("kept", [])}


def first_backup(pve: Pve) -> dict[str, list[str]]:
    run, report = pve.backup(T0)
    assert_ok(run)
    found = pve.images()
    assert set(found) == {WEB1, APP1, NEW07}, found
    assert all(len(snaps) == 1 for snaps in found.values()), found
    for image, live in ((WEB1, "vm-100-disk-0"), (APP1, "vm-102-disk-0"), (NEW07, "vm-107-disk-0")):
        assert pve.backup_sum(image, found[image][0]) == pve.live_sum(live, found[image][0])
    # The report's image column names the RBD image with its pool and namespace.
    rbd_images = {rec["rbd_image"] for rec in report["images"]}
    assert f"{POOL}/{pve.ns_vm}/vm-100-disk-0" in rbd_images, report["images"]
    assert report["summary"]["failed"] == 0
    return found


def test_node_offline_never_expires_its_guests(pve: Pve) -> None:
    found = first_backup(pve)
    t0_app1 = found[APP1][0]
    app1_sum = pve.backup_sum(APP1, t0_app1)

    set_node_status(pve.server.state, "pve2", "offline")

    # A run with the node offline: app1 cannot be backed up (a failure naming it), the others are.
    run, report = pve.backup(T0 + timedelta(days=1))
    assert run.rc != 0
    assert "102" in run.failure_text() and "pve2" in run.failure_text(), run.describe()
    assert APP1 not in backup_plan(run)
    assert len(pve.images()[WEB1]) == 2
    assert report["summary"]["failed"] == 0  # no disk of app1 was planned: the failure is the guest's

    # Two years later, dry run: nothing of app1 planned for removal, a warning names it.
    run, _ = pve.backup(LATER, check=True)
    assert run.rc != 0
    plan = backup_plan(run)
    assert APP1 not in plan and not any(item["removed"] for item in plan.values()), plan
    assert kept(run)[APP1]["vmid"] == 102 and kept(run)[APP1]["node"] == "pve2"
    text = warnings_of(run, T_DISCOVER)
    assert "incomplete" in text and "node pve2 offline" in text and "102 (?) on node pve2" in text, text
    text = warnings_of(run, T_SAVE)
    assert APP1 in text and "102 (app1) on node pve2" in text, text
    # The others still expire as usual (web1: its T0 snapshot is long past its expiry).
    assert plan[WEB1]["removed"] is False and found[WEB1][0] in plan[WEB1]["deleted"]
    assert pve.images()[APP1] == [t0_app1]  # check mode

    # And for real, two years later, node still offline: app1's backup is intact.
    run, _ = pve.backup(LATER)
    assert run.rc != 0
    assert APP1 not in backup_plan(run)
    after = pve.images()
    assert after[APP1] == [t0_app1]
    assert pve.backup_sum(APP1, t0_app1) == app1_sum == pve.live_sum("vm-102-disk-0", t0_app1)

    # The node comes back: the next run converges by itself (app1 incremental from its T0 base,
    # which then expires as usual: it is long past its time and no longer the newest).
    set_node_status(pve.server.state, "pve2", "online")
    run, report = pve.backup(LATER + timedelta(hours=1))
    assert_ok(run)
    assert report["summary"]["failed"] == 0
    (record,) = [rec for rec in report["images"] if rec["image"] == "vm-102-disk-0"]
    assert (record["status"], record["kind"]) == ("transferred", "incremental"), record
    after = pve.images()
    assert len(after[APP1]) == 1 and after[APP1][0] != t0_app1
    assert pve.backup_sum(APP1, after[APP1][0]) == pve.live_sum("vm-102-disk-0", after[APP1][0])


def test_a_5xx_on_one_config_blocks_deletion_then_a_deleted_guest_fades_out(pve: Pve) -> None:
    found = first_backup(pve)
    # 107 had no name in /cluster/resources: named after its config.
    assert NEW07 in found and not any("qemu-107" in name for name in found)

    # Guest 107 is really deleted; guest 100's config answers 500.
    with pve.server.state.lock:
        del pve.server.state.guests[107]
        pve.guest(100)["config_error"] = {"status": 500}
    run, _ = pve.backup(LATER, check=True)
    assert run.rc != 0
    assert "100" in run.failure_text() and "Input/output error" in run.failure_text(), run.describe()
    plan = backup_plan(run)
    assert not any(item["removed"] for item in plan.values()), plan
    assert NEW07 not in plan and WEB1 not in plan
    assert set(kept(run)) == {NEW07, WEB1}
    assert "incomplete" in kept(run)[NEW07]["reason"]
    text = warnings_of(run, T_DISCOVER)
    assert "100 (web1) on node pve1" in text and "Input/output error" in text, text
    text = warnings_of(run, T_SAVE)
    assert NEW07 in text and "107 (new-07.example.org)" in text, text

    # A limited run (all listings fine) never takes the guests outside the limit for gone.
    with pve.server.state.lock:
        pve.guest(100).pop("config_error")
    run, _ = pve.backup(LATER, check=True, backurne_limit_images=["app1"])
    assert_ok(run)
    plan = backup_plan(run)
    assert WEB1 not in plan and kept(run)[WEB1]["reason"] == "its guest is outside this run's limit"
    assert plan[NEW07]["removed"] is True  # absent from a complete listing: gone, limit or not

    # Fault gone, complete listing: the deleted guest's backup fades out, as before.
    run, _ = pve.backup(LATER, check=True)
    assert_ok(run)
    plan = backup_plan(run)
    assert plan[NEW07]["removed"] is True and not plan[WEB1]["removed"] and APP1 not in kept(run)
    assert set(pve.images()) == {WEB1, APP1, NEW07}  # check mode
    run, _ = pve.backup(LATER)
    assert_ok(run)
    after = pve.images()
    assert set(after) == {WEB1, APP1}
    assert pve.backup_sum(APP1, after[APP1][-1]) == pve.live_sum("vm-102-disk-0", after[APP1][-1])


def test_current_config_saved_pending_apart_and_restored(pve: Pve) -> None:
    found = first_backup(pve)
    meta = pve.lab.rbd_json("backup", "image-meta", "list", f"{POOL}/{pve.ns}/{WEB1}", admin=True)
    config = json.loads(meta["backurne.pve.config"])
    # The config it runs with: memory 4096, onboot set, no scsi2.
    assert (config["memory"], config["onboot"]) == ("4096", 1) and "scsi2" not in config, config
    pending = json.loads(meta["backurne.pve.pending"])
    assert pending == {
        "memory": {"value": "4096", "pending": "8192"},
        "scsi2": {"pending": "ceph-vm:vm-100-disk-9,size=1M"},
        "onboot": {"value": 1, "delete": 1},
    }
    meta107 = pve.lab.rbd_json("backup", "image-meta", "list", f"{POOL}/{pve.ns}/{NEW07}", admin=True)
    assert meta107["backurne.pve.name"] == "new-07.example.org" and meta107["backurne.pve.pending"] == "{}"

    extra = {
        "backurne_restore_cluster": "lab-pve",
        "backurne_restore_images": [WEB1],
        "backurne_restore_mode": "guest",
        "backurne_restore_node": "pve1",
        "backurne_restore_new_vmid": 300,
    }
    run = assert_ok(run_playbook(RESTORE, pve.inventory(), pve.workdir, extra))
    result = run.result(T_RESTORE)
    conf = dict(pve.guest(300)["config"])
    assert (conf["memory"], conf["onboot"]) == ("4096", 1) and "scsi2" not in conf, conf
    assert conf["scsi0"].startswith("ceph-vm:vm-300-disk-0")
    assert pve.live_sum("vm-300-disk-0") == pve.backup_sum(WEB1, found[WEB1][0])
    warnings = " ".join(result["warnings_list"])
    assert "memory=8192" in warnings and "scsi2" in warnings and "onboot (delete)" in warnings, warnings


def test_a_limit_matching_nothing(pve: Pve) -> None:
    run, report = pve.backup(T0, check=True, plain=True, backurne_limit_images=["typo*"])
    assert run.rc != 0
    assert "'typo*'" in run.failure_text() or '"typo*"' in run.failure_text(), run.describe()
    assert "typo*" in warnings_of(run, T_DISCOVER)
    assert "typo*" in warnings_of(run, T_SNAPSHOT_PLAIN)
    assert report["images"] == []

    # Matching in one cluster is a match: the dry run passes (the other cluster still warns).
    run, report = pve.backup(T0, check=True, plain=True, backurne_limit_images=["web1"])
    assert_ok(run)
    assert "web1" in warnings_of(run, T_SNAPSHOT_PLAIN) and not warnings_of(run, T_DISCOVER)
    assert [rec["rbd_image"] for rec in report["images"]] == [f"{POOL}/{pve.ns_vm}/vm-100-disk-0"]

    # A real run with the typo: warnings, exit 0, nothing backed up.
    run, report = pve.backup(T0, plain=True, backurne_limit_images="typo*")
    assert_ok(run)
    assert "typo*" in warnings_of(run, T_DISCOVER) and "typo*" in warnings_of(run, T_SNAPSHOT_PLAIN)
    assert pve.images() == {} and report["images"] == []
    plain = pve.lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", pve.ns, admin=True) or []
    assert plain == []
