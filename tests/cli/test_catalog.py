# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from backurne_browse.catalog import (
    CatalogError,
    DiskEntry,
    SnapshotEntry,
    disks_from_listing,
    resolve_disk,
    resolve_snapshot,
)

S1 = "backup;daily;30;2026-11-28T10:00:00.000000"
S2 = "backup;hourly;24;2026-11-29T09:00:00.000000"
S3 = "backup;daily;30;2026-11-29T10:00:00.000000"


def head(name: str, size: int = 1024) -> dict[str, Any]:
    return {"image": name, "id": "1", "size": size, "format": 2}


def snap(name: str, snapshot: str, size: int = 1024, snap_id: int = 4) -> dict[str, Any]:
    return {"image": name, "id": "1", "snapshot": snapshot, "snapshot_id": snap_id, "size": size, "format": 2}


LISTING = [
    head("prod;web1;None", 8 << 20),
    # Out of id order on purpose: the snapshot id (Ceph's creation order) decides.
    snap("prod;web1;None", S3, 8 << 20, snap_id=9),
    snap("prod;web1;None", S1, 4 << 20, snap_id=3),
    snap("prod;web1;None", "manual-before-upgrade", snap_id=5),
    snap("prod;web1;None", S2, 6 << 20, snap_id=7),
    head("8eb4-uuid;scsi0;db1", 1 << 30),
    snap("8eb4-uuid;scsi0;db1", S1),
    head("prod;empty;None"),
    head("foreign-image"),
    snap("foreign-image", S1),
    head("backurne-map.0123456789abcdef"),
    head("a;b"),
    {"garbage": True},
]


class TestDisksFromListing:
    def test_only_backup_images_sorted_by_name(self) -> None:
        names = [d.image for d in disks_from_listing(LISTING, "backup")]
        assert names == ["8eb4-uuid;scsi0;db1", "prod;empty;None", "prod;web1;None"]

    def test_fields_sizes_and_snapshots_oldest_first(self) -> None:
        web1 = {d.image: d for d in disks_from_listing(LISTING, "backup")}["prod;web1;None"]
        assert (web1.ident, web1.disk, web1.comment, web1.size) == ("prod", "web1", "None", 8 << 20)
        assert [s.name for s in web1.snapshots] == [S1, S2, S3]
        assert [s.size for s in web1.snapshots] == [4 << 20, 6 << 20, 8 << 20]
        assert web1.snapshots[1].profile == "hourly" and web1.snapshots[1].count == 24
        assert web1.foreign_snapshots == ("manual-before-upgrade",)
        assert web1.newest is not None and web1.newest.name == S3

    def test_snapshot_id_not_name_time_decides_the_order(self) -> None:
        # backurne 2.x named S3 in local time ahead of UTC; S1 was taken after it.
        listing = [
            head("prod;web1;None"),
            snap("prod;web1;None", S1, snap_id=12),
            snap("prod;web1;None", S3, snap_id=11),
        ]
        (web1,) = disks_from_listing(listing, "backup")
        assert [s.name for s in web1.snapshots] == [S3, S1]
        assert web1.newest is not None and web1.newest.name == S1

    def test_to_dict(self) -> None:
        disks = {d.image: d for d in disks_from_listing(LISTING, "backup")}
        summary = disks["prod;web1;None"].to_dict()
        assert summary == {
            "image": "prod;web1;None",
            "ident": "prod",
            "disk": "web1",
            "comment": "None",
            "size": 8 << 20,
            "snapshot_count": 3,
            "newest_snapshot": S3,
            "newest_created": "2026-11-29T10:00:00",
        }
        full = disks["prod;web1;None"].to_dict(with_snapshots=True)
        assert full["snapshots"][0] == {
            "name": S1,
            "profile": "daily",
            "count": 30,
            "created": "2026-11-28T10:00:00",
            "size": 4 << 20,
        }
        assert full["foreign_snapshots"] == ["manual-before-upgrade"]
        empty = disks["prod;empty;None"].to_dict()
        assert empty["snapshot_count"] == 0 and empty["newest_snapshot"] is None

    def test_other_prefix_makes_ours_foreign(self) -> None:
        web1 = {d.image: d for d in disks_from_listing(LISTING, "bk")}["prod;web1;None"]
        assert web1.snapshots == ()
        assert len(web1.foreign_snapshots) == 4

    def test_bad_prefix_raises(self) -> None:
        with pytest.raises(ValueError, match="prefix"):
            disks_from_listing(LISTING, "a;b")


def disk(image: str) -> DiskEntry:
    ident, name, comment = image.split(";")
    return DiskEntry(image, ident, name, comment, 1, (), ())


DISKS = [disk("prod;web1;None"), disk("prod;web2;None"), disk("uuid-1;scsi0;db1"), disk("uuid-1;scsi1;db1")]


class TestResolveDisk:
    @pytest.mark.parametrize(
        ("ref", "expected"),
        [
            ("prod;web1;None", "prod;web1;None"),
            ("prod;web2", "prod;web2;None"),
            ("web1", "prod;web1;None"),
            ("uuid-1;scsi1", "uuid-1;scsi1;db1"),
        ],
    )
    def test_found(self, ref: str, expected: str) -> None:
        assert resolve_disk(DISKS, ref).image == expected

    @pytest.mark.parametrize(("ref", "count"), [("prod", 2), ("db1", 2), ("uuid-1", 2)])
    def test_ambiguous_lists_candidates(self, ref: str, count: int) -> None:
        with pytest.raises(CatalogError, match=f"matches {count} backup images"):
            resolve_disk(DISKS, ref)

    @pytest.mark.parametrize("ref", ["nope", "prod;web3", "web1;None", ""])
    def test_unknown(self, ref: str) -> None:
        with pytest.raises(CatalogError):
            resolve_disk(DISKS, ref)


def entry(name: str) -> SnapshotEntry:
    _prefix, profile, count, created = name.split(";")
    return SnapshotEntry(name, profile, int(count), datetime.fromisoformat(created), None)


SNAPS = [entry(S1), entry(S2), entry(S3)]


class TestResolveSnapshot:
    @pytest.mark.parametrize(
        ("ref", "expected"),
        [
            (S2, S2),
            ("latest", S3),
            ("newest", S3),
            ("2026-11-28", S1),
            ("2026-11-29T09", S2),
            ("2026-11-29T10:00:00", S3),
        ],
    )
    def test_found(self, ref: str, expected: str) -> None:
        assert resolve_snapshot(SNAPS, ref).name == expected

    def test_ambiguous(self) -> None:
        with pytest.raises(CatalogError, match="ambiguous"):
            resolve_snapshot(SNAPS, "2026-11-29", "prod;web1;None")

    def test_missing_names_image(self) -> None:
        with pytest.raises(CatalogError, match="no snapshot '2025' of 'prod;web1;None'"):
            resolve_snapshot(SNAPS, "2025", "prod;web1;None")

    def test_no_snapshots(self) -> None:
        with pytest.raises(CatalogError, match="no backurne snapshot"):
            resolve_snapshot([], "latest", "prod;web1;None")
