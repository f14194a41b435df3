#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: proxmox_backup_images
short_description: Backup-side bookkeeping of a Proxmox VE cluster's backup images
version_added: 0.1.0
description:
  - Runs on a backup node, before and after the transfers of a Proxmox live cluster.
  - Before (no O(transfers)), a guest renamed in Proxmox keeps its history. Its backup image
    C(IDENT;DISK;OLDNAME) is renamed C(IDENT;DISK;NEWNAME) (only when exactly one old name matches
    and the new one does not exist yet). Returns the backup pool's snapshots after the renames.
  - After (with O(transfers)), it stores the guest's Proxmox config beside each disk that received a
    snapshot, as RBD image metadata (C(backurne.pve.config), the current config as a JSON
    document, C(backurne.pve.pending), its pending changes, plus C(backurne.pve.vmid),
    C(backurne.pve.name), C(backurne.pve.type), C(backurne.pve.disk) and
    C(backurne.pve.cluster)), so a restore can recreate the guest. Returns which backup images
    belong to this live cluster (current disks, and images of vanished guests found by their
    C(backurne.pve.cluster) metadata) for backup-side expiry.
  - "Deletion only on proof: an image no disk of the run produced is handed to expiry as gone
    (fade-out, then removal) only when O(coverage) proves it: its guest (C(backurne.pve.vmid))
    was seen and no longer backs that disk up, or is absent from a complete listing. Images of
    guests not seen (node offline, config unreadable), absent from an incomplete listing or
    outside the run's limit are left out of expiry (RV(kept)), with a warning for the first two."
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Returns the renames and metadata it would write, and changes nothing.
  diff_mode:
    support: none
    description: Renames and metadata are not snapshot sets; nothing to diff.
options:
  live_cluster:
    description: Name of the Proxmox live cluster.
    type: str
    required: true
  disks:
    description: The disks of the run, as RV(backurne.rbd.proxmox_discover#module:disks) returns them.
    type: list
    elements: dict
    required: true
  transfers:
    description:
      - The transfer results (RV(backurne.rbd.transfer#module:images), of every endpoint). When
        given, the metadata of each backup image that received a snapshot is written.
    type: list
    elements: dict
  coverage:
    description:
      - What the discovery saw (RV(backurne.rbd.proxmox_discover#module:coverage)). Without it
        nothing is proven and no image of a vanished guest is handed to expiry.
    type: dict
  workers:
    description: Images handled at once.
    type: int
    default: 4
"""

EXAMPLES = r"""
- name: Follow guest renames before planning
  backurne.rbd.proxmox_backup_images:
    live_cluster: pve-a
    pool: backups
    disks: "{{ pve.disks }}"
  register: before

- name: Save the guests' configs beside the disks
  backurne.rbd.proxmox_backup_images:
    live_cluster: pve-a
    pool: backups
    disks: "{{ pve.disks }}"
    transfers: "{{ sent.images }}"
  register: after
"""

RETURN = r"""
snapshots:
  description: Every snapshot name per backup image of the pool (after the renames).
  returned: success
  type: dict
renamed:
  description: Backup images renamed (to rename in check mode), old name to new name.
  returned: success
  type: dict
meta_written:
  description: Backup images whose metadata was written (to write in check mode).
  returned: success
  type: list
  elements: str
owned:
  description:
    - Backup images of this live cluster, mapped to themselves while their disk is still backed
      up, or to null when it is gone (input O(backurne.rbd.retention#module:image_map)).
  returned: when O(transfers) is given
  type: dict
kept:
  description:
    - Backup images of this live cluster no disk of the run produced that are left out of expiry
      because nothing proves their guest gone, with C(image), C(vmid), C(name), C(node), C(reason)
      and C(warn) (false for guests outside the run's limit, which get no warning).
  returned: when O(transfers) is given
  type: list
  elements: dict
failed_images:
  description: Backup images whose rename or metadata failed, with the reason.
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.backup_images_job import BackupImagesJob


def main() -> None:
    module = create_module(
        "proxmox_backup_images",
        {
            "live_cluster": {"type": "str", "required": True},
            "disks": {"type": "list", "elements": "dict", "required": True},
            "transfers": {"type": "list", "elements": "dict"},
            "coverage": {"type": "dict"},
            "workers": {"type": "int", "default": 4},
        },
        groups=("ceph", "backup_pool"),
    )
    p = module.params
    module.run(BackupImagesJob(p, RbdRunner(ceph_access(p)), module.check_mode, module.ansible.warn))


if __name__ == "__main__":
    main()
