# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Space used by the backups: one ``rbd du --format json`` per backup pool, per image and in total.

``rbd du`` lists one entry per snapshot (``used_size``: what that snapshot holds beyond the
previous one) and one for the image HEAD (no ``snapshot`` key). An image's ``used`` is the sum of
its entries, snapshots included; ``provisioned`` is the HEAD's size. With the fast-diff feature
(the default) ``rbd du`` reads object maps and is quick, object-granular (4 MiB); without it
rbd scans every object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import parse_backup_image_name
from ansible_collections.backurne.rbd.plugins.module_utils.report.units import human_bytes


@dataclass
class ImageUsage:
    name: str
    provisioned: int = 0
    used: int = 0
    used_snapshots: int = 0
    snapshots: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PoolUsage:
    pool: str
    namespace: str | None
    images: list[ImageUsage] = field(default_factory=list)

    @property
    def total_used(self) -> int:
        return sum(image.used for image in self.images)

    @property
    def total_provisioned(self) -> int:
        return sum(image.provisioned for image in self.images)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "namespace": self.namespace,
            "images": [image.to_dict() for image in self.images],
            "total_used": self.total_used,
            "total_provisioned": self.total_provisioned,
            "image_count": len(self.images),
        }


def is_backup_image(name: str) -> bool:
    return parse_backup_image_name(name) is not None


def parse_du(
    document: Mapping[str, Any], pool: str, namespace: str | None = None, backup_only: bool = True
) -> PoolUsage:
    """``rbd du --format json`` of a pool -> per image usage (backup images only, unless told)."""
    entries = document.get("images") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError("rbd du: no 'images' list in its JSON output")
    by_name: dict[str, ImageUsage] = {}
    for entry in entries:
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or (backup_only and not is_backup_image(name)):
            continue
        usage = by_name.setdefault(name, ImageUsage(name))
        used = int(entry.get("used_size") or 0)
        usage.used += used
        if "snapshot" in entry:
            usage.snapshots += 1
            usage.used_snapshots += used
        else:
            usage.provisioned = int(entry.get("provisioned_size") or 0)
    return PoolUsage(pool, namespace, [by_name[name] for name in sorted(by_name)])


def collect_stats(runner: RbdRunner, pool: str, namespace: str | None = None, backup_only: bool = True) -> PoolUsage:
    """One ``rbd du`` of ``pool`` (``namespace``) through ``runner``; for the module and ``backurne stats``.

    ``runner`` is a local RbdRunner of the backup cluster (``RbdRunner(CephAccess(...))``).
    Raises RbdError when rbd fails, ValueError when its output is not what 16.2 prints.
    """
    args = ["du", f"--pool={pool}"]
    if namespace:
        args.append(f"--namespace={namespace}")
    # rbd du takes long on big pools without fast-diff: no short default timeout.
    return parse_du(runner.json(args, timeout=3600), pool, namespace, backup_only)


def format_stats(usage: PoolUsage) -> str:
    """A table (image, snapshots, provisioned, used, of which snapshots) and a total line, for the CLI."""
    header = ("image", "snaps", "provisioned", "used", "in snapshots")
    rows = [header]
    for image in usage.images:
        rows.append(
            (
                image.name,
                str(image.snapshots),
                human_bytes(image.provisioned),
                human_bytes(image.used),
                human_bytes(image.used_snapshots),
            )
        )
    widths = [max(len(row[index]) for row in rows) for index in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip_strict(row, widths)).rstrip() for row in rows]
    where = usage.pool + (f"/{usage.namespace}" if usage.namespace else "")
    lines.append(
        f"{len(usage.images)} image(s) in {where}: {human_bytes(usage.total_used)} used, "
        f"{human_bytes(usage.total_provisioned)} provisioned"
    )
    return "\n".join(lines)
