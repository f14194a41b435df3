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
  - backurne.rbd.pool_pair
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
  fail_on_error:
    description: Fail the task on a mismatch or an error.
    type: bool
    default: true
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
      description: Live image name.
      type: str
    backup_image:
      description: Backup image name.
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

import random
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    POOL_PAIR_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, backup_image_name_for_plain
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    newest_shared,
    parse_duration,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import record_set_aside
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import (
    ChecksumResult,
    SetAside,
    compare_snapshot,
    set_aside_mismatches,
    set_aside_note,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **SSH_ARGS,
            **POOL_PAIR_ARGS,
            "snap_prefix": {"type": "str", "default": "backup"},
            "live_cluster": {"type": "str"},
            "items": {"type": "list", "elements": "dict", "default": []},
            "images": {"type": "list", "elements": "str", "default": []},
            "hasher": {"type": "list", "elements": "str", "default": ["xxhsum"]},
            "sample": {"type": "int", "default": 100},
            "workers": {"type": "int", "default": 2},
            "fail_on_error": {"type": "bool", "default": True},
            "set_aside": {"type": "bool", "default": True},
            "lock_ttl": {"type": "str", "default": "6h"},
            "state_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        lock_ttl = parse_duration(p["lock_ttl"])
    except PolicyError as exc:
        module.fail_json(msg=f"checksum: lock_ttl: {exc}")
    if p["workers"] < 1:
        module.fail_json(msg=f"checksum: workers must be at least 1, got {p['workers']}")
    if not p["hasher"]:
        module.fail_json(msg="checksum: hasher must name a command")
    if p["images"] and not p["live_cluster"]:
        module.fail_json(msg="checksum: 'images' needs 'live_cluster' to derive the backup image names")
    items: list[dict[str, Any]] = []
    for index, item in enumerate(p["items"]):
        if not isinstance(item.get("image"), str) or not isinstance(item.get("backup_image"), str):
            module.fail_json(msg=f"checksum: items[{index}] needs 'image' and 'backup_image'")
        # An item's own source (Proxmox disks live in several pools) wins over the options, as
        # in the transfer module; its namespace goes with its pool.
        source_pool, source_ns = p["source_pool"], p["source_namespace"]
        if item.get("source_pool") is not None:
            source_pool, source_ns = item["source_pool"], item.get("source_namespace")
        if not isinstance(source_pool, str) or not isinstance(source_ns, (str, type(None))):
            module.fail_json(
                msg=f"checksum: items[{index}] ({item['image']!r}): source_pool must be a string "
                "and source_namespace a string or null"
            )
        try:
            ImageSpec(source_pool, source_ns or None, item["image"])  # names rbd can address, before any call
        except ValueError as exc:
            module.fail_json(msg=f"checksum: items[{index}] ({item['image']!r}): {exc}")
        items.append(
            {
                "image": item["image"],
                "backup_image": item["backup_image"],
                "snapshot": item.get("snapshot"),
                "source_pool": source_pool,
                "source_namespace": source_ns or None,
                # What the transfer sent this run (RV(backurne.rbd.transfer#module:images)): not
                # confirmed as long as its newest could not be compared.
                "_sent": [str(name) for name in item.get("snapshots") or []],
            }
        )
    for image in p["images"]:
        try:
            items.append(
                {
                    "image": image,
                    "backup_image": backup_image_name_for_plain(p["live_cluster"], image),
                    "snapshot": None,
                    "source_pool": p["source_pool"],
                    "source_namespace": p["source_namespace"],
                    "_sent": [],
                }
            )
        except NamingError as exc:
            module.fail_json(msg=f"checksum: image {image!r}: {exc}")

    if not 1 <= p["sample"] <= 100:
        module.fail_json(msg=f"checksum: sample must be a percentage from 1 to 100, got {p['sample']}")
    if p["sample"] < 100 and items:
        # Reading every byte of every image twice is the cost of a verify run: spread it.
        items = random.sample(items, max(1, len(items) * p["sample"] // 100))

    backup = RbdRunner(ceph_access(p))
    live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
    unknown = [item for item in items if item["snapshot"] is None]
    if unknown:
        # One listing per side and live pool for the whole batch, not one per image.
        sources = sorted({(item["source_pool"], item["source_namespace"] or "") for item in unknown})
        live_listings: dict[tuple[str, str], dict[str, list[str]]] = {}
        try:
            for source_pool, source_ns in sources:
                live_listings[(source_pool, source_ns)] = live.list_images(source_pool, source_ns or None)
            backup_listing = backup.list_images(p["pool"], p["namespace"])
        except RbdError as exc:
            module.fail_json(msg=f"checksum: cannot list images: {exc}")
        for item in unknown:
            live_listing = live_listings[(item["source_pool"], item["source_namespace"] or "")]
            if item["image"] not in live_listing:
                item["skipped"] = f"image {item['image']!r} no longer exists on live: nothing to compare"
            else:
                shared = newest_shared(
                    live_listing[item["image"]],
                    backup_listing.get(item["backup_image"], []),
                    p["snap_prefix"],
                )
                item["snapshot"] = shared.name if shared else None

    prefix = p["snap_prefix"] + ";"

    def compare(item: dict[str, Any], snapshot: str) -> ChecksumResult:
        return compare_snapshot(
            live,
            backup,
            ImageSpec(item["source_pool"], item["source_namespace"], item["image"]),
            ImageSpec(p["pool"], p["namespace"], item["backup_image"]),
            snapshot,
            hasher=p["hasher"],
        )

    def confirmed_listing(item: dict[str, Any], unconfirmed: list[str]) -> list[str]:
        # What live-side expiry may count as backed up; unreadable -> nothing (it then keeps all).
        try:
            names = backup.snapshot_names(ImageSpec(p["pool"], p["namespace"], item["backup_image"]))
        except (RbdError, ValueError):
            return []
        return [name for name in names if name not in unconfirmed]

    def set_aside(item: dict[str, Any], result: dict[str, Any], compared: ChecksumResult) -> None:
        outcome: SetAside = set_aside_mismatches(
            live,
            backup,
            ImageSpec(item["source_pool"], item["source_namespace"], item["image"]),
            ImageSpec(p["pool"], p["namespace"], item["backup_image"]),
            item["snapshot"],
            prefix,
            lambda snapshot: compare(item, snapshot),
            lock_ttl,
            remove=not module.check_mode,
        )
        note = set_aside_note(item["backup_image"], compared, outcome)
        result.update(set_aside=outcome.removed, confirmed_base=outcome.confirmed, note=note)
        result["error"] += "; " + note
        if outcome.listing is not None:
            result["_listing"] = outcome.listing
            result["_confirmed"] = [name for name in outcome.listing if name not in outcome.unconfirmed()]
        else:
            result["_confirmed"] = []  # unknown: live-side expiry keeps everything of this image

    def check(item: dict[str, Any]) -> dict[str, Any]:
        result = {
            "skipped": None,
            **item,
            "live": None,
            "backup": None,
            "match": False,
            "error": None,
            "set_aside": [],
            "confirmed_base": None,
            "note": None,
        }
        if item.get("skipped"):
            return result
        if item["snapshot"] is None:
            result["error"] = f"image {item['image']!r}: no snapshot shared by live and backup"
            return result
        compared = compare(item, item["snapshot"])
        result.update(live=compared.live, backup=compared.backup, match=compared.match, error=compared.error)
        if compared.match:
            return result
        # compare_snapshot's error does not say which image: the run's failure message must.
        result["error"] = (
            f"image {item['image']!r} (backup image {item['backup_image']!r}) snapshot {item['snapshot']!r}: "
            + (compared.error or f"checksums differ (live {compared.live}, backup {compared.backup})")
        )
        if compared.live is not None and compared.backup is not None:
            if p["set_aside"]:
                set_aside(item, result, compared)
        else:
            # Not compared: what this run sent (or the snapshot itself) is not confirmed.
            result["_confirmed"] = confirmed_listing(item, item["_sent"] or [item["snapshot"]])
        return result

    def on_error(item: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        return {
            "skipped": None,
            **item,
            "live": None,
            "backup": None,
            "match": False,
            "error": f"image {item['image']!r}: {exc}",
            "set_aside": [],
            "confirmed_base": None,
            "note": None,
            "_confirmed": [],
        }

    results = run_batch(items, check, p["workers"], on_error=on_error)
    backup_snapshots: dict[str, list[str]] = {}
    confirmed_snapshots: dict[str, list[str]] = {}
    for result in results:
        result.pop("_sent", None)
        listing, confirmed = result.pop("_listing", None), result.pop("_confirmed", None)
        if listing is not None and result["set_aside"] and not module.check_mode:
            backup_snapshots[result["backup_image"]] = listing
        if confirmed is not None:
            confirmed_snapshots[result["backup_image"]] = confirmed
    differed = [r for r in results if r["live"] is not None and r["backup"] is not None and not r["match"]]
    if differed and not module.check_mode:
        # The check (same node) reports the event until a later successful transfer of the image.
        problem = record_set_aside(state_dir(p["state_dir"]), differed, parse_now(None))
        if problem:
            module.warn(problem)
    mismatched = [r["image"] for r in results if not r["match"] and not r["skipped"]]
    output = {
        "changed": any(r["set_aside"] for r in results),
        "images": results,
        "mismatched": mismatched,
        "backup_snapshots": backup_snapshots,
        "confirmed_snapshots": confirmed_snapshots,
    }
    if mismatched and p["fail_on_error"]:
        module.fail_json(msg="; ".join(r["error"] or r["image"] for r in results if r["image"] in mismatched), **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
