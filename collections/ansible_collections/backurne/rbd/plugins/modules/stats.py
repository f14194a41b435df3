#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: stats
short_description: Space used by each backup image (rbd du) and in total
version_added: 0.1.0
description:
  - Runs one C(rbd du --format json) on the backup pool (not one per image) and returns, per
    backup image (C(IDENT;DISK;COMMENT)), its provisioned size, the space it uses including its
    snapshots, the part held by snapshots, and the totals.
  - With the fast-diff image feature (the default) C(rbd du) reads object maps and is quick, and
    counts whole objects (4 MiB); without it rbd scans every object of the pool.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.attributes
  - backurne.rbd.attributes.read_only
options:
  backup_images_only:
    description: Count only backup images (names C(IDENT;DISK;COMMENT)); false counts every image of the pool.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Space used by the backups
  backurne.rbd.stats:
    pool: backups
    ceph_client: backurne
  register: usage

- name: Show the total
  ansible.builtin.debug:
    msg: "{{ usage.image_count }} backup images use {{ usage.total_used | human_readable }}"
"""

RETURN = r"""
images:
  description: One entry per image, sorted by name.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Image name.
      type: str
    provisioned:
      description: Size of the image HEAD in bytes.
      type: int
    used:
      description: Bytes used by the image and all its snapshots.
      type: int
    used_snapshots:
      description: The part of RV(images[].used) held by snapshots.
      type: int
    snapshots:
      description: Number of snapshots.
      type: int
  sample:
    - {name: "prod1;web1;None", provisioned: 16777216, used: 8388608, used_snapshots: 8388608, snapshots: 2}
total_used:
  description: Sum of RV(images[].used), in bytes.
  returned: success
  type: int
  sample: 8388608
total_provisioned:
  description: Sum of RV(images[].provisioned), in bytes.
  returned: success
  type: int
  sample: 16777216
image_count:
  description: Number of images counted.
  returned: success
  type: int
  sample: 1
pool:
  description: The pool listed.
  returned: success
  type: str
  sample: backups
namespace:
  description: The namespace listed (null for none).
  returned: success
  type: str
  sample: null
"""

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.usage import collect_stats
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import ceph_access
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module


def main() -> None:
    module = create_module(
        "stats",
        {"backup_images_only": {"type": "bool", "default": True}},
        groups=("ceph", "backup_pool"),
    )
    p = module.params

    def job() -> dict:
        try:
            usage = collect_stats(RbdRunner(ceph_access(p)), p["pool"], p["namespace"], p["backup_images_only"])
        except (RbdError, ValueError) as exc:
            where = p["pool"] + (f"/{p['namespace']}" if p["namespace"] else "")
            raise ModuleFailure(f"stats: pool {where}: {exc}") from exc
        return {"changed": False, **usage.to_dict()}

    module.run(job)


if __name__ == "__main__":
    main()
