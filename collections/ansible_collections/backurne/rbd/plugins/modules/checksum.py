#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: checksum
short_description: Compare checksums of a snapshot on the live and the backup cluster
version_added: 0.1.0
description:
  - Runs on a backup node. For each image of a batch, hashes C(rbd export IMAGE@SNAP -) on the
    live node (over ssh) and on the backup cluster at the same time, and compares.
  - The snapshot defaults to the newest one both sides share.
  - A mismatch or an error is reported per image; the others are still checked.
  - Self-healing (O(set_aside)) - a backup snapshot found unequal to live is removed from the
    backup image (only backurne's own, C(PREFIX;...)), under the backup image's lock, so that it
    is never the base of another incremental. The older snapshots both sides share are hashed
    too, newest first, until one matches (a damaged base gives damaged snapshots); those that
    differ are removed as well. The next backup run re-sends from the newest confirmed shared
    snapshot (the transfer's HEAD guard rolls the image back to it), or a full one when none is
    left. The event is recorded in the history database (O(state_dir)) for M(backurne.rbd.check).
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.ssh
  - backurne.rbd.pool_pair.backup_pool
  - backurne.rbd.pool_pair
  - backurne.rbd.batch
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Hashes in check mode too; says which snapshots it would set aside, removes none.
  diff_mode:
    support: none
    description: Only removes snapshots found unequal to live; RV(images[].set_aside) lists them.
options:
  snap_prefix:
    description: Prefix of backurne's snapshots (to find the newest shared one).
    type: str
    default: backup
  live_cluster:
    description: Name of the live cluster, to derive backup image names for O(images).
    type: str
  items:
    description:
      - The batch, as dicts with C(image) (live image), C(backup_image) and optionally C(snapshot)
        (default the newest shared one). RV(backurne.rbd.transfer#module:images) fits as is.
      - An item may carry C(source_pool) and C(source_namespace) (as M(backurne.rbd.proxmox_snapshot)
        returns them, since a Proxmox VE cluster's disks live in several pools and namespaces),
        which override O(source_pool) and O(source_namespace) for that image.
    type: list
    elements: dict
    default: []
  images:
    description: Live image names to check (needs O(live_cluster)), newest shared snapshot each.
    type: list
    elements: str
    default: []
  sample:
    description:
      - Percentage of the batch to check, picked at random (at least one image when the batch is
        not empty). For a periodic verify run that spreads the reading cost over several runs.
    type: int
    default: 100
  hasher:
    description:
      - Command (argument list) reading the export on stdin and printing the hash as the first word.
        C(xxhsum) is ~2x faster than C(md5sum); both must exist on both nodes.
    type: list
    elements: str
    default: [xxhsum]
  workers:
    description: Images checked at once (each hashes both sides concurrently).
    type: int
    default: 2
  set_aside:
    description:
      - Remove our backup snapshots found unequal to live (see the description). C(false) only
        reports them.
    type: bool
    default: true
  lock_ttl:
    description: Age (a duration such as C(6h), or seconds) after which another run's lock on a backup image counts as stale.
    type: str
    default: 6h
  state_dir:
    description:
      - Directory of backurne's state on this node, where C(history.sqlite) records each set-aside
        snapshot for M(backurne.rbd.check). Default C($BACKURNE_STATE_DIR), else C(/var/lib/backurne).
    type: path
"""

EXAMPLES = r"""
- name: Verify the snapshots just transferred
  backurne.rbd.checksum:
    pool: backups
    live_host: 10.0.10.5
    live_ceph: {ceph_client: backurne}
    items: "{{ sent.images | selectattr('snapshot') | list }}"

- name: Verify Proxmox VE disks of several pools in one batch
  backurne.rbd.checksum:
    pool: backups
    live_host: 10.0.10.5
    items:
      - {image: vm-100-disk-0, backup_image: "7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1",
         source_pool: vms, source_namespace: null}
      - {image: vm-104-disk-0, backup_image: "ceph-ct;vm-104-disk-0;ct1", source_pool: cts, source_namespace: ct}
"""

RETURN = r"""
images:
  description: One result per checked image.
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: The live image compared.
      type: str
    backup_image:
      description: Its backup image.
      type: str
    snapshot:
      description: Snapshot compared.
      type: str
    source_pool:
      description: Pool of the live image.
      type: str
    source_namespace:
      description: Namespace of the live image, or null.
      type: str
    live:
      description: Hash on the live cluster.
      type: str
    backup:
      description: Hash on the backup cluster.
      type: str
    match:
      description: Whether both hashes are equal.
      type: bool
    error:
      description: Why the comparison could not be made.
      type: str
    skipped:
      description: Why the image was not compared (its live image is gone), or null.
      type: str
    set_aside:
      description:
        - Our snapshots removed from the backup image because they differed from live (in check
          mode, those that would be), oldest first. Empty when nothing differed.
      type: list
      elements: str
    confirmed_base:
      description:
        - After a mismatch, the newest older snapshot shared by both sides found equal (the next
          run's base), or null.
      type: str
    note:
      description: After a mismatch, what differed, what was removed and where the next run starts; else null.
      type: str
  sample:
    - {image: web1, backup_image: "prod1;web1;None", snapshot: "backup;daily;30;2026-11-29T10:00:00.000000",
       live: "b1946ac92492d234", backup: "b1946ac92492d234", match: true, error: null}
mismatched:
  description: Images whose hashes differ or could not be compared.
  returned: always
  type: list
  elements: str
backup_snapshots:
  description:
    - Backup image name to its snapshot names (oldest first) after the removals, for every
      backup image where snapshots were set aside. Merged over the run's listing, it is the
      backup pool's state after this task.
  returned: always
  type: dict
confirmed_snapshots:
  description:
    - For every image that did not match, backup image name to the snapshots live-side expiry may
      count as backed up (the listing after the removals, without the snapshots that could not be
      confirmed, such as the ones this run sent when they could not be compared). Merged over
      RV(backup_snapshots), it keeps the newest confirmed base on live.
  returned: always
  type: dict
"""


from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.pool_pair import (
    backup_and_live_runners,
    lock_ttl_option,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum_job import (
    ChecksumJob,
    ChecksumOptions,
    checksum_items,
)

OWN_OPTIONS = {
    "snap_prefix": {"type": "str", "default": "backup"},
    "live_cluster": {"type": "str"},
    "items": {"type": "list", "elements": "dict", "default": []},
    "images": {"type": "list", "elements": "str", "default": []},
    "hasher": {"type": "list", "elements": "str", "default": ["xxhsum"]},
    "sample": {"type": "int", "default": 100},
    "workers": {"type": "int", "default": 2},
    "set_aside": {"type": "bool", "default": True},
    "lock_ttl": {"type": "str", "default": "6h"},
    "state_dir": {"type": "path"},
}


def main() -> None:
    module = create_module("checksum", OWN_OPTIONS, groups=("ceph", "ssh", "pool_pair", "batch"))
    p = module.params

    def job() -> dict:
        options = ChecksumOptions.of(p, lock_ttl_option("checksum", p["lock_ttl"]), module.check_mode)
        items = checksum_items(p)
        backup, live = backup_and_live_runners(p)
        return ChecksumJob(live, backup, items, options, warn=module.ansible.warn).run()

    module.run(job)


if __name__ == "__main__":
    main()
