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
  - Read-only. A mismatch or an error is reported per image; the others are still checked.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.ssh
  - backurne.rbd.pool_pair
attributes:
  check_mode:
    support: full
    description: Read-only; hashes in check mode too.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
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
  sample:
    - {image: web1, backup_image: "prod1;web1;None", snapshot: "backup;daily;30;2026-11-29T10:00:00.000000",
       live: "b1946ac92492d234", backup: "b1946ac92492d234", match: true, error: null}
mismatched:
  description: Images whose hashes differ or could not be compared.
  returned: always
  type: list
  elements: str
"""

import random
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.args import (
    CEPH_ARGS,
    POOL_PAIR_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
)
from ansible_collections.backurne.rbd.plugins.module_utils.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.checksum import compare_snapshot
from ansible_collections.backurne.rbd.plugins.module_utils.naming import NamingError, backup_image_name_for_plain
from ansible_collections.backurne.rbd.plugins.module_utils.policy import newest_shared
from ansible_collections.backurne.rbd.plugins.module_utils.rbd import ImageSpec, RbdError, RbdRunner


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
        },
        supports_check_mode=True,
    )
    p = module.params
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

    def check(item: dict[str, Any]) -> dict[str, Any]:
        result = {"skipped": None, **item, "live": None, "backup": None, "match": False, "error": None}
        if item.get("skipped"):
            return result
        if item["snapshot"] is None:
            result["error"] = f"image {item['image']!r}: no snapshot shared by live and backup"
            return result
        compared = compare_snapshot(
            live,
            backup,
            ImageSpec(item["source_pool"], item["source_namespace"], item["image"]),
            ImageSpec(p["pool"], p["namespace"], item["backup_image"]),
            item["snapshot"],
            hasher=p["hasher"],
        )
        result.update(live=compared.live, backup=compared.backup, match=compared.match, error=compared.error)
        if not compared.match:
            # compare_snapshot's error does not say which image: the run's failure message must.
            result["error"] = (
                f"image {item['image']!r} (backup image {item['backup_image']!r}) snapshot {item['snapshot']!r}: "
                + (compared.error or f"checksums differ (live {compared.live}, backup {compared.backup})")
            )
        return result

    def on_error(item: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        return {**item, "live": None, "backup": None, "match": False, "error": f"image {item['image']!r}: {exc}"}

    results = run_batch(items, check, p["workers"], on_error=on_error)
    mismatched = [r["image"] for r in results if not r["match"] and not r["skipped"]]
    output = {"changed": False, "images": results, "mismatched": mismatched}
    if mismatched and p["fail_on_error"]:
        module.fail_json(msg="; ".join(r["error"] or r["image"] for r in results if r["image"] in mismatched), **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
