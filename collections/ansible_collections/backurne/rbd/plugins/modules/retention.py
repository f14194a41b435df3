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
  shard_index:
    description:
      - With O(shard_count) > 1, expire only the images of this shard (keyed by backup image
        name, as the transfer module's O(backurne.rbd.transfer#module:shard_index)).
    type: int
    default: 0
  shard_count:
    description: Number of backup nodes splitting the images (1 = all images).
    type: int
    default: 1
  workers:
    description: Images handled at once.
    type: int
    default: 4
  fail_on_error:
    description: Fail the task when an image failed (the others are still handled).
    type: bool
    default: true
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

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.holds import holds_of
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    BACKUP_NODE,
    CEPH_ARGS,
    POLICY_ARGS,
    ceph_access,
    live_cluster_owner,
    parse_duration_or_zero,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import HOLD_KEY_PREFIX, apply_holds
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    backup_image_name_for_plain,
    parse_backup_image_name,
    validate_prefix,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    backup_expiry,
    live_expiry,
    parse_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import in_shard


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **POLICY_ARGS,
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
            "shard_index": {"type": "int", "default": 0},
            "shard_count": {"type": "int", "default": 1},
            "workers": {"type": "int", "default": 4},
            "fail_on_error": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        prefix = validate_prefix(p["snap_prefix"])
        profiles = parse_profiles(p["profiles"])
        now = parse_now(p["now"])
        extra = parse_duration_or_zero(p["extra_retention_time"])
    except (NamingError, PolicyError, ValueError) as exc:
        module.fail_json(msg=f"retention: bad input: {exc}")
    if p["keep_min"] < 0:
        module.fail_json(msg=f"retention: keep_min must be >= 0, got {p['keep_min']}")
    if p["workers"] < 1:
        module.fail_json(msg=f"retention: workers must be at least 1, got {p['workers']}")
    if p["shard_count"] < 1 or not 0 <= p["shard_index"] < p["shard_count"]:
        module.fail_json(
            msg=f"retention: shard_index must be in 0..shard_count-1 and shard_count >= 1, "
            f"got shard_index={p['shard_index']} shard_count={p['shard_count']}"
        )

    owner = BACKUP_NODE if p["side"] == "backup" else live_cluster_owner(p["live_cluster"])
    runner = RbdRunner(ceph_access(p, owner=owner))
    where = f"{p['side']} pool {p['pool']}" + (f"/{p['namespace']}" if p["namespace"] else "")
    listing: dict[str, list[str]]
    metas: dict[str, dict[str, str]] | None = None  # the holds' image-meta, when listed here
    if p["snapshots"] is not None:
        listing = {str(image): [str(name) for name in snaps or []] for image, snaps in p["snapshots"].items()}
    else:
        try:
            if p["side"] == "backup":  # holds come with the listing, from the headers it reads
                listing, metas = runner.list_images_with_meta(p["pool"], p["namespace"], HOLD_KEY_PREFIX)
            else:
                listing = runner.list_images(p["pool"], p["namespace"])
        except RbdError as exc:
            module.fail_json(msg=f"retention on {where}: cannot list images: {exc}")

    other: dict[str, list[str]] = p["other_snapshots"]
    image_map: dict[str, str | None] | None = p["image_map"]
    assumed: dict[str, list[str]] = p["assume_present"]
    assumed_other: dict[str, list[str]] = p["assume_present_other"]
    plans: list[dict[str, Any]] = []
    for image, snaps in sorted(listing.items()):
        real = set(snaps)
        own = [*snaps, *assumed.get(image, [])]
        if p["side"] == "live":
            try:
                if image_map is not None:
                    if image not in image_map:
                        continue  # not one of the disks this run backs up
                    backup_image = str(image_map[image])
                else:
                    backup_image = backup_image_name_for_plain(p["live_cluster"], image)
            except NamingError:
                continue  # never backed up (the snapshot module reports why)
            if not in_shard(backup_image, p["shard_index"], p["shard_count"]):
                continue
            other_names = [*other.get(backup_image, []), *assumed_other.get(backup_image, [])]
            delete = live_expiry(own, other_names, profiles, prefix)
            remove, kept = False, {}
        else:
            parsed = parse_backup_image_name(image)
            if image_map is not None:
                # Proxmox: membership and source come from the map (IDENT is not the cluster).
                if parsed is None or image not in image_map:
                    continue
                source_key = image_map[image]
            elif parsed is None or parsed.ident != p["live_cluster"]:
                continue  # not a backup of this live cluster: not ours to expire
            else:
                source_key = parsed.disk
            if not in_shard(image, p["shard_index"], p["shard_count"]):
                continue  # another backup node's share
            source_exists = source_key is not None and (source_key in other or source_key in assumed_other)
            live_names = [*other.get(source_key, []), *assumed_other.get(source_key, [])] if source_key else []
            expiry = backup_expiry(
                own,
                profiles,
                prefix,
                now,
                source_exists=source_exists,
                live_snap_names=live_names,
                extra_retention_time=extra,
                keep_min=p["keep_min"],
            )
            if expiry.delete or expiry.remove_image:  # a hold only matters where something would go
                holds = holds_of(runner, ImageSpec(p["pool"], p["namespace"], image), metas)
                expiry = apply_holds(expiry, holds, now)
            delete, remove, kept = expiry.delete, expiry.remove_image, expiry.kept_reasons
        # Defence in depth: whatever the policy says, only real snapshots of ours are deleted.
        delete = [name for name in delete if name in real and name.startswith(prefix + ";")]
        if remove and any(not name.startswith(prefix + ";") for name in snaps):
            remove = False
        if delete or remove:
            plans.append({"image": image, "deleted": delete, "removed": remove, "kept": kept, "error": None})

    def expire(plan: dict[str, Any]) -> dict[str, Any]:
        done: list[str] = []
        try:
            for snap in plan["deleted"]:
                try:
                    runner.snap_remove(ImageSpec(p["pool"], p["namespace"], plan["image"], snap))
                except RbdError as exc:
                    # From a listing taken earlier in the run: already gone is what we wanted.
                    if not (p["snapshots"] is not None and exc.is_not_found):
                        raise
                done.append(snap)
            if plan["removed"]:
                runner.remove(ImageSpec(p["pool"], p["namespace"], plan["image"]))
        except RbdError as exc:
            plan.update(deleted=done, removed=False, error=f"image {plan['image']!r} on {where}: {exc}")
        return plan

    def on_error(plan: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        plan.update(error=f"image {plan['image']!r} on {where}: {exc}")
        return plan

    if not module.check_mode:
        run_batch(plans, expire, p["workers"], on_error=on_error)

    result: dict[str, Any] = {
        "changed": any(plan["deleted"] or plan["removed"] for plan in plans),
        "images": plans,
        "failed_images": [{"image": plan["image"], "error": plan["error"]} for plan in plans if plan["error"]],
    }
    if module._diff:
        result["diff"] = {
            # In Ceph's creation order, as listed.
            "before": {plan["image"]: list(listing[plan["image"]]) for plan in plans},
            "after": {
                plan["image"]: []
                if plan["removed"]
                else [name for name in listing[plan["image"]] if name not in plan["deleted"]]
                for plan in plans
            },
        }
    if result["failed_images"] and p["fail_on_error"]:
        module.fail_json(msg="; ".join(item["error"] for item in result["failed_images"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
