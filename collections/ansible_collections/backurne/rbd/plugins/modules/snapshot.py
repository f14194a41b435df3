#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Create the due backup snapshots for a batch of images on a live cluster
version_added: 0.1.0
description:
  - Runs on a live node. Lists the pool once, decides per image which retention profiles are due
    (from the backup snapshots given in O(backup_snapshots)), creates one snapshot per due profile,
    and returns per image the plan of the run (full or incremental, base, transfers).
  - One invocation serves a whole pool; snapshots are created by a bounded pool of workers.
  - Snapshot names are C(PREFIX;PROFILE;COUNT;ISOTIME), identical to backurne 2.x.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.policy
  - backurne.rbd.snapshot_plan
  - backurne.rbd.batch
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Returns the plan, with the snapshot names it would create, and creates nothing.
  diff_mode:
    support: full
    description: Shows each changed image's snapshot set before and after.
options:
  live_cluster:
    description:
      - Name of the live cluster; the first field of the backup image names (C(NAME;IMAGE;None)).
    type: str
    required: true
  pool:
    description: Pool of the images.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside O(pool).
    type: str
  include:
    description: Shell patterns; only images matching one of them are backed up. All when empty.
    type: list
    elements: str
    default: []
  exclude:
    description: Shell patterns of images never backed up.
    type: list
    elements: str
    default: []
  only_images:
    description:
      - Shell patterns narrowing this run to matching images (the operator's "limit"), on top of
        O(include) and O(exclude). All selected images when empty.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Snapshot the images whose profiles are due
  backurne.rbd.snapshot:
    live_cluster: prod1
    pool: rbd
    ceph_client: backurne
    profiles: {daily: {count: 30}, weekly: {count: 8}}
    backup_snapshots: "{{ backup_listing.snapshots }}"
  delegate_to: ceph-prod1-client
  register: snap
"""

RETURN = r"""
images:
  description: The plan and outcome per selected image, in name order.
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: Live image name.
      type: str
    backup_image:
      description: Backup image name.
      type: str
    due:
      description: Profiles due in this run.
      type: list
      elements: str
    new_snapshots:
      description: Snapshots created (or, in check mode, that would be created), in creation order.
      type: list
      elements: str
    base:
      description: Newest snapshot shared by live and backup, or null (full backup).
      type: str
    kind:
      description: C(full), C(incremental) or C(none) (nothing to transfer).
      type: str
    transfers:
      description: Transfers the backup node has to run, in order (C(from_snap) null means full).
      type: list
      elements: dict
    priority:
      description:
        - C(high) when a due profile, or the profile of a snapshot to transfer, has C(priority=high);
          else C(normal). Such images get their snapshots first, and the transfer module starts them first.
      type: str
    ok:
      description: Whether the image's snapshots were created.
      type: bool
    error:
      description: Why the image failed, naming the image and the cause.
      type: str
  sample:
    - image: web1
      backup_image: "prod1;web1;None"
      due: [daily]
      new_snapshots: ["backup;daily;30;2026-11-29T10:00:00.000000"]
      base: "backup;daily;30;2026-11-28T10:00:00.000000"
      kind: incremental
      transfers: [{from_snap: "backup;daily;30;2026-11-28T10:00:00.000000", to_snap: "backup;daily;30;2026-11-29T10:00:00.000000"}]
      ok: true
      error: null
live_snapshots:
  description:
    - Every snapshot name per image of the pool after this run (all images, selected or not), each
      list in Ceph's creation order (oldest first; this run's snapshots appended).
  returned: success
  type: dict
planned_live:
  description: Per live image, the snapshots this run creates (or would create in check mode).
  returned: success
  type: dict
planned_backup:
  description: Per backup image, the snapshots this run is to transfer.
  returned: success
  type: dict
unmatched_limits:
  description: The patterns of O(only_images) that match no image of the pool (with a warning).
  returned: success
  type: list
  elements: str
failed_images:
  description: Images that failed, with the reason; the other images were still handled.
  returned: always
  type: list
  elements: dict
  sample: [{image: "db1", error: "image 'db1' in live cluster prod1 pool rbd: snapshot ...: permission denied"}]
"""

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.policy.snapshot_plan import (
    PLAN_ARGS,
    SnapshotJob,
)


def main() -> None:
    module = create_module(
        "snapshot",
        {
            "live_cluster": {"type": "str", "required": True},
            "pool": {"type": "str", "default": "rbd"},
            "namespace": {"type": "str"},
            "include": {"type": "list", "elements": "str", "default": []},
            "exclude": {"type": "list", "elements": "str", "default": []},
            "only_images": {"type": "list", "elements": "str", "default": []},
            **PLAN_ARGS,
        },
        groups=("ceph", "policy", "batch"),
    )
    module.run(SnapshotJob.for_module(module))


if __name__ == "__main__":
    main()
