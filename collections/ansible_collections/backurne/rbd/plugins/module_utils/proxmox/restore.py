# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxmox VE restores: a backup as a new disk of a guest, or a whole guest recreated.

Pure logic, no Ansible, no server: disk-name allocation as PVE does it and the rewriting of a
saved guest config into the config of a new guest. The module ``proxmox_restore`` moves the
data (``restore.restore_snapshot``) and calls the API.

Why the rewriting (recreate):

* ``smbios1`` gets a new ``uuid``: the uuid is the guest's identity for the guest OS (licences,
  cloud-init instance id) and for backurne itself (IDENT of the backup image names with
  ``use_smbios``): two guests sharing it would write their backups into the same backup images,
  each run taking the other's snapshot as its incremental base.
* ``netN`` loses its MAC (``macaddr=`` and the ``MODEL=MAC`` short form; ``hwaddr=`` for
  containers): PVE generates a new one. Two NICs with one MAC on a bridge break both guests.
* ``vmgenid`` becomes ``1`` (PVE generates a new generation id: the guest OS learns it is a copy).
* Every restored disk references its new image ``vm-<NEWVMID>-disk-<N>``; disks that were not
  backed up (non-RBD storages, ``backup=0``) are dropped with a warning (the operator adds them
  empty); cdroms become ``none,media=cdrom`` (the ISO may not exist any more), a cloud-init drive
  is asked anew from its storage (``STORAGE:cloudinit``, PVE regenerates it from the ci* options).
* Dropped: ``digest``, ``parent``, ``lock``, ``meta``, ``template``, ``unusedN`` and the
  snapshot bookkeeping; the ``boot`` order loses the dropped devices.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discovery import (
    ProxmoxConfigError,
    RbdStorage,
    guest_disks,
    parse_property_string,
    split_volume,
)

MAX_UNUSED = 255  # unused0..unused255 (qemu-server MAX_UNUSED_DISKS)
_QEMU_DISK_KEY_RE = re.compile(r"(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0")
_NET_KEY_RE = re.compile(r"net\d+")
# The keys PVE keeps for itself or that must not come back on a new guest.
_DROPPED_KEYS = {"digest", "parent", "lock", "meta", "template", "snaptime", "vmstate", "runningmachine", "runningcpu"}
# qemu-server's NIC models (the MODEL=MAC short form of netN).
_NIC_MODELS = {"e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b"}
_NIC_MODELS |= {"i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"}


class PveRestoreError(ValueError):
    """Bad input or a state that forbids the restore; the message names the culprit."""


def _disk_indexes(vmid: int, names: Iterable[str]) -> set[int]:
    pattern = re.compile(rf"(?:^|[/:])vm-{int(vmid)}-disk-(\d+)(?:$|[,.])")
    found = set()
    for name in names:
        match = pattern.search(name)
        if match:
            found.add(int(match.group(1)))
    return found


def config_volumes(config: Mapping[str, Any]) -> list[str]:
    """Every volume a config names (disks, cdroms, unusedN, mount points): first field of each value."""
    volumes = []
    for value in config.values():
        if isinstance(value, str) and ":" in value:
            volumes.append(value.split(",", 1)[0])
    return volumes


def allocate_disk_names(vmid: int, config: Mapping[str, Any], pool_images: Iterable[str], count: int) -> list[str]:
    """``count`` free names ``vm-<vmid>-disk-<N>``, the lowest free N first.

    Free means: named neither by the guest's config (any storage: a disk of the same name on
    another storage would make PVE's own allocation and migrations collide) nor by an image of
    the target pool/namespace (an orphan left by a failed operation is somebody's data).
    """
    taken = _disk_indexes(vmid, config_volumes(config)) | _disk_indexes(vmid, pool_images)
    names: list[str] = []
    index = 0
    while len(names) < count:
        if index not in taken:
            names.append(f"vm-{int(vmid)}-disk-{index}")
        index += 1
    return names


def free_unused_key(config: Mapping[str, Any], also_taken: Iterable[str] = ()) -> str:
    """The first ``unusedN`` key the config does not use."""
    taken = set(config) | set(also_taken)
    for index in range(MAX_UNUSED + 1):
        key = f"unused{index}"
        if key not in taken:
            return key
    raise PveRestoreError(f"no free unusedN slot (unused0..unused{MAX_UNUSED} all taken)")


def new_smbios1(value: str | None) -> str:
    """``smbios1`` with a fresh uuid, the other fields (manufacturer, base64, ...) kept."""
    fresh = f"uuid={uuid.uuid4()}"
    if not value:
        return fresh
    parts = [part for part in str(value).split(",") if part and not part.startswith("uuid=")]
    return ",".join([fresh, *parts])


def strip_mac(key: str, value: str, guest_type: str) -> str:
    """A netN value without its MAC, so PVE generates a new one."""
    out = []
    for part in str(value).split(","):
        name, mac = part.split("=", 1) if "=" in part else (part, "")
        if guest_type == "lxc" and name == "hwaddr":
            continue
        if guest_type == "qemu":
            if name == "macaddr":
                continue
            if name in _NIC_MODELS and mac:
                out.append(name)  # MODEL=MAC -> MODEL (model is the default key)
                continue
        out.append(part)
    return ",".join(out)


def _replace_volume(value: str, volume: str) -> str:
    """The value with its first field (the volume) replaced, options kept."""
    first, options = str(value).split(",", 1) if "," in str(value) else (str(value), "")
    if "=" in first and first.split("=", 1)[0] in ("file", "volume"):
        first = f"{first.split('=', 1)[0]}={volume}"
    else:
        first = volume
    return f"{first},{options}" if options else first


@dataclass
class RecreatePlan:
    """What recreating a guest would do: the new config and the disks to restore into it."""

    guest_type: str
    new_vmid: int
    config: dict[str, Any]
    # config key -> {"storage", "pool", "namespace", "image"} of the new image
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def recreate_config(
    guest_type: str,
    saved: Mapping[str, Any],
    new_vmid: int,
    backed_up: Iterable[str],
    storages: Mapping[str, RbdStorage],
    pool_images: Mapping[tuple[str, str | None], Iterable[str]],
    storage_override: str | None = None,
) -> RecreatePlan:
    """The config of a new guest ``new_vmid`` from a saved config, and its disks' new images.

    ``backed_up``: the config keys that have a backup image to restore from. ``storages``: the
    RBD storages of the cluster (``GET /storage``). ``pool_images``: (pool, namespace) -> the
    image names already there (name allocation never reuses one). ``storage_override``: put
    every restored disk on this RBD storage instead of the disk's own.
    """
    if guest_type != "qemu":
        # PVE creates a container only from a template or vzdump archive (ostemplate is
        # required), which would overwrite the restored rootfs: restore its disks as new disks.
        raise PveRestoreError(
            f"recreating a {guest_type} guest is not possible through the API (PVE needs an ostemplate to create "
            "a container): restore its disks as new disks of a container instead"
        )
    if storage_override is not None and storage_override not in storages:
        raise PveRestoreError(f"storage {storage_override!r} is not an RBD storage of this Proxmox VE cluster")
    try:
        found = guest_disks(guest_type, saved, storages, "")
    except ProxmoxConfigError as exc:
        raise PveRestoreError(f"saved config: {exc}") from None
    wanted = set(backed_up)
    restorable = [disk for disk in found.disks if disk.key in wanted]
    plan = RecreatePlan(guest_type=guest_type, new_vmid=int(new_vmid), config={})
    dropped: set[str] = set()
    by_target: dict[tuple[str, str | None], list[str]] = {}
    for disk in restorable:
        storage = storages[storage_override or disk.storage]
        by_target.setdefault((storage.pool, storage.namespace), []).append(disk.key)
    names: dict[str, str] = {}
    for target, keys in by_target.items():
        free = allocate_disk_names(new_vmid, {}, pool_images.get(target, ()), len(keys))
        names.update(zip_strict(keys, free))
    for key, value in saved.items():
        if key in _DROPPED_KEYS or key.startswith("unused"):
            continue
        if _QEMU_DISK_KEY_RE.fullmatch(key):
            props = parse_property_string(value, default_key="file", where=key)
            volume = props.get("file", "")
            if props.get("media") == "cdrom":
                parts = split_volume(volume)
                if parts is not None and "cloudinit" in parts[1]:
                    plan.config[key] = _replace_volume(value, f"{parts[0]}:cloudinit")
                else:
                    plan.config[key] = "none,media=cdrom"
                continue
            if key in names:
                disk = next(d for d in restorable if d.key == key)
                storage = storages[storage_override or disk.storage]
                plan.config[key] = _replace_volume(value, f"{storage.name}:{names[key]}")
                plan.disks[key] = {
                    "storage": storage.name,
                    "pool": storage.pool,
                    "namespace": storage.namespace,
                    "image": names[key],
                }
                continue
            reason = next((s.reason for s in found.skipped if s.key == key), "no backup image given for it")
            plan.warnings.append(f"{key} ({volume}) dropped: {reason}; add it anew if the guest needs it")
            dropped.add(key)
            continue
        if key == "smbios1":
            plan.config[key] = new_smbios1(str(value))
            continue
        if _NET_KEY_RE.fullmatch(key):
            plan.config[key] = strip_mac(key, str(value), guest_type)
            continue
        if key == "vmgenid":
            plan.config[key] = "1"
            continue
        plan.config[key] = value
    if "smbios1" not in plan.config:
        plan.config["smbios1"] = new_smbios1(None)
    boot = str(plan.config.get("boot", ""))
    if boot.startswith("order=") and dropped:
        order, rest = boot[len("order=") :].split(",", 1) if "," in boot else (boot[len("order=") :], "")
        kept = [dev for dev in order.split(";") if dev and dev not in dropped]
        plan.config["boot"] = f"order={';'.join(kept)}" + (f",{rest}" if rest else "") if kept else rest
        if not plan.config["boot"]:
            del plan.config["boot"]
    if plan.config.get("bootdisk") in dropped:
        # The legacy boot disk option naming a device that is gone would make PVE refuse the config.
        del plan.config["bootdisk"]
    if not plan.disks:
        raise PveRestoreError("none of the saved config's disks has a backup image to restore from")
    return plan


def pending_note(pending: Mapping[str, Any]) -> str | None:
    """A warning naming the changes that were pending (not applied) when the backup was taken.

    The saved config is the one the guest ran with (``current=1``), the state its disks'
    snapshots hold: a recreated guest gets that, never changes PVE had not applied yet.
    """
    if not pending:
        return None
    parts = []
    for key in sorted(pending):
        change = pending[key] if isinstance(pending[key], Mapping) else {}
        parts.append(f"{key} (delete)" if change.get("delete") else f"{key}={change.get('pending')}")
    return (
        "the guest had changes pending (not applied) when it was backed up, not restored: "
        + ", ".join(parts)
        + "; the restored config is the one it ran with"
    )
