#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: info
short_description: List RBD images of a pool and their backurne snapshots, parsed
version_added: 0.1.0
description:
  - Lists every image of a pool (or namespace) and its snapshots in one C(rbd ls -l) call.
  - Backup image names (C(IDENT;DISK;COMMENT)) and backup snapshot names
    (C(PREFIX;PROFILE;COUNT;ISOTIME)) are parsed, so restore playbooks can pick
    e.g. the newest backup of a disk before a date.
  - Works on the backup cluster (the usual case) and on a live cluster.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.attributes
  - backurne.rbd.attributes.read_only
options:
  pool:
    description: Pool to list (on the backup cluster or on a live cluster).
  snap_prefix:
    description: Prefix of backurne's snapshots; others are reported as foreign.
    type: str
    default: backup
  profiles:
    description:
      - Retention profiles. When given, each snapshot also reports when it expires.
    type: dict
  images:
    description: Only these images (exact names). All images when empty.
    type: list
    elements: str
    default: []
  with_meta:
    description:
      - Also read each listed image's backurne metadata (C(backurne.*) RBD image-meta keys, such
        as the Proxmox guest config saved beside its disks). One more C(rbd) call per image.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: List the backups
  backurne.rbd.info:
    pool: backups
    ceph_client: backurne
  register: backups

- name: Newest backup of disk vm-101-disk-0 of cluster prod1 before June
  ansible.builtin.set_fact:
    restore_snapshot: >-
      {{ (backups.images | selectattr('name', 'eq', 'prod1;vm-101-disk-0;None') | first).snapshots
         | selectattr('created', 'lt', '2026-06-01') | map(attribute='name') | list | last }}
"""

RETURN = r"""
images:
  description: Images of the pool, sorted by name.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Image name.
      type: str
    ident:
      description: First field of a backup image name (cluster, storage or smbios uuid); null if not a backup image name.
      type: str
    disk:
      description: Second field of a backup image name (RBD image or Proxmox disk adapter).
      type: str
    comment:
      description: Third field of a backup image name (VM name, or the string C(None)).
      type: str
    snapshots:
      description:
        - backurne snapshots, oldest first in Ceph's creation order (snapshot id ascending); the last
          is the newest, whatever the time in its name says (backurne 2.x wrote local time).
      type: list
      elements: dict
      contains:
        name:
          description: Snapshot name.
          type: str
        profile:
          description: Retention profile.
          type: str
        count:
          description: Number of snapshots the profile keeps.
          type: int
        created:
          description: Creation time (ISO 8601, UTC) from the snapshot name.
          type: str
        expires:
          description: Expiry time (ISO 8601, UTC), when O(profiles) is given and knows the profile.
          type: str
    foreign_snapshots:
      description: Snapshots that are not backurne's (never touched).
      type: list
      elements: str
    meta:
      description:
        - With O(with_meta), the image's C(backurne.*) metadata, e.g. C(backurne.pve.config) (the
          guest's Proxmox config as JSON), C(backurne.pve.vmid), C(backurne.pve.name), C(backurne.pve.type).
      type: dict
      returned: when O(with_meta=true)
  sample:
    - name: "live;web1;None"
      ident: live
      disk: web1
      comment: "None"
      snapshots:
        - {name: "backup;daily;7;2026-11-29T10:00:00.000000", profile: daily, count: 7, created: "2026-11-29T10:00:00"}
      foreign_snapshots: []
snapshots:
  description:
    - Every snapshot name (ours and foreign) per image, for other backurne modules, each list in
      Ceph's creation order (snapshot id ascending, oldest first).
  returned: success
  type: dict
  sample: {"live;web1;None": ["backup;daily;7;2026-11-29T10:00:00.000000"]}
"""

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.inventory import (
    InventoryError,
    PoolInventory,
    parse_optional_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module


def main() -> None:
    module = create_module(
        "info",
        {
            "snap_prefix": {"type": "str", "default": "backup"},
            "profiles": {"type": "dict"},
            "images": {"type": "list", "elements": "str", "default": []},
            "with_meta": {"type": "bool", "default": False},
        },
        groups=("ceph", "backup_pool"),
    )
    p = module.params

    def job() -> dict:
        try:
            inventory = PoolInventory(
                runner=RbdRunner(ceph_access(p)),
                pool=p["pool"],
                namespace=p["namespace"],
                prefix=p["snap_prefix"],
                profiles=parse_optional_profiles(p["profiles"]),
                images=p["images"],
                with_meta=p["with_meta"],
            )
            return inventory.run()
        except InventoryError as exc:
            raise ModuleFailure(str(exc)) from None

    module.run(job)


if __name__ == "__main__":
    main()
