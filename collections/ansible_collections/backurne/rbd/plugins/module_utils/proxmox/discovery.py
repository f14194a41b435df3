# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Proxmox VE discovery, pure: guest configs and storage.cfg in, the disks to back up out.

No Ansible and no proxmoxer here: the API calls live in ``pve_client``; this module only reads
what the API returned, so every config shape is unit-testable. PVE's own rules are followed
(``PVE::JSONSchema::parse_property_string``/``parse_boolean``, ``RBDPlugin::parse_volname``):
a config value is a property string, never something to split on its first ``=`` or ``:``.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import (
    NamingError,
    backup_image_name_for_proxmox,
    parse_backup_image_name,
)


class ProxmoxConfigError(ValueError):
    """A config value PVE itself would refuse; the message names the key and the value."""


# PVE::JSONSchema::parse_boolean
_TRUE = frozenset({"1", "on", "yes", "true"})
_FALSE = frozenset({"0", "off", "no", "false"})

# qemu-server Drive.pm: $MAX_IDE_DISKS 4, $MAX_SATA_DISKS 6, $MAX_SCSI_DISKS 31, $MAX_VIRTIO_DISKS 16.
_QEMU_DISK_RE = re.compile(r"(ide[0-3]|sata[0-5]|scsi(?:[12]?[0-9]|30)|virtio(?:1[0-5]|[0-9])|efidisk0|tpmstate0)")
_LXC_MP_RE = re.compile(r"mp(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])")
# pve-storage-id, as PVE::Storage::parse_volume_id reads it.
_VOLUME_ID_RE = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", re.IGNORECASE)
# RBDPlugin::parse_volname: an optional "base-X-.../" (linked clone parent), then the image.
_RBD_VOLNAME_RE = re.compile(r"(?:(base-\d+-\S+)/)?((?:base)?(?:vm)?-\d+-\S+)")
# qemu-server's aliases (Drive.pm: volume -> file; Agent: freeze-fs-on-backup/guest-fsfreeze -> freeze-fs).
_ALIASES = {"volume": "file", "freeze-fs-on-backup": "freeze-fs", "guest-fsfreeze": "freeze-fs"}

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")

GUEST_TYPES = ("qemu", "lxc")
DEFAULT_TAG_PREFIX = "backurne"


def parse_boolean(value: object) -> bool | None:
    """PVE's parse_boolean: 1/on/yes/true and 0/off/no/false, any case; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {1: True, 0: False}.get(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def parse_property_string(text: object, default_key: str | None = None, where: str = "value") -> dict[str, str]:
    """``part(,part)*`` where a part is ``key=value`` (key up to the first ``=``, the value keeps
    any later ``=``, e.g. base64 padding) or a bare value for ``default_key``.

    Aliases are folded into their canonical key. A duplicate key, a bare value without a default
    key or an empty value are refused, as PVE refuses them.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ProxmoxConfigError(f"{where}: expected a property string, got {text!r}")
    result: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" in part:
            key, value = part.split("=", 1)
            if not key or not value:
                raise ProxmoxConfigError(f"{where}: missing key or value in {part!r} of {text!r}")
        elif default_key is not None:
            key, value = default_key, part
        else:
            raise ProxmoxConfigError(f"{where}: value {part!r} without key in {text!r}")
        key = _ALIASES.get(key, key)
        if key in result:
            raise ProxmoxConfigError(f"{where}: duplicate key {key!r} in {text!r}")
        result[key] = value
    return result


def _flag(props: Mapping[str, str], key: str, default: bool, where: str) -> bool:
    if key not in props:
        return default
    parsed = parse_boolean(props[key])
    if parsed is None:
        raise ProxmoxConfigError(f"{where}: {key}={props[key]!r} is not a boolean")
    return parsed


@dataclass(frozen=True)
class AgentSettings:
    enabled: bool
    freeze_fs: bool


def agent_settings(config: Mapping[str, Any]) -> AgentSettings:
    """The ``agent`` key: ``[enabled=]0|1[,freeze-fs=0|1]...``; absent means disabled.

    ``agent`` arrives as the string ``"1"`` (PVE's JSON typing): it is parsed, never compared with 1.
    """
    raw = config.get("agent")
    if raw is None or raw == "":
        return AgentSettings(enabled=False, freeze_fs=False)
    props = parse_property_string(raw, default_key="enabled", where="agent")
    enabled = _flag(props, "enabled", False, "agent")
    return AgentSettings(enabled=enabled, freeze_fs=enabled and _flag(props, "freeze-fs", True, "agent"))


def smbios_uuid(config: Mapping[str, Any]) -> str | None:
    """The ``uuid`` of ``smbios1``, parsed as a property string.

    PVE's format is ``uuid=<UUID>`` even with ``base64=1`` (which encodes the other, free-text
    values): a UUID is taken as it is. A value that is no UUID is decoded when ``base64=1`` and
    it decodes to one (hand-edited configs), else refused.
    """
    raw = config.get("smbios1")
    if not raw:
        return None
    props = parse_property_string(raw, where="smbios1")
    uuid = props.get("uuid")
    if not uuid:
        return None
    if _UUID_RE.fullmatch(uuid):
        return uuid
    if _flag(props, "base64", False, "smbios1"):
        try:
            decoded = base64.b64decode(uuid, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if _UUID_RE.fullmatch(decoded):
            return decoded
    raise ProxmoxConfigError(f"smbios1: uuid {uuid!r} is not a UUID")


def parse_tags(tags: object) -> list[str]:
    """PVE tags: ``a;b`` (also space or comma separated, as pve-manager accepts), lower-cased."""
    if not isinstance(tags, str):
        return []
    return [tag.lower() for tag in re.split(r"[;, ]+", tags) if tag]


@dataclass(frozen=True)
class TagPolicy:
    """What a guest's tags say: ``<prefix>-off`` opts out, ``<prefix>-<profile>`` adds a profile."""

    off: bool
    profiles: tuple[str, ...]


def tag_policy(tags: Iterable[str], prefix: str = DEFAULT_TAG_PREFIX) -> TagPolicy:
    head = prefix.lower() + "-"
    off = False
    profiles: list[str] = []
    for tag in tags:
        if not tag.startswith(head) or tag == head:
            continue
        name = tag[len(head) :]
        if name == "off":
            off = True
        elif name not in profiles:
            profiles.append(name)
    return TagPolicy(off=off, profiles=tuple(profiles))


@dataclass(frozen=True)
class RbdStorage:
    name: str
    pool: str
    namespace: str | None


def rbd_storages(storage_cfg: Iterable[Mapping[str, Any]]) -> dict[str, RbdStorage]:
    """The RBD storages of ``GET /storage``: pool (absent means ``rbd``) and namespace."""
    storages: dict[str, RbdStorage] = {}
    for item in storage_cfg:
        if item.get("type") != "rbd" or not isinstance(item.get("storage"), str):
            continue
        storages[item["storage"]] = RbdStorage(
            name=item["storage"], pool=item.get("pool") or "rbd", namespace=item.get("namespace") or None
        )
    return storages


def ceph_endpoint(mapping: Mapping[str, Any] | None, pve_cluster: str, storage: str) -> str:
    """backurne's ``ceph_endpoint``: ``[pve_cluster][storage]``, then ``[default][storage]``, then the storage name."""
    for scope in (pve_cluster, "default"):
        entries = (mapping or {}).get(scope)
        if isinstance(entries, Mapping) and entries.get(storage):
            return str(entries[storage])
    return storage


def split_volume(value: str) -> tuple[str, str] | None:
    """``STORAGE:VOLNAME`` -> (storage, volname); None for ``none``, paths and devices."""
    if value.startswith("/") or value == "none":
        return None
    match = _VOLUME_ID_RE.fullmatch(value)
    if match is None:
        return None
    return match.group(1), match.group(2)


def rbd_image_of(volname: str) -> str:
    """The RBD image of a volume name; a linked clone ``base-X-disk-N/vm-Y-disk-M`` is the part after ``/``."""
    match = _RBD_VOLNAME_RE.fullmatch(volname)
    if match is not None:
        return match.group(2)
    return volname.rsplit("/", 1)[-1]


@dataclass
class Guest:
    vmid: int
    name: str
    node: str
    type: str
    status: str
    template: bool
    tags: list[str]
    # False when /cluster/resources had no name (no RRD statistics yet, or its node is offline):
    # the name (and template flag) are then taken from the guest's config once it is read.
    named: bool = True

    @property
    def running(self) -> bool:
        return self.status == "running"

    @classmethod
    def from_resource(cls, item: Mapping[str, Any]) -> Guest:
        """One ``/cluster/resources?type=vm`` item (qemu or lxc)."""
        return cls(
            vmid=int(item["vmid"]),
            name=str(item.get("name") or f"{item['type']}-{item['vmid']}"),
            node=str(item["node"]),
            type=str(item["type"]),
            status=str(item.get("status", "unknown")),
            template=bool(parse_boolean(item.get("template", 0))),
            tags=parse_tags(item.get("tags")),
            named=bool(item.get("name")),
        )

    def fold_config(self, config: Mapping[str, Any]) -> None:
        """Name and template flag from the config when the resource list had none (PVE omits
        ``name`` and ``template`` for a guest without statistics): ``name`` for qemu,
        ``hostname`` for lxc, as PVE itself names guests."""
        if self.named:
            return
        name = config.get("name" if self.type == "qemu" else "hostname")
        if isinstance(name, str) and name:
            self.name = name
            self.named = True
        self.template = bool(parse_boolean(config.get("template", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "vmid": self.vmid,
            "name": self.name,
            "node": self.node,
            "type": self.type,
            "running": self.running,
            "status": self.status,
            "template": self.template,
            "tags": list(self.tags),
        }


@dataclass
class DiskRef:
    """A guest disk on an RBD storage, to back up."""

    key: str
    storage: str
    volname: str
    image: str
    pool: str
    namespace: str | None
    endpoint: str


@dataclass
class Skipped:
    key: str
    reason: str


@dataclass
class GuestDisks:
    disks: list[DiskRef] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _volume_props(key: str, value: Any, default_key: str) -> dict[str, str]:
    return parse_property_string(value, default_key=default_key, where=key)


def guest_disks(
    guest_type: str,
    config: Mapping[str, Any],
    storages: Mapping[str, RbdStorage],
    pve_cluster: str,
    endpoint_map: Mapping[str, Any] | None = None,
) -> GuestDisks:
    """The disks of one guest to back up, and why the others are not.

    qemu: ide/sata/scsi/virtio, efidisk0, tpmstate0, minus cdroms (cloud-init too) and ``backup=0``.
    lxc: ``rootfs`` always, ``mpN`` only with ``backup=1``, never bind mounts (paths).
    ``unusedN`` (detached volumes) and non-RBD storages are never backed up.
    """
    if guest_type not in GUEST_TYPES:
        raise ProxmoxConfigError(f"unknown guest type {guest_type!r} (expected qemu or lxc)")
    found = GuestDisks()
    for key in sorted(config, key=_disk_order):
        value = config[key]
        if guest_type == "qemu":
            if not _QEMU_DISK_RE.fullmatch(key):
                if key.startswith("unused"):
                    found.skipped.append(Skipped(key, "unused (detached) volume"))
                continue
            props = _volume_props(key, value, "file")
            if props.get("media", "disk") == "cdrom":
                found.skipped.append(Skipped(key, "cdrom (cloud-init disks too)"))
                continue
            if not _flag(props, "backup", True, key):
                found.skipped.append(Skipped(key, "backup=0"))
                continue
        else:
            if key == "rootfs":
                props = _volume_props(key, value, "volume")
            elif _LXC_MP_RE.fullmatch(key):
                props = _volume_props(key, value, "volume")
                if not _flag(props, "backup", False, key):
                    found.skipped.append(Skipped(key, "mount point without backup=1"))
                    continue
            else:
                if key.startswith("unused"):
                    found.skipped.append(Skipped(key, "unused (detached) volume"))
                continue
        volume = props.get("file", "")
        parts = split_volume(volume)
        if parts is None:
            found.skipped.append(Skipped(key, f"not a storage volume ({volume!r}: bind mount, device or none)"))
            continue
        storage, volname = parts
        if storage not in storages:
            found.skipped.append(Skipped(key, f"storage {storage!r} is not an RBD storage"))
            continue
        rbd = storages[storage]
        found.disks.append(
            DiskRef(
                key=key,
                storage=storage,
                volname=volname,
                image=rbd_image_of(volname),
                pool=rbd.pool,
                namespace=rbd.namespace,
                endpoint=ceph_endpoint(endpoint_map, pve_cluster, storage),
            )
        )
    return found


def _disk_order(key: str) -> tuple[str, int]:
    match = re.fullmatch(r"([a-z]+)(\d*)", key)
    if match is None:
        return (key, -1)
    return (match.group(1), int(match.group(2) or -1))


def guest_identity(
    guest: Guest, config: Mapping[str, Any], disk: DiskRef, use_smbios: bool, uuid_fallback: bool
) -> tuple[str, str]:
    """(IDENT, DISK) of the backup image name, as backurne 2.x builds them.

    With ``use_smbios`` and an smbios1 uuid (qemu only): (uuid, adapter), stable across renames,
    moves and storage migrations. Otherwise (storage, RBD image). A qemu guest without a uuid
    while ``use_smbios`` is on falls back to the latter when ``uuid_fallback``, else fails (its
    history would restart under a new name the day it gets a uuid).
    """
    if use_smbios and guest.type == "qemu":
        uuid = smbios_uuid(config)
        if uuid:
            return uuid, disk.key
        if not uuid_fallback:
            raise ProxmoxConfigError(f"guest {guest.vmid} ({guest.name}) has no smbios1 uuid and uuid_fallback is off")
    return disk.storage, disk.image


def _matches(guest: Guest, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(guest.name, p) or fnmatch.fnmatchcase(str(guest.vmid), p) for p in patterns)


def guest_profiles(
    tags: TagPolicy,
    defaults: Mapping[str, Any],
    catalogue: Mapping[str, Any],
    api_answer: Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The profiles of one guest (None: backups off) and warnings.

    Defaults, plus the catalogue profiles its ``backurne-<profile>`` tags name, plus the profiles
    the profiles_api answered; ``{"backup": false}`` from the API or the ``backurne-off`` tag
    switch the guest off.
    """
    warnings: list[str] = []
    if tags.off:
        return None, warnings
    profiles = dict(defaults)
    for name in tags.profiles:
        if name in catalogue:
            profiles[name] = catalogue[name]
        elif name not in profiles:
            warnings.append(f"tag {DEFAULT_TAG_PREFIX}-{name}: no profile {name!r} in the profile catalogue, ignored")
    if api_answer:
        if api_answer.get("backup") is False:
            return None, warnings
        extra = api_answer.get("profiles", {k: v for k, v in api_answer.items() if k != "backup"})
        if isinstance(extra, Mapping):
            profiles.update({str(k): v for k, v in extra.items() if isinstance(v, Mapping)})
    return profiles, warnings


@dataclass
class DiscoveryOptions:
    pve_cluster: str
    endpoint_map: Mapping[str, Any] | None = None
    use_smbios: bool = True
    uuid_fallback: bool = True
    include_templates: bool = False
    tag_prefix: str = DEFAULT_TAG_PREFIX
    defaults: Mapping[str, Any] = field(default_factory=dict)
    catalogue: Mapping[str, Any] = field(default_factory=dict)
    only_guests: list[str] = field(default_factory=list)
    exclude_guests: list[str] = field(default_factory=list)


def discover(
    resources: Iterable[Mapping[str, Any]],
    configs: Mapping[int, Mapping[str, Any]],
    storage_cfg: Iterable[Mapping[str, Any]],
    options: DiscoveryOptions,
    api_answers: Mapping[int, Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Everything to back up: ``disks`` (one dict per disk), ``skipped``, ``failed``, ``guests``, ``warnings``.

    ``configs`` holds the config of every guest in ``resources`` worth a look (see
    ``guests_to_read``); ``api_answers`` the profiles_api answer per vmid, if any.
    """
    storages = rbd_storages(storage_cfg)
    disks: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    guests: list[dict[str, Any]] = []
    warnings: list[str] = []
    # A guest or disk that should be backed up but cannot be (unreadable config, no identity):
    # a failure of the run, not a quiet skip.
    failed: list[dict[str, Any]] = []
    for guest in guests_to_read(resources, options, skipped):
        config = configs.get(guest.vmid)
        if config is None:
            # Without its config a guest the resource list does not name has no known name.
            label = guest.name if guest.named else "?"
            where = f"guest {guest.vmid} ({label}) on node {guest.node}"
            failed.append({"vmid": guest.vmid, "name": label, "disk": None, "error": f"{where}: config not readable"})
            continue
        if not guest.named:
            guest.fold_config(config)
            # Selected before its name was known: the patterns are applied again with it.
            reason = selection_reason(guest, options)
            if reason is not None:
                skipped.append({"vmid": guest.vmid, "name": guest.name, "disk": None, "reason": reason})
                continue
        where = f"guest {guest.vmid} ({guest.name})"
        profiles, notes = guest_profiles(
            tag_policy(guest.tags, options.tag_prefix),
            options.defaults,
            options.catalogue,
            (api_answers or {}).get(guest.vmid),
        )
        warnings.extend(f"{where}: {note}" for note in notes)
        if profiles is None:
            skipped.append({"vmid": guest.vmid, "name": guest.name, "disk": None, "reason": "backups switched off"})
            continue
        try:
            agent = agent_settings(config) if guest.type == "qemu" else AgentSettings(False, False)
            found = guest_disks(guest.type, config, storages, options.pve_cluster, options.endpoint_map)
        except ProxmoxConfigError as exc:
            failed.append({"vmid": guest.vmid, "name": guest.name, "disk": None, "error": f"{where}: {exc}"})
            continue
        skipped.extend(
            {"vmid": guest.vmid, "name": guest.name, "disk": s.key, "reason": s.reason} for s in found.skipped
        )
        info = guest.to_dict()
        # A container is frozen by PVE itself, never through the agent; a stopped guest needs nothing.
        info["freeze"] = guest.type == "qemu" and guest.running and agent.freeze_fs
        info["agent"] = agent.enabled
        guest_rows = []
        for disk in found.disks:
            try:
                ident, disk_name = guest_identity(guest, config, disk, options.use_smbios, options.uuid_fallback)
                backup_image = backup_image_name_for_proxmox(ident, disk_name, guest.name)
            except (ProxmoxConfigError, NamingError) as exc:
                failed.append(
                    {
                        "vmid": guest.vmid,
                        "name": guest.name,
                        "disk": disk.key,
                        "error": f"{where} disk {disk.key}: {exc}",
                    }
                )
                continue
            guest_rows.append(
                {
                    "endpoint": disk.endpoint,
                    "storage": disk.storage,
                    "pool": disk.pool,
                    "namespace": disk.namespace,
                    "image": disk.image,
                    "disk": disk.key,
                    "backup_image": backup_image,
                    "guest": info,
                    "profiles": profiles,
                    "config": dict(config),
                }
            )
        if guest_rows:
            guests.append(info)
        disks.extend(guest_rows)
    return {"disks": disks, "skipped": skipped, "guests": guests, "warnings": warnings, "failed": failed}


def guests_to_read(
    resources: Iterable[Mapping[str, Any]], options: DiscoveryOptions, skipped: list[dict[str, Any]] | None = None
) -> list[Guest]:
    """The guests whose config discovery needs, in vmid order: templates out unless asked."""
    guests: list[Guest] = []
    for item in resources:
        if item.get("type") not in GUEST_TYPES or "vmid" not in item or "node" not in item:
            continue
        guest = Guest.from_resource(item)
        # A guest without a name in the list is read first: its name and template flag are in
        # its config, and the patterns are applied once they are known (discover()).
        reason = selection_reason(guest, options) if guest.named else None
        if reason is not None:
            if skipped is not None:
                skipped.append({"vmid": guest.vmid, "name": guest.name, "disk": None, "reason": reason})
            continue
        guests.append(guest)
    return sorted(guests, key=lambda g: g.vmid)


def selection_reason(guest: Guest, options: DiscoveryOptions) -> str | None:
    """Why a listed guest is not backed up in this run (None: it is)."""
    if guest.template and not options.include_templates:
        return "template"
    if options.only_guests and not _matches(guest, options.only_guests):
        return "not selected"
    if _matches(guest, options.exclude_guests):
        return "excluded"
    return None


def unmatched_patterns(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """The shell patterns (a run's limit) that match none of ``names``, in their given order."""
    listed = list(names)
    return [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in listed)]


def group_by_endpoint(disks: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for disk in disks:
        grouped.setdefault(disk["endpoint"], []).append(dict(disk))
    return grouped


def renames(disks: Iterable[Mapping[str, Any]], backup_images: Iterable[str]) -> dict[str, str]:
    """Backup images to rename because their guest was renamed: old name -> new name.

    Same IDENT;DISK, another COMMENT: the history is kept by renaming the image, as backurne 2.x
    did. Only when the new name does not exist yet and exactly one old one matches.
    """
    existing = set(backup_images)
    by_key: dict[tuple[str, str], list[str]] = {}
    for name in existing:
        parsed = parse_backup_image_name(name)
        if parsed is not None:
            by_key.setdefault((parsed.ident, parsed.disk), []).append(name)
    moves: dict[str, str] = {}
    for disk in disks:
        new = disk["backup_image"]
        parsed = parse_backup_image_name(new)
        if new in existing or parsed is None:
            continue
        old = [name for name in by_key.get((parsed.ident, parsed.disk), []) if name != new]
        if len(old) == 1 and old[0] not in moves:
            moves[old[0]] = new
    return moves


# The keys under which the guest's config and identity are stored on its backup image (rbd image-meta).
META_CONFIG = "backurne.pve.config"
META_VMID = "backurne.pve.vmid"
META_NAME = "backurne.pve.name"
META_TYPE = "backurne.pve.type"
META_CLUSTER = "backurne.pve.cluster"
META_DISK = "backurne.pve.disk"
# The guest's pending changes (GET .../pending, only the entries with a pending value or delete),
# saved apart from the config: the config saved is the current one (GET .../config?current=1),
# the state the snapshots hold, never changes PVE has not applied yet.
META_PENDING = "backurne.pve.pending"


def pending_changes(items: Iterable[Any] | None) -> dict[str, dict[str, Any]]:
    """``GET .../pending`` cut down to what is pending: key -> ``{"value"?, "pending"?, "delete"?}``.

    An item without ``pending`` or ``delete`` is the current value only (already in the config).
    """
    changes: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            continue
        change: dict[str, Any] = {}
        if "pending" in item:
            change["pending"] = item["pending"]
        if item.get("delete"):
            change["delete"] = int(item["delete"])
        if change:
            if "value" in item:
                change["value"] = item["value"]
            changes[item["key"]] = change
    return changes


# -- deletion only on proof ------------------------------------------------------------------
#
# A guest's backups fade out (backup-side expiry with the source gone, then image removal) only
# when a complete, successful listing of its cluster shows it absent, or shows it present and no
# longer backing that disk up (disk detached, backup=0, backurne-off, excluded). A partial
# listing - a node offline, a failed listing or config read, a config PVE's rules refuse - proves
# nothing about the guests it could not see: their backups are left alone, and said so.


@dataclass
class Coverage:
    """What one discovery saw of its Proxmox VE cluster."""

    complete: bool = True
    problems: list[str] = field(default_factory=list)
    # Listed, on an online node, and either read or deliberately not backed up.
    seen: set[int] = field(default_factory=set)
    # Listed but not positively seen: vmid -> {vmid, name, node, reason}.
    unseen: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Outside this run's limit (backurne_limit_images): not this run's business.
    unselected: set[int] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "problems": list(self.problems),
            "seen": sorted(self.seen),
            "unseen": [self.unseen[vmid] for vmid in sorted(self.unseen)],
            "unselected": sorted(self.unselected),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Coverage:
        """None or an unreadable value: nothing was proven (no fade-out at all)."""
        if not isinstance(data, Mapping):
            return cls(complete=False, problems=["no discovery coverage given"])
        unseen = {int(item["vmid"]): dict(item) for item in data.get("unseen") or [] if isinstance(item, Mapping)}
        return cls(
            complete=data.get("complete") is True,
            problems=[str(p) for p in data.get("problems") or []],
            seen={int(v) for v in data.get("seen") or []},
            unseen=unseen,
            unselected={int(v) for v in data.get("unselected") or []},
        )


def offline_nodes(nodes: Iterable[Any] | None, cluster_status: Iterable[Any] | None) -> list[str]:
    """Nodes not online in ``GET /nodes`` (``status``) or ``GET /cluster/status`` (``online``)."""
    down: set[str] = set()
    for item in nodes or []:
        if isinstance(item, Mapping) and item.get("node") and item.get("status", "online") != "online":
            down.add(str(item["node"]))
    for item in cluster_status or []:
        is_node = isinstance(item, Mapping) and item.get("type") == "node" and item.get("name")
        if is_node and not parse_boolean(item.get("online", 1)):
            down.add(str(item["name"]))
    return sorted(down)


def discovery_coverage(
    resources: Iterable[Mapping[str, Any]],
    found: Mapping[str, Any],
    down_nodes: Iterable[str],
    problems: Iterable[str] = (),
    read_errors: Iterable[Mapping[str, Any]] = (),
) -> Coverage:
    """Which listed guests this discovery positively saw; ``found`` is what ``discover`` returned."""
    down = set(down_nodes)
    cover = Coverage(problems=[*problems, *(f"node {node} offline" for node in sorted(down))])
    failures: dict[int, str] = {}
    for entry in [*read_errors, *found.get("failed", [])]:
        failures.setdefault(int(entry["vmid"]), str(entry.get("error") or "not readable"))
    names = {int(e["vmid"]): str(e["name"]) for e in [*found.get("skipped", []), *found.get("failed", [])]}
    unselected = {int(e["vmid"]) for e in found.get("skipped", []) if e.get("reason") == "not selected"}
    for item in resources:
        if item.get("type") not in GUEST_TYPES or "vmid" not in item or "node" not in item:
            continue
        guest = Guest.from_resource(item)
        name = guest.name if guest.named else names.get(guest.vmid, "?")
        reason = f"node {guest.node} offline" if guest.node in down else failures.get(guest.vmid)
        if reason is not None:
            cover.unseen[guest.vmid] = {"vmid": guest.vmid, "name": name, "node": guest.node, "reason": reason}
        elif guest.vmid in unselected:
            cover.unselected.add(guest.vmid)
        else:
            cover.seen.add(guest.vmid)
    cover.complete = not cover.problems and not cover.unseen
    return cover


def unseen_warning(cluster: str, cover: Coverage) -> str | None:
    """The warning of an incomplete discovery, naming the guests it could not see."""
    if cover.complete:
        return None
    guests = "; ".join(f"{g['vmid']} ({g['name']}) on node {g['node']}: {g['reason']}" for g in cover.unseen.values())
    return (
        f"live cluster {cluster}: discovery incomplete ({'; '.join(cover.problems) or 'some guests not seen'}): "
        "backups of guests not seen in this listing are neither expired as gone nor removed"
        + (f"; not seen: {guests}" if guests else "")
    )


def vanished_fate(meta: Mapping[str, str], cover: Coverage) -> tuple[bool, str | None, dict[str, Any]]:
    """Whether a backup image of this cluster that no disk of the run produced may fade out.

    Returns (gone, why kept, guest as known: vmid/name/node). Its guest is the vmid saved in its
    metadata: listed and seen (the disk is no longer backed up) or absent from a complete
    listing -> gone; outside the run's limit, not seen, or absent from a partial listing -> kept.
    """
    raw = str(meta.get(META_VMID, ""))
    vmid = int(raw) if raw.isdigit() else None
    guest: dict[str, Any] = {"vmid": vmid, "name": meta.get(META_NAME) or "?", "node": "?"}
    if vmid is not None and vmid in cover.unselected:
        return False, "its guest is outside this run's limit", guest
    if vmid is not None and vmid in cover.unseen:
        seen = cover.unseen[vmid]
        guest["node"] = seen.get("node", "?")
        return False, f"its guest was not seen ({seen.get('reason')})", guest
    if vmid is not None and vmid in cover.seen:
        return True, None, guest
    if cover.complete:
        return True, None, guest
    return False, f"its guest is not listed but the listing is incomplete ({'; '.join(cover.problems)})", guest


def kept_warning(image: str, guest: Mapping[str, Any], why: str) -> str:
    """The warning for a backup image left out of expiry (``vanished_fate`` said why)."""
    return (
        f"backup image {image!r} of guest {guest.get('vmid')} ({guest.get('name')}) on node {guest.get('node')}: "
        f"neither expired as gone nor removed: {why}"
    )
