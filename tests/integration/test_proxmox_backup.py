"""Proxmox VE live clusters, end to end: backup.yml against the stand-in PVE API and the real lab.

The stand-in (tests/pveapi/server.py) runs inside this process on the lab's live address with
a private fixture whose RBD storages point at this test's namespaces: ``ceph-vm`` and
``ceph-ct`` on the live cluster, ``ceph-b`` on the *backup* cluster's node, used as a second
live Ceph cluster of the same Proxmox cluster (ceph_endpoint maps it there). The plain lab
live cluster is backed up in the same run (a mixed run).
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import POOL, Lab
from playbook_helpers import T0, assert_ok, make_inventory, run_backup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pveapi"))
from server import RunningServer, start_server

UUID100 = "7b10d7af-b932-4c66-b2c3-3996152ec465"
UUID101 = "2c4d9f3e-8a1b-4c7d-9e6f-0a1b2c3d4e5f"
UUID102 = "5f0e1d2c-3b4a-4968-8776-a5b4c3d2e1f0"
T_DISCOVER = "Find the guests' disks through the Proxmox VE API"
T_PVE_SNAPSHOT = "Snapshot the guests' due disks, per live Ceph endpoint"
T_PVE_TRANSFER = "Transfer the new snapshots, per live Ceph endpoint"
PROFILES = {"daily": {"count": 7}}


def pve_fixture(ns: str, ns_ct: str, ns_b: str) -> dict[str, Any]:
    b64 = base64.b64encode(b"backurne lab").decode()
    return {
        "cluster": {"name": "lab-pve"},
        "version": {"version": "9.1.3", "release": "9.1", "repoid": "c743d6c1"},
        "nodes": [{"node": "pve1", "status": "online"}, {"node": "pve2", "status": "online"}],
        "storages": [
            {"storage": "ceph-vm", "type": "rbd", "pool": POOL, "namespace": ns, "content": "images"},
            {"storage": "ceph-ct", "type": "rbd", "namespace": ns_ct, "content": "rootdir,images"},
            {"storage": "ceph-b", "type": "rbd", "pool": POOL, "namespace": ns_b, "content": "images"},
            {"storage": "local-lvm", "type": "lvmthin", "thinpool": "data", "vgname": "pve", "content": "images"},
        ],
        "guests": [
            {
                "vmid": 100,
                "type": "qemu",
                "node": "pve1",
                "status": "running",
                "agent": {"running": True, "filesystems": 2},
                "config": {
                    "name": "web1",
                    "agent": "1,fstrim_cloned_disks=1",
                    "smbios1": f"uuid={UUID100}",
                    "scsi0": "ceph-vm:vm-100-disk-0,discard=on,size=4M",
                    "scsi1": "ceph-vm:vm-100-disk-1,backup=0,size=1M",
                    "ide2": "none,media=cdrom",
                    "ide0": "ceph-vm:vm-100-cloudinit,media=cdrom",
                    "efidisk0": "ceph-vm:vm-100-disk-2,efitype=4m,size=1M",
                    "unused0": "ceph-vm:vm-100-disk-4",
                },
            },
            {
                "vmid": 101,
                "type": "qemu",
                "node": "pve1",
                "status": "running",
                "agent": {"running": True},
                "config": {
                    "name": "db1",
                    "agent": "enabled=1,freeze-fs=0",
                    "smbios1": f"uuid={UUID101},manufacturer=UHJveG1veA==,product={b64},base64=1",
                    "virtio0": "ceph-vm:base-9000-disk-0/vm-101-disk-0,size=1M",
                    "sata0": "ceph-ct:vm-101-disk-1,size=1M",
                    "scsi0": "local-lvm:vm-101-disk-2,size=1M",
                },
            },
            {
                "vmid": 102,
                "type": "qemu",
                "node": "pve2",
                "status": "running",
                "agent": {"running": False},
                "config": {
                    "name": "app1",
                    "agent": "1",
                    "smbios1": f"uuid={UUID102}",
                    "scsi0": "ceph-b:vm-102-disk-0,size=1M",
                },
            },
            {
                "vmid": 104,
                "type": "lxc",
                "node": "pve2",
                "status": "running",
                "config": {
                    "hostname": "ct1",
                    "memory": 512,
                    "swap": 512,
                    "rootfs": "ceph-ct:vm-104-disk-0,size=1M",
                    "mp0": "ceph-ct:vm-104-disk-1,mp=/srv/data,backup=1,size=1M",
                    "mp1": "ceph-ct:vm-104-disk-2,mp=/srv/cache,size=1M",
                    "mp2": "/mnt/bindmounts/shared,mp=/shared",
                },
            },
            {
                "vmid": 9000,
                "type": "qemu",
                "node": "pve1",
                "status": "stopped",
                "config": {"name": "tmpl", "template": 1, "agent": "1", "scsi0": "ceph-vm:base-9000-disk-0,size=1M"},
            },
        ],
    }


# The backup images the run must create, and no others.
def expected_images() -> set[str]:
    return {
        f"{UUID100};scsi0;web1",
        f"{UUID100};efidisk0;web1",
        f"{UUID101};virtio0;db1",
        f"{UUID101};sata0;db1",
        f"{UUID102};scsi0;app1",
        "ceph-ct;vm-104-disk-0;ct1",
        "ceph-ct;vm-104-disk-1;ct1",
    }


@dataclass
class PveLab:
    lab: Lab
    ns: str
    ns_vm: str
    ns_ct: str
    ns_b: str
    server: RunningServer
    pve_name: str
    plain_name: str
    hook_log: Path

    def inventory(self, *, auth: dict[str, Any] | None = None, plain: bool = True) -> dict[str, Any]:
        inv = make_inventory(self.lab, self.ns, name=self.plain_name, profiles=PROFILES)
        creds = self.server.credentials
        proxmox: dict[str, Any] = {
            "api_host": self.server.host,
            "api_port": self.server.port,
            "api_user": creds.user,
            "ca_path": str(self.server.ca_path),
            "freeze_timeout": 5,
            "hooks": {"post_vm": str(self.hook_log.parent / "post_vm.sh")},
        }
        proxmox.update(auth if auth is not None else {"api_password": creds.password})
        children = inv["all"]["children"]
        live_hosts = children["live_clusters"]["hosts"]
        pve_host = {
            "ansible_host": self.lab.live_ip,
            "backurne_live": {
                "name": self.pve_name,
                "type": "proxmox",
                "ceph": dict(live_hosts["lab-live"]["backurne_live"]["ceph"]),
                "proxmox": proxmox,
                "ceph_endpoint": {"default": {"ceph-vm": "lab-pve", "ceph-ct": "lab-pve", "ceph-b": "lab-ceph2"}},
            },
        }
        children["live_clusters"]["hosts"] = {**(live_hosts if plain else {}), "lab-pve": pve_host}
        children["ceph_endpoints"] = {
            "hosts": {
                "lab-ceph2": {
                    "ansible_host": self.lab.backup_ip,
                    "backurne_ceph": {
                        "ceph_client": "backurne",
                        "ceph_conf": str(self.lab.backup_conf),
                        "keyring": str(self.lab.keyring("backup")),
                    },
                }
            }
        }
        return inv

    def backup_images(self) -> dict[str, list[str]]:
        names = self.lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", self.ns, admin=True) or []
        return {
            name: [s["name"] for s in self.lab.rbd_json("backup", "snap", "ls", f"{POOL}/{self.ns}/{name}", admin=True)]
            for name in names
            if ";" in name and not name.startswith(self.plain_name + ";")
        }

    def agent_calls(self) -> dict[int, list[str]]:
        calls: dict[int, list[str]] = {}
        for entry in self.server.records():
            if entry["command"].startswith("fsfreeze-") and entry["command"] != "fsfreeze-status":
                calls.setdefault(entry["vmid"], []).append(entry["command"])
        return calls

    def set_config(self, vmid: int, **changes: Any) -> None:
        with self.server.state.lock:
            config = self.server.state.guests[vmid]["config"]
            for key, value in changes.items():
                if value is None:
                    config.pop(key, None)
                else:
                    config[key] = value


def all_warnings(results: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for result in results:
        found.extend(result.get("warnings", []))
        for item in result.get("results", []):
            found.extend(item.get("warnings", []))
    return found


def _create(lab: Lab, cluster: str, ns: str, image: str, mb: int = 1) -> None:
    lab.rbd(cluster, "create", "--size", f"{mb}M", f"{POOL}/{ns}/{image}", admin=True)


@pytest.fixture
def pve(lab: Lab, ns: str, tmp_path: Path) -> Iterator[PveLab]:
    # ns holds the plain cluster's image and every backup image; the PVE storages have their own.
    suffix = uuid.uuid4().hex[:6]
    ns_vm, ns_ct, ns_b = f"{ns}-vm{suffix}", f"{ns}-ct{suffix}", f"{ns}-b{suffix}"
    made: list[tuple[str, str]] = []
    server = None
    try:
        lab.rbd("live", "namespace", "create", f"{POOL}/{ns_vm}", admin=True)
        made.append(("live", ns_vm))
        lab.rbd("live", "namespace", "create", f"{POOL}/{ns_ct}", admin=True)
        made.append(("live", ns_ct))
        lab.rbd("backup", "namespace", "create", f"{POOL}/{ns_b}", admin=True)
        made.append(("backup", ns_b))
        lab.write_image("live", f"{POOL}/{ns_vm}/vm-100-disk-0", 4, seed=100, admin=True)
        for image in ("vm-100-disk-1", "vm-100-cloudinit", "vm-100-disk-2", "vm-100-disk-4", "base-9000-disk-0"):
            _create(lab, "live", ns_vm, image)
        base = f"{POOL}/{ns_vm}/base-9000-disk-0"
        lab.rbd("live", "snap", "create", f"{base}@__base__", admin=True)
        lab.rbd("live", "snap", "protect", f"{base}@__base__", admin=True)
        lab.rbd("live", "clone", f"{base}@__base__", f"{POOL}/{ns_vm}/vm-101-disk-0", admin=True)
        for image in ("vm-101-disk-1", "vm-104-disk-0", "vm-104-disk-1", "vm-104-disk-2"):
            _create(lab, "live", ns_ct, image)
        _create(lab, "backup", ns_b, "vm-102-disk-0")
        _create(lab, "live", ns, "plain-disk")  # the plain cluster's image, same run
        hook_log = tmp_path / "hooks.log"
        hook = tmp_path / "post_vm.sh"
        hook.write_text(f'#!/bin/sh\nprintf "%s|%s|%s\\n" "$1" "$2" "$3" >> {hook_log}\n')
        hook.chmod(0o755)
        server = start_server(pve_fixture(ns_vm, ns_ct, ns_b), host=lab.live_ip, workdir=tmp_path / "pveapi")
        yield PveLab(lab, ns, ns_vm, ns_ct, ns_b, server, f"pve{suffix}", f"plain{suffix}", hook_log)
    finally:
        if server is not None:
            server.stop()
        for cluster, name in made:
            lab.purge_namespace(cluster, name)


def test_mixed_run_exact_disks_freeze_rename_tags_and_a_failing_snapshot(pve: PveLab, tmp_path: Path) -> None:
    """Three runs (a day apart) share the set-up: each playbook run costs about a minute here."""
    # -- run 1: a plain and a Proxmox cluster in one run ------------------------------------
    run = assert_ok(run_backup(pve.inventory(), tmp_path, now=T0))
    secret = pve.server.credentials.password
    assert secret not in run.stdout + run.stderr + json.dumps([e.result for e in run.events])

    found = pve.backup_images()
    assert set(found) == expected_images()
    assert all(len(snaps) == 1 for snaps in found.values()), found
    plain = pve.lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", pve.ns, admin=True)
    assert f"{pve.plain_name};plain-disk;None" in plain

    # Freeze once, thaw once: web1 (agent on); db1 has freeze-fs=0 and the container is never
    # frozen; app1's agent does not answer: crash-consistent with a warning, still balanced.
    calls = pve.agent_calls()
    assert calls.get(100) == ["fsfreeze-freeze", "fsfreeze-thaw"], run.results(T_PVE_SNAPSHOT)
    assert 101 not in calls and 104 not in calls
    assert calls[102].count("fsfreeze-freeze") == calls[102].count("fsfreeze-thaw") == 1
    warnings = " ".join(all_warnings(run.results(T_PVE_SNAPSHOT)))
    assert "crash-consistent" in warnings and "app1" in warnings
    assert not any(g["frozen"] for g in pve.server.state.guests.values())

    # The data made it (scsi0 of web1 holds 4 MiB of known data).
    newest = found[f"{UUID100};scsi0;web1"][0]
    assert pve.lab.checksum("live", f"{POOL}/{pve.ns_vm}/vm-100-disk-0@{newest}", admin=True) == pve.lab.checksum(
        "backup", f"{POOL}/{pve.ns}/{UUID100};scsi0;web1@{newest}", admin=True
    )
    # The guest config is saved beside the disk; the post_vm hook ran once per guest.
    meta = pve.lab.rbd_json("backup", "image-meta", "list", f"{POOL}/{pve.ns}/{UUID100};efidisk0;web1", admin=True)
    config = json.loads(meta["backurne.pve.config"])
    assert config["smbios1"] == f"uuid={UUID100}" and config["efidisk0"].startswith("ceph-vm:vm-100-disk-2")
    assert (meta["backurne.pve.vmid"], meta["backurne.pve.name"], meta["backurne.pve.type"]) == ("100", "web1", "qemu")
    assert sorted(pve.hook_log.read_text().splitlines()) == [
        "post_vm|app1|",
        "post_vm|ct1|",
        "post_vm|db1|",
        "post_vm|web1|",
    ]

    # -- run 2: web1 renamed web2, ct1 tagged backurne-off -----------------------------------
    pve.set_config(100, name="web2")
    pve.set_config(104, tags="backurne-off")
    inv = pve.inventory(plain=False)
    assert_ok(run_backup(inv, tmp_path, now=T0 + timedelta(days=1)))
    found = pve.backup_images()
    assert f"{UUID100};scsi0;web1" not in found
    assert len(found[f"{UUID100};scsi0;web2"]) == 2  # renamed, history kept, incremental
    assert len(found["ceph-ct;vm-104-disk-0;ct1"]) == 1  # switched off by the tag

    # -- run 3: tag removed; scsi0 of web2 cannot take a third snapshot (halfway through) ----
    pve.set_config(104, tags=None)
    scsi0 = f"{POOL}/{pve.ns_vm}/vm-100-disk-0"
    present = len(pve.lab.rbd_json("live", "snap", "ls", scsi0, admin=True))
    pve.lab.rbd("live", "snap", "limit", "set", "--limit", str(present), scsi0, admin=True)
    failed = run_backup(inv, tmp_path, now=T0 + timedelta(days=2))
    assert failed.rc != 0
    assert "scsi0" in failed.failure_text(), failed.describe()
    found = pve.backup_images()
    assert len(found["ceph-ct;vm-104-disk-0;ct1"]) == 2  # back on
    assert len(found[f"{UUID100};efidisk0;web2"]) == 3  # the guest's other disk went on
    assert len(found[f"{UUID100};scsi0;web2"]) == 2
    calls = pve.agent_calls()
    assert calls[100] == ["fsfreeze-freeze", "fsfreeze-thaw"] * 3  # thawed after the failure too
    assert not pve.server.state.guests[100]["frozen"]


def test_token_auth_and_a_wrong_password(pve: PveLab, tmp_path: Path) -> None:
    creds = pve.server.credentials
    token = {"api_token_id": creds.token_id, "api_token_secret": creds.token_secret}
    run = assert_ok(run_backup(pve.inventory(auth=token, plain=False), tmp_path, now=T0, check=True))
    planned = {d["backup_image"] for d in run.result(T_DISCOVER)["disks"]}
    assert planned == expected_images()
    assert creds.token_secret not in run.stdout + run.stderr + json.dumps([e.result for e in run.events])
    assert pve.backup_images() == {}  # check mode

    wrong = "Wr0ng-" + uuid.uuid4().hex
    bad = run_backup(pve.inventory(auth={"api_password": wrong}, plain=False), tmp_path, now=T0)
    assert bad.rc != 0
    text = bad.failure_text()
    assert "authentication failed" in text.lower() and creds.user in text and pve.server.host in text, text
    assert wrong not in bad.stdout + bad.stderr + json.dumps([e.result for e in bad.events])
