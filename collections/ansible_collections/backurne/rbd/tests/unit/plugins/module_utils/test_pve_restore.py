# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import re

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discovery import RbdStorage
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.restore import (
    PveRestoreError,
    allocate_disk_names,
    free_unused_key,
    new_smbios1,
    recreate_config,
    strip_mac,
)

UUID = "7b10d7af-b932-4c66-b2c3-3996152ec465"
STORAGES = {
    "ceph-vm": RbdStorage("ceph-vm", "rbd", "pve"),
    "ceph-b": RbdStorage("ceph-b", "fast", None),
}
SAVED = {
    "name": "web1",
    "memory": "2048",
    "digest": "0123abcd",
    "meta": "creation-qemu=9.0.2,ctime=1712345678",
    "parent": "before-upgrade",
    "lock": "backup",
    "smbios1": f"uuid={UUID},manufacturer=UHJveG1veA==,base64=1",
    "vmgenid": "c5a1b0a4-1111-2222-3333-444455556666",
    "net0": "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1",
    "net1": "model=e1000,macaddr=BC:24:11:00:00:01,bridge=vmbr1",
    "boot": "order=scsi0;scsi1;ide2;net0",
    "scsi0": "ceph-vm:vm-100-disk-0,discard=on,size=4M",
    "scsi1": "ceph-vm:vm-100-disk-1,backup=0,size=1M",
    "scsi2": "local-lvm:vm-100-disk-7,size=1M",
    "ide2": "local:iso/debian-12.iso,media=cdrom",
    "ide0": "ceph-vm:vm-100-cloudinit,media=cdrom",
    "efidisk0": "ceph-vm:vm-100-disk-2,efitype=4m,size=1M",
    "unused0": "ceph-vm:vm-100-disk-4",
}


def test_disk_names_skip_config_and_pool_names_and_never_reuse() -> None:
    config = {"scsi0": "ceph-vm:vm-100-disk-0,size=4M", "unused0": "other:vm-100-disk-2", "ide2": "none,media=cdrom"}
    pool = ["vm-100-disk-1", "vm-100-disk-3.backurne-replaced-x", "vm-1000-disk-4", "vm-10-disk-4", "base-100-disk-4"]
    # 0 (config), 1 (pool), 2 (config, other storage), 3 (an image of the pool starting with it) taken
    assert allocate_disk_names(100, config, pool, 3) == ["vm-100-disk-4", "vm-100-disk-5", "vm-100-disk-6"]
    # a linked clone base-X/vm-Y-disk-N counts for Y
    assert allocate_disk_names(101, {"virtio0": "ceph-vm:base-9000-disk-0/vm-101-disk-0"}, [], 1) == ["vm-101-disk-1"]
    assert allocate_disk_names(7, {}, [], 1) == ["vm-7-disk-0"]


def test_free_unused_key() -> None:
    assert free_unused_key({"unused0": "a:b", "unused2": "a:c"}) == "unused1"
    assert free_unused_key({"unused0": "a:b"}, ["unused1"]) == "unused2"
    with pytest.raises(PveRestoreError, match="no free unusedN"):
        free_unused_key({f"unused{i}": "x:y" for i in range(256)})


def test_new_smbios1_and_strip_mac() -> None:
    fresh = new_smbios1(SAVED["smbios1"])
    assert UUID not in fresh and fresh.endswith(",manufacturer=UHJveG1veA==,base64=1")
    assert re.fullmatch(r"uuid=[0-9a-f-]{36}", fresh.split(",", maxsplit=1)[0])
    assert new_smbios1(SAVED["smbios1"]) != fresh
    assert strip_mac("net0", SAVED["net0"], "qemu") == "virtio,bridge=vmbr0,firewall=1"
    assert strip_mac("net1", SAVED["net1"], "qemu") == "model=e1000,bridge=vmbr1"
    assert strip_mac("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp", "lxc") == (
        "name=eth0,bridge=vmbr0,ip=dhcp"
    )


def test_recreate_config_rewrites_identity_disks_and_drops_the_rest() -> None:
    pool_images = {("rbd", "pve"): ["vm-250-disk-0", "vm-100-disk-0"]}
    plan = recreate_config("qemu", SAVED, 250, ["scsi0", "efidisk0"], STORAGES, pool_images)
    conf = plan.config
    # new images, lowest free index per target pool (disks in PVE's key order), options kept
    assert conf["efidisk0"] == "ceph-vm:vm-250-disk-1,efitype=4m,size=1M"
    assert conf["scsi0"] == "ceph-vm:vm-250-disk-2,discard=on,size=4M"
    assert plan.disks["scsi0"] == {"storage": "ceph-vm", "pool": "rbd", "namespace": "pve", "image": "vm-250-disk-2"}
    # identity: new uuid, no MACs, new vmgenid
    assert UUID not in conf["smbios1"] and "base64=1" in conf["smbios1"]
    assert "BC:24:11" not in conf["net0"] + conf["net1"] and conf["vmgenid"] == "1"
    # cdroms: an ISO becomes none, the cloud-init drive is regenerated
    assert conf["ide2"] == "none,media=cdrom"
    assert conf["ide0"] == "ceph-vm:cloudinit,media=cdrom"
    # not backed up: dropped with a warning naming the disk and why; boot order follows
    assert "scsi1" not in conf and "scsi2" not in conf
    assert any(w.startswith("scsi1 (ceph-vm:vm-100-disk-1) dropped: backup=0") for w in plan.warnings)
    assert any(w.startswith("scsi2") and "not an RBD storage" in w for w in plan.warnings)
    assert conf["boot"] == "order=scsi0;ide2;net0"
    for key in ("digest", "meta", "parent", "lock", "unused0"):
        assert key not in conf
    assert conf["name"] == "web1" and conf["memory"] == "2048"


def test_recreate_onto_another_storage_and_refusals() -> None:
    saved = {**SAVED, "bootdisk": "scsi1"}
    plan = recreate_config("qemu", saved, 250, ["scsi0"], STORAGES, {}, storage_override="ceph-b")
    assert plan.config["scsi0"] == "ceph-b:vm-250-disk-0,discard=on,size=4M"
    assert "bootdisk" not in plan.config  # it named the dropped scsi1
    assert plan.disks["scsi0"]["pool"] == "fast"
    assert any(w.startswith("efidisk0") and "no backup image" in w for w in plan.warnings)
    with pytest.raises(PveRestoreError, match="'nope' is not an RBD storage"):
        recreate_config("qemu", SAVED, 250, ["scsi0"], STORAGES, {}, storage_override="nope")
    with pytest.raises(PveRestoreError, match="ostemplate"):
        recreate_config("lxc", {"rootfs": "ceph-vm:vm-104-disk-0"}, 250, ["rootfs"], STORAGES, {})
    with pytest.raises(PveRestoreError, match="none of the saved config's disks"):
        recreate_config("qemu", SAVED, 250, ["scsi1"], STORAGES, {})
    # no smbios1 saved: one is made anyway (PVE would make one too, but say what we send)
    plan = recreate_config("qemu", {"scsi0": "ceph-vm:vm-1-disk-0"}, 250, ["scsi0"], STORAGES, {})
    assert plan.config["smbios1"].startswith("uuid=")


def test_pending_note_names_what_was_not_applied() -> None:
    from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.restore import pending_note

    assert pending_note({}) is None
    note = pending_note(
        {
            "memory": {"value": "4096", "pending": "8192"},
            "scsi2": {"pending": "ceph-vm:vm-100-disk-9,size=1G"},
            "onboot": {"value": 1, "delete": 1},
        }
    )
    assert note is not None
    assert "memory=8192" in note and "onboot (delete)" in note and "scsi2=ceph-vm:vm-100-disk-9" in note
    assert "not restored" in note
