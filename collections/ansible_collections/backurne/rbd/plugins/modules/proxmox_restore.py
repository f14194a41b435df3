#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: proxmox_restore
short_description: Restore Proxmox VE disk backups as new disks of a guest, or recreate a guest
version_added: 0.1.0
description:
  - Runs on a backup node. Each backup image's snapshot is restored with the pipeline of
    M(backurne.rbd.restore) (C(rbd export-diff | zstd | ssh LIVE "zstd -d | rbd import-diff"),
    checksums compared) into a new image named as Proxmox VE names disks,
    C(vm-VMID-disk-N), N being the lowest index used neither by the guest's config nor by an
    image of the target pool/namespace. Existing images and disks are never touched.
  - O(mode=disk) attaches each restored image to the guest O(vmid) as the next free C(unusedN)
    entry (C(STORAGE:IMAGE)); the operator then moves it to a bus in the Proxmox VE UI.
  - O(mode=guest) recreates a qemu guest from the config saved on the backup images
    (C(backurne.pve.config)) under the new id O(new_vmid) on O(node), every backed-up disk
    restored as C(vm-NEWVMID-disk-N). It gets a new C(smbios1) uuid (the uuid is the guest's
    identity, also for backurne's backup image names), no MAC address (Proxmox VE generates
    new ones) and a new C(vmgenid); cdroms become C(none,media=cdrom), a cloud-init drive is
    regenerated, disks without a backup (C(backup=0), non-RBD storages) are dropped with a
    warning. A container cannot be recreated through the API (Proxmox VE creates containers
    only from a template); restore its disks with O(mode=disk).
  - The saved config is the one the guest ran with when backed up (C(current=1)), the state its
    disks' snapshots hold. Changes that were pending then (C(backurne.pve.pending)) are not
    recreated; a warning names them.
  - The target storages must be RBD storages of the Proxmox VE cluster whose pool/namespace
    lies on the Ceph cluster reached through O(live_host).
  - Everything is validated (images, saved configs, snapshots, guest ids, storages) before the
    first image is created; a bad request fails the task and changes nothing. A failed recreate
    removes the images it restored.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.ssh
  - backurne.rbd.proxmox
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Validates the request and returns the plan (image names, unusedN keys, new config); nothing is created.
  diff_mode:
    support: full
    description:
      - The guest config entries the restore adds (O(mode=disk)), or the new guest's config (O(mode=guest)),
        before and after.
requirements:
  - proxmoxer
options:
  mode:
    description: C(disk) restores new disks of an existing guest, C(guest) recreates a qemu guest.
    type: str
    choices: [disk, guest]
    default: disk
  images:
    description:
      - Backup images of Proxmox VE disks, e.g. C(7b10d7af-...;scsi0;web1). With O(mode=guest), the
        guest's backup images to restore (all of one guest); its disks without one are dropped.
    type: list
    elements: str
    required: true
  snapshot:
    description:
      - Snapshot of each image to restore - an exact name, C(latest), or C(before:ISOTIME)
        (the same selector for every image, so a guest's disks come from the same run).
    type: str
    default: latest
  vmid:
    description: O(mode=disk) - the guest that gets the disks. Default the guest the backup was made of.
    type: int
  new_vmid:
    description: O(mode=guest) - the id of the new guest; it must not exist.
    type: int
  node:
    description:
      - O(mode=guest) - the node the new guest is created on (required). O(mode=disk) - ignored, the
        guest's node is looked up.
    type: str
  storage:
    description: RBD storage that receives every restored image. Default each disk's own storage.
    type: str
  snap_prefix:
    description: Prefix of backurne's snapshots; only those can be restored.
    type: str
    default: backup
  compression:
    description: Compress the stream with zstd on the backup node.
    type: bool
    default: true
  timeout:
    description: Seconds the stream (and each checksum) of one image may take.
    type: int
    default: 21600
  verify:
    description: Compare the checksums of each backup snapshot and its restored image.
    type: bool
    default: true
  hasher:
    description: Hash command reading an image on stdin (an argument list).
    type: list
    elements: str
    default: [xxhsum]
  task_timeout:
    description: Seconds to wait for the Proxmox VE task that creates the guest.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: Restore the newest backup of web1's scsi0 as a new (unused) disk of guest 100
  backurne.rbd.proxmox_restore:
    mode: disk
    pool: backups
    images: ["7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1"]
    live_host: 10.0.10.5
    api_host: pve1.example.com
    api_user: backurne@pve
    api_token_id: backurne
    api_token_secret: "{{ vault_pve_token }}"

- name: Recreate web1 as guest 250 from last night's backups
  backurne.rbd.proxmox_restore:
    mode: guest
    new_vmid: 250
    node: pve1
    snapshot: "before:2026-11-30T06:00:00"
    pool: backups
    images:
      - "7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1"
      - "7b10d7af-b932-4c66-b2c3-3996152ec465;efidisk0;web1"
    live_host: 10.0.10.5
    api_host: pve1.example.com
    api_user: backurne@pve
    api_token_id: backurne
    api_token_secret: "{{ vault_pve_token }}"
"""

RETURN = r"""
vmid:
  description: The guest that got the disks (O(mode=disk)) or the new guest (O(mode=guest)).
  type: int
  returned: always
  sample: 250
node:
  description: Node of that guest.
  type: str
  returned: always
  sample: pve1
disks:
  description: One entry per backup image.
  type: list
  elements: dict
  returned: always
  contains:
    image:
      description: Backup image.
      type: str
    snapshot:
      description: The snapshot restored.
      type: str
    key:
      description: The config key of the restored disk (C(unusedN) with O(mode=disk), e.g. C(scsi0) with O(mode=guest)).
      type: str
    storage:
      description: Proxmox VE storage of the new image.
      type: str
    volume:
      description: Its volume id, C(STORAGE:vm-VMID-disk-N).
      type: str
    target:
      description: The new image, pool[/namespace]/image.
      type: str
    ok:
      description: Whether this disk was restored (and attached).
      type: bool
    checksum_source:
      description: Hash of the backup snapshot.
      type: str
    checksum_target:
      description: Hash of the restored image.
      type: str
    error:
      description: Why it failed.
      type: str
  sample:
    - image: "7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1"
      snapshot: "backup;daily;7;2026-11-29T10:00:00.000000"
      key: unused1
      storage: ceph-vm
      volume: "ceph-vm:vm-100-disk-5"
      target: rbd/pve/vm-100-disk-5
      ok: true
      checksum_source: 9f0c2b8e1d7a6c55
      checksum_target: 9f0c2b8e1d7a6c55
      error: null
config:
  description: O(mode=guest) - the config the new guest is (or would be) created with.
  type: dict
  returned: when O(mode=guest)
  sample: {name: web1, smbios1: "uuid=0d8e...", scsi0: "ceph-vm:vm-250-disk-0,discard=on,size=4M"}
upid:
  description: O(mode=guest) - the Proxmox VE task that created the guest.
  type: str
  returned: when a guest was created
warnings_list:
  description: Disks dropped from a recreated guest, and why.
  type: list
  elements: str
  returned: always
"""

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access, live_ssh_target
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import PROXMOXER_IMPORT_ERROR
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.guest_restore import GuestRestoreJob
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.options import require_pve_api


def main() -> None:
    module = create_module(
        "proxmox_restore",
        {
            "mode": {"type": "str", "choices": ["disk", "guest"], "default": "disk"},
            "images": {"type": "list", "elements": "str", "required": True},
            "snapshot": {"type": "str", "default": "latest"},
            "vmid": {"type": "int"},
            "new_vmid": {"type": "int"},
            "node": {"type": "str"},
            "storage": {"type": "str"},
            "snap_prefix": {"type": "str", "default": "backup"},
            "compression": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 21600},
            "verify": {"type": "bool", "default": True},
            "hasher": {"type": "list", "elements": "str", "default": ["xxhsum"]},
            "task_timeout": {"type": "int", "default": 120},
        },
        groups=("ceph", "backup_pool", "ssh", "proxmox"),
        required_if=[("mode", "guest", ("new_vmid", "node"))],
    )
    p = module.params
    require_pve_api(module.ansible, "proxmox_restore", PROXMOXER_IMPORT_ERROR)
    backup = RbdRunner(ceph_access(p))
    live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
    module.run(GuestRestoreJob(p, backup, live, module.check_mode, module.diff_mode))


if __name__ == "__main__":
    main()
