"""Proxmox VE restores end to end: playbooks/restore_proxmox.yml against a private stand-in PVE API.

One module-scoped set-up: a qemu guest (two backed-up disks with data, a backup=0 disk, a cdrom,
a NIC with a MAC, an smbios1 uuid) on a storage in its own namespace of the lab's live cluster,
backed up once with backup.yml. Then: restore as a new disk (check mode, then real), and
recreate the guest under a new vmid (a taken vmid refused first).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import POOL, Lab
from playbook_helpers import T0, PlaybookRun, assert_ok, make_inventory, run_backup, run_playbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pveapi"))
from server import RunningServer, start_server

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "restore_proxmox.yml"
T_RESTORE = "Restore the disks"
UUID = "0f3c1d2e-4b5a-4c6d-8e7f-901a2b3c4d5e"
MAC = "BC:24:11:12:34:56"
SCSI0 = f"{UUID};scsi0;web1"
EFI = f"{UUID};efidisk0;web1"


def fixture(ns_vm: str) -> dict[str, Any]:
    return {
        "cluster": {"name": "lab-pve"},
        "nodes": [{"node": "pve1", "status": "online"}],
        "storages": [
            {"storage": "ceph-vm", "type": "rbd", "pool": POOL, "namespace": ns_vm, "content": "images"},
            {"storage": "local-lvm", "type": "lvmthin", "thinpool": "data", "vgname": "pve", "content": "images"},
        ],
        "guests": [
            {
                "vmid": 100,
                "type": "qemu",
                "node": "pve1",
                "status": "running",
                "config": {
                    "name": "web1",
                    "memory": "512",
                    "agent": "0",
                    "smbios1": f"uuid={UUID}",
                    "boot": "order=scsi0;scsi1;ide2;net0",
                    "net0": f"virtio={MAC},bridge=vmbr0",
                    "scsi0": "ceph-vm:vm-100-disk-0,discard=on,size=4M",
                    "efidisk0": "ceph-vm:vm-100-disk-1,efitype=4m,size=1M",
                    "scsi1": "ceph-vm:vm-100-disk-2,backup=0,size=1M",
                    "scsi2": "local-lvm:vm-100-disk-9,size=1M",
                    "ide2": "none,media=cdrom",
                    "unused0": "ceph-vm:vm-100-disk-4",
                },
            }
        ],
    }


@dataclass
class Setup:
    lab: Lab
    ns: str
    ns_vm: str
    server: RunningServer
    inventory: dict[str, Any]
    workdir: Path
    snapshot: str

    def restore(self, extra_vars: dict[str, Any], check: bool = False) -> PlaybookRun:
        extra = {"backurne_restore_cluster": "lab-pve", **extra_vars}
        return run_playbook(PLAYBOOK, self.inventory, self.workdir, extra, check)

    def live(self, image: str, snap: str | None = None) -> str:
        return f"{POOL}/{self.ns_vm}/{image}" + (f"@{snap}" if snap else "")

    def live_images(self) -> set[str]:
        return set(self.lab.rbd_json("live", "ls", "--pool", POOL, "--namespace", self.ns_vm, admin=True) or [])

    def backup_sum(self, image: str) -> str:
        return self.lab.checksum("backup", f"{POOL}/{self.ns}/{image}@{self.snapshot}", admin=True)

    def config(self, vmid: int) -> dict[str, Any]:
        with self.server.state.lock:
            return dict(self.server.state.guests[vmid]["config"])


def _inventory(lab: Lab, ns: str, server: RunningServer) -> dict[str, Any]:
    inv = make_inventory(lab, ns, name=f"plain{uuid.uuid4().hex[:6]}", profiles={"daily": {"count": 7}})
    live_hosts = inv["all"]["children"]["live_clusters"]["hosts"]
    creds = server.credentials
    inv["all"]["children"]["live_clusters"]["hosts"] = {
        "lab-pve": {
            "ansible_host": lab.live_ip,
            "backurne_live": {
                "name": "lab-pve",
                "type": "proxmox",
                "ceph": dict(live_hosts["lab-live"]["backurne_live"]["ceph"]),
                "proxmox": {
                    "api_host": server.host,
                    "api_port": server.port,
                    "api_user": creds.user,
                    "api_token_id": creds.token_id,
                    "api_token_secret": creds.token_secret,
                    "ca_path": str(server.ca_path),
                },
                "ceph_endpoint": {"default": {"ceph-vm": "lab-pve"}},
            },
        }
    }
    return inv


@pytest.fixture(scope="module")
def setup(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    suffix = uuid.uuid4().hex[:8]
    ns, ns_vm = f"t-{suffix}", f"t-{suffix}-vm"
    made: list[tuple[str, str]] = []
    server = None
    workdir = tmp_path_factory.mktemp("pverestore")
    try:
        for cluster, name in (("live", ns), ("backup", ns), ("live", ns_vm)):
            lab.rbd(cluster, "namespace", "create", f"{POOL}/{name}", admin=True)
            made.append((cluster, name))
        lab.write_image("live", f"{POOL}/{ns_vm}/vm-100-disk-0", 4, seed=7, admin=True)
        lab.write_image("live", f"{POOL}/{ns_vm}/vm-100-disk-1", 1, seed=8, admin=True)
        # disk-2 (backup=0), disk-4 (unused0), and orphans no config names: never reused
        for image in ("vm-100-disk-2", "vm-100-disk-4", "vm-100-disk-3", "vm-250-disk-0"):
            lab.rbd("live", "create", "--size", "1M", f"{POOL}/{ns_vm}/{image}", admin=True)
        server = start_server(fixture(ns_vm), host=lab.live_ip, workdir=workdir / "pveapi")
        inventory = _inventory(lab, ns, server)
        assert_ok(run_backup(inventory, workdir, now=T0))
        snaps = lab.rbd_json("backup", "snap", "ls", f"{POOL}/{ns}/{SCSI0}", admin=True)
        assert len(snaps) == 1, snaps
        yield Setup(lab, ns, ns_vm, server, inventory, workdir, snaps[0]["name"])
    finally:
        if server is not None:
            server.stop()
        for cluster, name in made:
            lab.purge_namespace(cluster, name)


def test_restore_as_new_disk(setup: Setup) -> None:
    before_images = setup.live_images()
    before_sums = {i: setup.lab.checksum("live", setup.live(i), admin=True) for i in sorted(before_images)}
    before_config = setup.config(100)

    # check mode: the plan (first free name after config AND pool names, next unusedN), nothing made
    run = assert_ok(setup.restore({"backurne_restore_images": [SCSI0]}, check=True))
    result = run.result(T_RESTORE)
    assert result["changed"] is True
    (disk,) = result["disks"]
    assert (disk["key"], disk["volume"], disk["snapshot"]) == ("unused1", "ceph-vm:vm-100-disk-5", setup.snapshot)
    assert setup.live_images() == before_images and setup.config(100) == before_config

    run = assert_ok(setup.restore({"backurne_restore_images": [SCSI0]}))
    (disk,) = run.result(T_RESTORE)["disks"]
    assert disk["ok"] and disk["target"] == setup.live("vm-100-disk-5")
    assert setup.live_images() == before_images | {"vm-100-disk-5"}
    assert setup.lab.checksum("live", setup.live("vm-100-disk-5"), admin=True) == setup.backup_sum(SCSI0)
    assert disk["checksum_target"] == disk["checksum_source"]
    # attached as unused1; nothing else of the guest changed, no existing image touched
    after = setup.config(100)
    assert after.pop("unused1") == "ceph-vm:vm-100-disk-5"
    assert after == before_config
    assert {i: setup.lab.checksum("live", setup.live(i), admin=True) for i in sorted(before_images)} == before_sums
    # a restored image carries no backup snapshot (the next backup must not take it as a base)
    assert setup.lab.rbd_json("live", "snap", "ls", setup.live("vm-100-disk-5"), admin=True) == []


def test_recreate_guest(setup: Setup) -> None:
    images = {
        "backurne_restore_images": [SCSI0, EFI],
        "backurne_restore_mode": "guest",
        "backurne_restore_node": "pve1",
    }
    # a vmid that exists: refused before anything is created
    before_images = setup.live_images()
    run = setup.restore({**images, "backurne_restore_new_vmid": 100})
    assert run.rc != 0 and "VM 100 already exists on node 'pve1'" in run.failure_text(), run.describe()
    assert setup.live_images() == before_images and 250 not in setup.server.state.guests

    run = assert_ok(setup.restore({**images, "backurne_restore_new_vmid": 250}))
    result = run.result(T_RESTORE)
    conf = setup.config(250)
    # vm-250-disk-0 is an orphan in the pool: the new disks start at 1 (PVE's key order: efidisk0 first)
    assert conf["efidisk0"] == "ceph-vm:vm-250-disk-1,efitype=4m,size=1M"
    assert conf["scsi0"] == "ceph-vm:vm-250-disk-2,discard=on,size=4M"
    assert setup.lab.checksum("live", setup.live("vm-250-disk-2"), admin=True) == setup.backup_sum(SCSI0)
    assert setup.lab.checksum("live", setup.live("vm-250-disk-1"), admin=True) == setup.backup_sum(EFI)
    # a new identity: another smbios1 uuid, a MAC generated by PVE, not the old one
    assert conf["smbios1"].startswith("uuid=") and UUID not in conf["smbios1"]
    assert conf["net0"].startswith("virtio=") and MAC not in conf["net0"]
    # not backed up: dropped with warnings; the cdrom kept empty; boot order follows
    assert "scsi1" not in conf and "scsi2" not in conf and "unused0" not in conf
    assert conf["ide2"] == "none,media=cdrom" and conf["boot"] == "order=scsi0;ide2;net0"
    warnings = " ".join(result["warnings_list"])
    assert "scsi1" in warnings and "backup=0" in warnings and "scsi2" in warnings
    assert (conf["name"], conf["memory"]) == ("web1", "512")
    # the original guest is untouched
    assert setup.config(100)["smbios1"] == f"uuid={UUID}"
