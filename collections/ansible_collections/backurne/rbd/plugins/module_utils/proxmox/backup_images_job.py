# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The backup-side bookkeeping of a Proxmox VE live cluster (the module
# backurne.rbd.proxmox_backup_images): before the transfers, follow guest renames; after them,
# save each guest's config beside its disks and say which backup images are this cluster's, an
# image of a vanished guest handed to expiry only when the discovery's coverage proves it gone.
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure, list_pool
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


def guest_meta(disk: Mapping[str, Any], cluster: str) -> dict[str, str]:
    """The image metadata that lets a restore recreate the disk's guest."""
    guest = disk.get("guest") or {}
    return {
        META_CONFIG: json.dumps(disk.get("config") or {}, sort_keys=True),
        META_PENDING: json.dumps(disk.get("pending") or {}, sort_keys=True),
        META_VMID: str(guest.get("vmid", "")),
        META_NAME: str(guest.get("name", "")),
        META_TYPE: str(guest.get("type", "")),
        META_DISK: str(disk.get("disk", "")),
        META_CLUSTER: cluster,
    }


@dataclass
class BackupImagesJob:
    """The whole proxmox_backup_images step; ``warn`` receives the warnings."""

    p: Mapping[str, Any]
    runner: RbdRunner
    check_mode: bool
    warn: Callable[[str], None]
    failed: list[dict[str, str]] = field(default_factory=list)  # images whose rename or metadata failed

    @property
    def pool(self) -> str:
        return str(self.p["pool"])

    @property
    def ns(self) -> str | None:
        return self.p["namespace"]

    def spec(self, name: str) -> ImageSpec:
        return ImageSpec(self.pool, self.ns, name)

    def follow_renames(self, listing: dict[str, list[str]]) -> dict[str, Any]:
        renamed: dict[str, str] = {}
        dest = [f"--dest-pool={self.pool}"] + ([f"--dest-namespace={self.ns}"] if self.ns else [])
        for old, new in sorted(renames(self.p["disks"], listing).items()):
            if not self.check_mode:
                try:
                    self.runner.run(["rename", *self.spec(old).options(), *dest, f"--dest={new}"])
                except RbdError as exc:
                    self.failed.append({"image": old, "error": f"backup image {old!r}: rename to {new!r}: {exc}"})
                    continue
            listing[new] = listing.pop(old)
            renamed[old] = new
        return {"changed": bool(renamed), "renamed": renamed, "meta_written": []}

    def write_meta(self, disk: Mapping[str, Any]) -> str | None:
        name = disk["backup_image"]
        spec = self.spec(name)
        try:
            # One read (in process when the node can), then only what changed: a guest's
            # config rarely changes between runs.
            current = self.runner.image_meta(spec)
            for key, value in guest_meta(disk, self.p["live_cluster"]).items():
                if current.get(key) != value:
                    self.runner.run(["image-meta", "set", *spec.options(), key, value])
        except RbdError as exc:
            return f"backup image {name!r}: saving the guest config: {exc}"
        return None

    def metadata(self, name: str) -> dict[str, str]:
        # One omap read in process per image (the backup pool may hold thousands of other
        # clusters' images); `rbd image-meta list` where python3-rados is missing.
        try:
            return self.runner.image_meta(self.spec(name))
        except RbdError:
            return {}  # gone meanwhile: not ours to keep

    def ownership(self, listing: dict[str, list[str]], by_backup: Mapping[str, Any]) -> dict[str, Any]:
        """Which images are this cluster's; vanished guests' images found by their metadata."""
        others = [
            name for name in sorted(listing) if name not in by_backup and parse_backup_image_name(name) is not None
        ]
        metas = run_batch(others, self.metadata, self.p["workers"])
        cover = Coverage.from_dict(self.p["coverage"])
        owned: dict[str, str | None] = {name: name for name in by_backup if name in listing}
        kept: list[dict[str, Any]] = []
        for name, meta in zip_strict(others, metas):
            if meta.get(META_CLUSTER) != self.p["live_cluster"]:
                continue
            gone, why, guest = vanished_fate(meta, cover)
            if gone:
                owned[name] = None
                continue
            # Outside the run's limit is what the operator asked for: no warning.
            warn = guest["vmid"] is None or guest["vmid"] not in cover.unselected
            kept.append({"image": name, **guest, "reason": why, "warn": warn})
            if warn:
                self.warn(kept_warning(name, guest, str(why)))
        return {"owned": owned, "kept": kept}

    def save_configs(self, listing: dict[str, list[str]]) -> dict[str, Any]:
        by_backup = {disk["backup_image"]: disk for disk in self.p["disks"]}
        transfers = self.p["transfers"]
        sent = sorted({r.get("backup_image") for r in transfers if r.get("ok") and r.get("snapshots")} & set(by_backup))
        if not self.check_mode:
            errors = run_batch([by_backup[name] for name in sent], self.write_meta, self.p["workers"])
            self.failed.extend({"image": name, "error": error} for name, error in zip_strict(sent, errors) if error)
        failed_names = {f["image"] for f in self.failed}
        written = [name for name in sent if name not in failed_names]
        return {"changed": bool(written), "renamed": {}, "meta_written": written, **self.ownership(listing, by_backup)}

    def __call__(self) -> dict[str, Any]:
        if self.p["workers"] < 1:
            raise ModuleFailure(f"proxmox_backup_images: workers must be at least 1, got {self.p['workers']}")
        listing = list_pool(self.runner, self.pool, self.ns, "backup")
        # Without transfers this is the run's start (renames), with them its end (configs, owners).
        result = self.follow_renames(listing) if self.p["transfers"] is None else self.save_configs(listing)
        return {**result, "snapshots": listing, "failed_images": self.failed}
