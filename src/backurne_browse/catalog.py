# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# What is backed up: the backup images of a backup pool and their snapshots, parsed, for the
# CLI, the REST API and restore code. Read-only. One `rbd ls -l` per pool for the disk list,
# one `rbd snap ls` per image for its snapshots.
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backurne_core.ceph.rbd import (
    ImageSpec,
    RbdError,
    RbdRunner,
    in_creation_order,
)
from backurne_core.policy.naming import parse_backup_image_name, validate_prefix
from backurne_core.policy.retention import Snap


class CatalogError(LookupError):
    """An image or snapshot asked for is not there (or is ambiguous); the message names it."""


@dataclass(frozen=True)
class SnapshotEntry:
    """One backurne snapshot of a backup image."""

    name: str
    profile: str
    count: int
    created: datetime
    size: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile,
            "count": self.count,
            "created": self.created.isoformat(),
            "size": self.size,
        }


@dataclass(frozen=True)
class DiskEntry:
    """One backup image (``IDENT;DISK;COMMENT``) of the backup pool."""

    image: str
    ident: str
    disk: str
    comment: str
    size: int | None
    snapshots: tuple[SnapshotEntry, ...]
    foreign_snapshots: tuple[str, ...]

    @property
    def newest(self) -> SnapshotEntry | None:
        return self.snapshots[-1] if self.snapshots else None

    def to_dict(self, with_snapshots: bool = False) -> dict[str, Any]:
        newest = self.newest
        entry: dict[str, Any] = {
            "image": self.image,
            "ident": self.ident,
            "disk": self.disk,
            "comment": self.comment,
            "size": self.size,
            "snapshot_count": len(self.snapshots),
            "newest_snapshot": newest.name if newest else None,
            "newest_created": newest.created.isoformat() if newest else None,
        }
        if with_snapshots:
            entry["snapshots"] = [snap.to_dict() for snap in self.snapshots]
            entry["foreign_snapshots"] = list(self.foreign_snapshots)
        return entry


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _snapshots(raw: Iterable[tuple[str, int | None]], prefix: str) -> tuple[list[SnapshotEntry], list[str]]:
    # `raw` is in Ceph's creation order and stays so: the last is the newest, whatever its
    # name's time says (backurne 2.x wrote local time into names).
    ours: list[tuple[Snap, int | None]] = []
    foreign: list[str] = []
    for name, size in raw:
        snap = Snap.from_name(name, prefix)
        if snap is None:
            foreign.append(name)
        else:
            ours.append((snap, size))
    entries = [SnapshotEntry(s.name, s.profile, s.count, s.created, size) for s, size in ours]
    return entries, foreign


def disks_from_listing(entries: Iterable[Mapping[str, Any]], prefix: str) -> list[DiskEntry]:
    """Backup images from the JSON of `rbd ls -l`, sorted by name; foreign images left out.

    A clone made for file-level access (mapping.py) is not ``IDENT;DISK;COMMENT`` and so never
    appears here, nor does anything else that is not a backup image.
    """
    validate_prefix(prefix)
    heads: dict[str, int | None] = {}
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        name = entry.get("image")
        if not isinstance(name, str):
            continue
        if "snapshot" in entry:
            rows.setdefault(name, []).append(entry)
        else:
            heads[name] = _size(entry.get("size"))
            rows.setdefault(name, [])
    snaps = {
        name: [(str(e["snapshot"]), _size(e.get("size"))) for e in in_creation_order(found, "snapshot_id")]
        for name, found in rows.items()
    }
    disks = []
    for name in sorted(snaps):
        parsed = parse_backup_image_name(name)
        if parsed is None:
            continue
        ours, foreign = _snapshots(snaps[name], prefix)
        disks.append(
            DiskEntry(name, parsed.ident, parsed.disk, parsed.comment, heads.get(name), tuple(ours), tuple(foreign))
        )
    return disks


def _where(pool: str, namespace: str | None) -> str:
    return f"{pool}/{namespace}" if namespace else pool


def list_disks(runner: RbdRunner, pool: str, namespace: str | None, prefix: str) -> list[DiskEntry]:
    """Every backup image of pool[/namespace] with its snapshots: one `rbd ls -l` call.

    Raises RbdError when the pool cannot be listed.
    """
    args = ["ls", "--long", f"--pool={pool}"]
    if namespace:
        args.append(f"--namespace={namespace}")
    try:
        listing = runner.json(args)
    except RbdError:
        # `rbd ls -l` fails when an image disappears between its listing and its opening (a
        # concurrent retention run); a second look sees a consistent pool.
        listing = runner.json(args)
    if not isinstance(listing, list):
        raise RbdError(
            ["rbd", *args],
            0,
            "",
            runner.label,
            action="rbd ls",
            subject=_where(pool, namespace),
            cause="unexpected JSON (not a list)",
        )
    return disks_from_listing(listing, prefix)


def list_snapshots(
    runner: RbdRunner, pool: str, namespace: str | None, image: str, prefix: str
) -> tuple[list[SnapshotEntry], list[str]]:
    """(our snapshots oldest first, foreign snapshot names) of one image: one `rbd snap ls`.

    Raises CatalogError when the image does not exist, RbdError on other failures.
    """
    validate_prefix(prefix)
    spec = ImageSpec(pool, namespace, image)
    try:
        raw = runner.json(["snap", "ls", *spec.options()])
    except RbdError as exc:
        if exc.is_not_found:
            raise CatalogError(f"backup image {image!r} not found in pool {_where(pool, namespace)}") from None
        raise
    if not isinstance(raw, list):
        raw = []
    items = in_creation_order([item for item in raw if isinstance(item, dict) and "name" in item])
    pairs = [(str(item["name"]), _size(item.get("size"))) for item in items]
    return _snapshots(pairs, prefix)


def resolve_disk(disks: Iterable[DiskEntry], ref: str) -> DiskEntry:
    """The backup image a user means by ``ref``.

    Accepted, in this order: the exact image name ``IDENT;DISK;COMMENT``; ``IDENT;DISK``; a
    DISK, a COMMENT (VM name) or an IDENT (smbios uuid) that names exactly one image. An
    ambiguous or unknown reference raises CatalogError listing the candidates.
    """
    disks = list(disks)
    if not ref:
        raise CatalogError("empty image reference")
    for disk in disks:
        if disk.image == ref:
            return disk
    matches = [d for d in disks if f"{d.ident};{d.disk}" == ref]
    if not matches and ";" not in ref:
        for attribute in ("disk", "comment", "ident"):
            matches = [d for d in disks if getattr(d, attribute) == ref]
            if matches:
                break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CatalogError(f"no backup image matches {ref!r}")
    names = ", ".join(repr(d.image) for d in matches[:10])
    raise CatalogError(f"{ref!r} matches {len(matches)} backup images ({names}); give the full name")


def resolve_snapshot(snapshots: Iterable[SnapshotEntry], ref: str, image: str = "") -> SnapshotEntry:
    """The snapshot a user means by ``ref``: its exact name, ``latest``, or its ISO time.

    The ISO time may be a prefix (``2026-11-29T10``) when it names exactly one snapshot.
    """
    snapshots = list(snapshots)
    where = f" of {image!r}" if image else ""
    if not snapshots:
        raise CatalogError(f"backup image{where or ''} has no backurne snapshot")
    if ref in ("latest", "newest"):
        return snapshots[-1]
    for snap in snapshots:
        if snap.name == ref:
            return snap
    matches = [s for s in snapshots if s.created.isoformat(timespec="microseconds").startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CatalogError(f"no snapshot {ref!r}{where}")
    raise CatalogError(f"snapshot {ref!r}{where} is ambiguous: {len(matches)} snapshots match; give the full name")


def find_disk(runner: RbdRunner, pool: str, namespace: str | None, prefix: str, ref: str) -> DiskEntry:
    """list_disks + resolve_disk: the backup image ``ref`` names, with its snapshots."""
    return resolve_disk(list_disks(runner, pool, namespace, prefix), ref)
