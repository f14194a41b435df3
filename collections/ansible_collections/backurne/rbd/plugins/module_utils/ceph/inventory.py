# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# What a pool holds, parsed: every image with its backurne snapshots (profile, count, creation,
# expiry) and the foreign ones, optionally each image's backurne metadata. The info module's job,
# without Ansible: one `rbd ls -l` for the listing, one metadata read per image when asked.
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import parse_backup_image_name
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    Profile,
    Snap,
    parse_profiles,
)

# Image metadata keys that are backurne's (e.g. backurne.pve.config); other keys are not reported.
META_PREFIX = "backurne."


class InventoryError(Exception):
    """Bad input or a failed read: the message names the option, the pool or the image."""


def describe_image(
    name: str, snap_names: Sequence[str], prefix: str, profiles: Mapping[str, Profile] | None
) -> dict[str, Any]:
    """One image of the listing: its name parsed, our snapshots parsed (in the listed order, the
    last is the newest), and the snapshots that are not ours."""
    parsed = parse_backup_image_name(name)
    ours: list[Snap] = []
    foreign: list[str] = []
    for snap_name in snap_names:
        snap = Snap.from_name(snap_name, prefix)
        if snap is None:
            foreign.append(snap_name)
        else:
            ours.append(snap)
    return {
        "name": name,
        "ident": parsed.ident if parsed else None,
        "disk": parsed.disk if parsed else None,
        "comment": parsed.comment if parsed else None,
        "snapshots": [_describe_snap(snap, profiles) for snap in ours],
        "foreign_snapshots": foreign,
    }


def _describe_snap(snap: Snap, profiles: Mapping[str, Profile] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": snap.name,
        "profile": snap.profile,
        "count": snap.count,
        "created": snap.created.isoformat(),
    }
    if profiles is not None:
        expires = snap.expires_at(profiles)
        if expires is not None:
            entry["expires"] = expires.isoformat()
    return entry


def parse_optional_profiles(raw: Mapping[str, Any] | None) -> dict[str, Profile] | None:
    """The profiles that give each snapshot its expiry; None when not given (no expiry reported)."""
    if raw is None:
        return None
    try:
        return parse_profiles(raw)
    except PolicyError as exc:
        raise InventoryError(f"profiles: {exc}") from None


@dataclass(frozen=True)
class PoolInventory:
    """The listing of one pool (or namespace), parsed; ``images`` empty means every image."""

    runner: RbdRunner
    pool: str
    namespace: str | None
    prefix: str
    profiles: Mapping[str, Profile] | None = None
    images: Sequence[str] = ()
    with_meta: bool = False

    @property
    def where(self) -> str:
        return self.pool + (f"/{self.namespace}" if self.namespace else "")

    def run(self) -> dict[str, Any]:
        """The info module's result: ``images`` (parsed, sorted by name) and ``snapshots``
        (every snapshot name per image, in Ceph's creation order, for the other modules)."""
        listing = self._listing()
        described = [describe_image(name, snaps, self.prefix, self.profiles) for name, snaps in sorted(listing.items())]
        if self.with_meta:
            for image in described:
                image["meta"] = self._backurne_meta(image["name"])
        return {"changed": False, "images": described, "snapshots": listing}

    def _listing(self) -> dict[str, list[str]]:
        try:
            listing = self.runner.list_images(self.pool, self.namespace)
        except RbdError as exc:
            raise InventoryError(f"listing pool {self.where}: {exc}") from None
        wanted = set(self.images)
        if not wanted:
            return listing
        return {name: snaps for name, snaps in listing.items() if name in wanted}

    def _backurne_meta(self, image: str) -> dict[str, str]:
        try:
            meta = self.runner.image_meta(ImageSpec(self.pool, self.namespace, image))
        except RbdError as exc:
            raise InventoryError(f"image {image!r} in pool {self.where}: reading its metadata: {exc}") from None
        return {key: value for key, value in meta.items() if key.startswith(META_PREFIX)}
