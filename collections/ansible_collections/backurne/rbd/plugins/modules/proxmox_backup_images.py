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
  pool:
    description: Backup pool.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside O(pool).
    type: str
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

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import CEPH_ARGS, ceph_access
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import parse_backup_image_name
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discovery import (
    META_CLUSTER,
    META_CONFIG,
    META_DISK,
    META_NAME,
    META_PENDING,
    META_TYPE,
    META_VMID,
    Coverage,
    kept_warning,
    renames,
    vanished_fate,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            "live_cluster": {"type": "str", "required": True},
            "pool": {"type": "str", "default": "rbd"},
            "namespace": {"type": "str"},
            "disks": {"type": "list", "elements": "dict", "required": True},
            "transfers": {"type": "list", "elements": "dict"},
            "coverage": {"type": "dict"},
            "workers": {"type": "int", "default": 4},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["workers"] < 1:
        module.fail_json(msg=f"proxmox_backup_images: workers must be at least 1, got {p['workers']}")
    runner = RbdRunner(ceph_access(p))
    pool, ns = p["pool"], p["namespace"]
    where = pool + (f"/{ns}" if ns else "")
    try:
        listing = runner.list_images(pool, ns)
    except RbdError as exc:
        module.fail_json(msg=f"backup pool {where}: cannot list images: {exc}")
    failed: list[dict[str, str]] = []
    result: dict[str, Any] = {"changed": False, "renamed": {}, "meta_written": []}

    if p["transfers"] is None:
        for old, new in sorted(renames(p["disks"], listing).items()):
            if not module.check_mode:
                try:
                    runner.run(
                        ["rename", *ImageSpec(pool, ns, old).options(), f"--dest-pool={pool}"]
                        + ([f"--dest-namespace={ns}"] if ns else [])
                        + [f"--dest={new}"]
                    )
                except RbdError as exc:
                    failed.append({"image": old, "error": f"backup image {old!r}: rename to {new!r}: {exc}"})
                    continue
            listing[new] = listing.pop(old)
            result["renamed"][old] = new
        result["changed"] = bool(result["renamed"])
    else:
        by_backup = {disk["backup_image"]: disk for disk in p["disks"]}
        sent = sorted(
            {r.get("backup_image") for r in p["transfers"] if r.get("ok") and r.get("snapshots")} & set(by_backup)
        )

        def write(name: str) -> str | None:
            disk = by_backup[name]
            guest = disk.get("guest") or {}
            meta = {
                META_CONFIG: json.dumps(disk.get("config") or {}, sort_keys=True),
                META_PENDING: json.dumps(disk.get("pending") or {}, sort_keys=True),
                META_VMID: str(guest.get("vmid", "")),
                META_NAME: str(guest.get("name", "")),
                META_TYPE: str(guest.get("type", "")),
                META_DISK: str(disk.get("disk", "")),
                META_CLUSTER: p["live_cluster"],
            }
            spec = ImageSpec(pool, ns, name)
            try:
                # One read (in process when the node can), then only what changed: a guest's
                # config rarely changes between runs.
                current = runner.image_meta(spec)
                for key, value in meta.items():
                    if current.get(key) != value:
                        runner.run(["image-meta", "set", *spec.options(), key, value])
            except RbdError as exc:
                return f"backup image {name!r}: saving the guest config: {exc}"
            return None

        if not module.check_mode:
            for name, error in zip(sent, run_batch(sent, write, p["workers"]), strict=True):
                if error:
                    failed.append({"image": name, "error": error})
        result["meta_written"] = [name for name in sent if name not in {f["image"] for f in failed}]
        result["changed"] = bool(result["meta_written"])

        # Vanished guests: their images are found by the cluster recorded in their metadata.
        others = [
            name for name in sorted(listing) if name not in by_backup and parse_backup_image_name(name) is not None
        ]

        def metadata(name: str) -> dict[str, str]:
            # One omap read in process per image (the backup pool may hold thousands of other
            # clusters' images); `rbd image-meta list` where python3-rados is missing.
            try:
                return runner.image_meta(ImageSpec(pool, ns, name))
            except RbdError:
                return {}  # gone meanwhile: not ours to keep

        metas = run_batch(others, metadata, p["workers"])
        cover = Coverage.from_dict(p["coverage"])
        owned: dict[str, str | None] = {name: name for name in by_backup if name in listing}
        kept: list[dict[str, Any]] = []
        for name, meta in zip(others, metas, strict=True):
            if meta.get(META_CLUSTER) != p["live_cluster"]:
                continue
            gone, why, guest = vanished_fate(meta, cover)
            if gone:
                owned[name] = None
                continue
            # Outside the run's limit is what the operator asked for: no warning.
            warn = guest["vmid"] is None or guest["vmid"] not in cover.unselected
            kept.append({"image": name, **guest, "reason": why, "warn": warn})
            if warn:
                module.warn(kept_warning(name, guest, str(why)))
        result["owned"] = owned
        result["kept"] = kept
    result["snapshots"] = listing
    result["failed_images"] = failed
    module.exit_json(**result)


if __name__ == "__main__":
    main()
