#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: retention
short_description: Expire backurne snapshots on the live or the backup cluster
version_added: 0.1.0
description:
  - Newest and older are Ceph's creation order (the listings' order); a snapshot's age and expiry
    come from the time in its name (see C(docs/faults.md), "Snapshot order").
  - O(side=live) runs on a live node. Per image it keeps the newest snapshot shared with the
    backup cluster and everything newer, the newest C(max_on_live) older ones per profile, and
    deletes the rest of backurne's snapshots. Without a shared snapshot nothing is deleted.
  - O(side=backup) runs on a backup node. It deletes backurne's snapshots past their expiry
    (creation + count x interval), never the newest one while the source image exists, never the
    newest one shared with live, never below O(keep_min). When the source image is gone the last
    snapshot is kept O(extra_retention_time) past its expiry, then the backup image is removed.
  - O(side=backup) never deletes a held snapshot (image-meta C(backurne.hold.SNAPSHOT) on the
    backup image, set by C(backurne hold), the REST API, the web console or C(playbooks/hold.yml)),
    nor removes an image holding one; a hold past its C(until) counts as released.
  - Only snapshots whose name starts with C(PREFIX;) are ever deleted; images whose name is not a
    backup image name of O(live_cluster) are never touched.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.policy
  - backurne.rbd.batch
  - backurne.rbd.shard
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Returns what would be deleted and deletes nothing.
  diff_mode:
    support: full
    description: Shows each changed image's snapshot set before and after.
options:
  side:
    description: Which cluster this node serves.
    type: str
    choices: [live, backup]
    required: true
  live_cluster:
    description: Name of the live cluster (first field of its backup image names).
    type: str
    required: true
  pool:
    description: Pool on this side (the live pool, or the backup pool).
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside O(pool).
    type: str
  other_snapshots:
    description:
      - Snapshot names per image on the other side.
      - For O(side=live), per backup image, as RV(backurne.rbd.info#module:snapshots) returns them.
      - For O(side=backup), per live image, for all images of the live pool, as
        RV(backurne.rbd.snapshot#module:live_snapshots) returns them. An image missing from it
        counts as deleted on live.
    type: dict
    required: true
  assume_present:
    description:
      - Snapshot names per image of this side to assume present although they are not (yet).
        Used in check mode to predict expiry after the snapshots and transfers the run would make.
        Assumed snapshots are never deleted.
    type: dict
    default: {}
  assume_present_other:
    description: Like O(assume_present), for the other side.
    type: dict
    default: {}
  extra_retention_time:
    description:
      - For O(side=backup), how long past its expiry the last snapshot of an image whose source was
        deleted is kept (a duration such as C(7d), or seconds).
    type: str
    default: "0"
  keep_min:
    description:
      - For O(side=backup), the number of newest snapshots per image never deleted by age while the
        source exists, so failing backups cannot erase an image's history.
    type: int
    default: 1
  snapshots:
    description:
      - Snapshot names per image of this side, as the run already knows them (the snapshot
        module's RV(backurne.rbd.snapshot#module:live_snapshots) for O(side=live), the backup
        listing merged with the transfer module's RV(backurne.rbd.transfer#module:backup_snapshots)
        for O(side=backup)). When given, the pool is not listed again (C(rbd ls -l) opens every
        image). A snapshot already gone when it is deleted counts as deleted.
      - Every list, here and in O(other_snapshots), in Ceph's creation order (snapshot id
        ascending, oldest first), as the modules return them. The order says which snapshot is
        newest, never the time in its name.
    type: dict
  image_map:
    description:
      - Which images this run owns, for clusters whose backup image names do not start with the
        cluster name (Proxmox VE). Only the images it names are considered.
      - For O(side=live), live image name to backup image name.
      - For O(side=backup), backup image name to the key of its source in O(other_snapshots), or
        null when the source is gone (as RV(backurne.rbd.proxmox_backup_images#module:owned) returns it).
    type: dict
"""

EXAMPLES = r"""
- name: Expire backups on the backup cluster
  backurne.rbd.retention:
    side: backup
    live_cluster: prod1
    pool: backups
    profiles: "{{ backurne_profiles }}"
    other_snapshots: "{{ snap.live_snapshots }}"
    keep_min: 2
    extra_retention_time: 7d
"""

RETURN = r"""
images:
  description: Images with something deleted (or to delete in check mode), or failed.
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: Image name on this side.
      type: str
    deleted:
      description: Snapshots deleted (to delete in check mode).
      type: list
      elements: str
    removed:
      description: Whether the (backup) image itself was removed (to remove in check mode).
      type: bool
    kept:
      description: For O(side=backup), why each remaining snapshot of ours was kept.
      type: dict
    error:
      description: Why the image failed.
      type: str
  sample:
    - {image: "prod1;web1;None", deleted: ["backup;daily;7;2026-11-01T10:00:00.000000"], removed: false, kept: {}, error: null}
failed_images:
  description: Images that failed, with the reason.
  returned: always
  type: list
  elements: dict
"""


from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    BACKUP_NODE,
    ceph_access,
    live_cluster_owner,
    parse_duration_or_zero,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.policy.expiry_job import (
    ExpiryJob,
    ExpiryPolicy,
    ExpiryRun,
    OtherSide,
    given_listing,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError

OWN_OPTIONS = {
    "side": {"type": "str", "choices": ["live", "backup"], "required": True},
    "live_cluster": {"type": "str", "required": True},
    "pool": {"type": "str", "default": "rbd"},
    "namespace": {"type": "str"},
    "other_snapshots": {"type": "dict", "required": True},
    "assume_present": {"type": "dict", "default": {}},
    "assume_present_other": {"type": "dict", "default": {}},
    "extra_retention_time": {"type": "str", "default": "0"},
    "keep_min": {"type": "int", "default": 1},
    "snapshots": {"type": "dict"},
    "image_map": {"type": "dict"},
}


def main() -> None:
    module = create_module("retention", OWN_OPTIONS, groups=("ceph", "policy", "batch", "shard"))
    p, shared = module.params, module.shared
    try:
        extra = parse_duration_or_zero(p["extra_retention_time"])
    except (PolicyError, ValueError) as exc:
        module.fail(f"bad input: {exc}")
    if p["keep_min"] < 0:
        module.fail(f"keep_min must be >= 0, got {p['keep_min']}")
    policy = ExpiryPolicy(
        side=p["side"],
        live_cluster=p["live_cluster"],
        prefix=shared.prefix,
        profiles=shared.profiles,
        now=shared.now,
        extra_retention_time=extra,
        keep_min=p["keep_min"],
        shard_index=shared.shard_index,
        shard_count=shared.shard_count,
    )
    other = OtherSide(p["other_snapshots"], p["assume_present"], p["assume_present_other"], p["image_map"])
    how = ExpiryRun(p["pool"], p["namespace"], p["workers"], p["fail_on_error"], module.check_mode, module.diff_mode)
    owner = BACKUP_NODE if p["side"] == "backup" else live_cluster_owner(p["live_cluster"])
    runner = RbdRunner(ceph_access(p, owner=owner))
    module.run(ExpiryJob(runner, given_listing(p["snapshots"]), other, policy, how).run)


if __name__ == "__main__":
    main()
