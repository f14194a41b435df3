# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.policy import naming
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, SnapName

WHEN = datetime(2018, 6, 1, 15, 44, 26, 72348)


class TestPrefix:
    @pytest.mark.parametrize("prefix", ["backup", "bck-2", "my backup", "BACKUP_x.1"])
    def test_valid(self, prefix: str) -> None:
        assert naming.validate_prefix(prefix) == prefix

    @pytest.mark.parametrize(
        "prefix",
        ["", "ba;ck", "it's", 'say"', "pool/x", "snap@x", " backup", "backup ", "back\nup", "back\x00up", "\x7f"],
    )
    def test_invalid_names_the_culprit(self, prefix: str) -> None:
        with pytest.raises(NamingError) as info:
            naming.validate_prefix(prefix)
        assert "prefix" in str(info.value)
        if prefix:
            assert repr(prefix) in str(info.value)

    def test_not_a_string(self) -> None:
        with pytest.raises(NamingError, match="prefix must be a string"):
            naming.validate_prefix(None)  # type: ignore[arg-type]


class TestSnapName:
    def test_backurne2_name_parses(self) -> None:
        parsed = naming.parse_snap_name("backup;daily;30;2018-06-01T15:44:26.072348", "backup")
        assert parsed == SnapName("backup", "daily", 30, WHEN)
        assert parsed.name == "backup;daily;30;2018-06-01T15:44:26.072348"

    def test_backurne2_name_without_microseconds_parses(self) -> None:
        # datetime.isoformat() drops ".000000" when the microsecond is 0.
        parsed = naming.parse_snap_name("backup;hourly;48;2019-01-02T03:04:05", "backup")
        assert parsed == SnapName("backup", "hourly", 48, datetime(2019, 1, 2, 3, 4, 5))
        # Rebuilt names always carry microseconds; the on-disk name is kept by policy.Snap.
        assert parsed.name == "backup;hourly;48;2019-01-02T03:04:05.000000"

    def test_make_always_writes_microseconds(self) -> None:
        assert (
            naming.make_snap_name("backup", "daily", 30, datetime(2026, 1, 2, 3, 4, 5))
            == "backup;daily;30;2026-01-02T03:04:05.000000"
        )
        assert naming.make_snap_name("backup", "daily", 30, WHEN) == "backup;daily;30;2018-06-01T15:44:26.072348"

    @pytest.mark.parametrize(
        ("prefix", "profile", "count", "created"),
        [
            ("backup", "daily", 30, WHEN),
            ("b", "x", 1, datetime(1, 1, 1)),
            ("my backup", "every-6h", 123456, datetime(9999, 12, 31, 23, 59, 59, 999999)),
        ],
    )
    def test_round_trip(self, prefix: str, profile: str, count: int, created: datetime) -> None:
        name = naming.make_snap_name(prefix, profile, count, created)
        assert naming.parse_snap_name(name, prefix) == SnapName(prefix, profile, count, created)

    @pytest.mark.parametrize(
        "name",
        [
            "manual-before-upgrade",
            "backupdaily;30;2018-06-01T15:44:26.072348",
            "backup2;daily;30;2018-06-01T15:44:26.072348",
            "Backup;daily;30;2018-06-01T15:44:26.072348",
            "xbackup;daily;30;2018-06-01T15:44:26.072348",
            "backup",
            "backup;",
            "backup;daily;30",
            "backup;daily;30;2018-06-01T15:44:26.072348;extra",
            "backup;;30;2018-06-01T15:44:26.072348",
            "backup;daily;0;2018-06-01T15:44:26.072348",
            "backup;daily;-1;2018-06-01T15:44:26.072348",
            "backup;daily;030;2018-06-01T15:44:26.072348",
            "backup;daily;thirty;2018-06-01T15:44:26.072348",
            "backup;daily;30;yesterday",
            "backup;daily;30;2018-13-01T15:44:26.072348",
            "backup;daily;30;2018-06-01 15:44:26.072348",
            "backup;daily;30;2018-06-01T15:44:26.0723",
            "backup;daily;30;2018-06-01T15:44:26.072348+00:00",
            "backup;daily;30;2018-06-01",
            "backup;da'ily;30;2018-06-01T15:44:26.072348",
        ],
    )
    def test_foreign_names_are_not_ours(self, name: str) -> None:
        assert naming.parse_snap_name(name, "backup") is None

    def test_other_prefix_never_parses_as_ours(self) -> None:
        name = naming.make_snap_name("other", "daily", 30, WHEN)
        assert naming.parse_snap_name(name, "backup") is None
        assert naming.parse_snap_name(name, "other") is not None

    def test_bad_prefix_raises_when_parsing(self) -> None:
        with pytest.raises(NamingError, match="prefix"):
            naming.parse_snap_name("x;daily;30;2018-06-01T15:44:26.072348", "x;")

    @pytest.mark.parametrize("profile", ["", "dai;ly", "dai@ly", "a/b", "it's", 'q"', " daily", "da\tily"])
    def test_bad_profile_names_the_culprit(self, profile: str) -> None:
        with pytest.raises(NamingError, match="profile") as info:
            naming.make_snap_name("backup", profile, 30, WHEN)
        if profile:
            assert repr(profile) in str(info.value)

    @pytest.mark.parametrize("count", [0, -3, True, 1.5, "30"])
    def test_bad_count(self, count: object) -> None:
        with pytest.raises(NamingError, match="count"):
            naming.make_snap_name("backup", "daily", count, WHEN)  # type: ignore[arg-type]

    def test_aware_time_refused(self) -> None:
        with pytest.raises(NamingError, match="naive"):
            naming.make_snap_name("backup", "daily", 30, datetime(2026, 1, 1, tzinfo=UTC))
        with pytest.raises(NamingError, match="naive"):
            naming.make_snap_name("backup", "daily", 30, datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))))

    def test_bad_prefix_when_building(self) -> None:
        with pytest.raises(NamingError, match="'ba;ck'"):
            naming.make_snap_name("ba;ck", "daily", 30, WHEN)


class TestBackupImageName:
    def test_plain(self) -> None:
        assert naming.backup_image_name_for_plain("clusterA", "vm-100-disk-0") == "clusterA;vm-100-disk-0;None"

    def test_proxmox(self) -> None:
        uuid = "8eb4a1f2-1b2c-4d5e-8f90-123456789abc"
        assert naming.backup_image_name_for_proxmox(uuid, "scsi0", "web1") == f"{uuid};scsi0;web1"
        assert naming.backup_image_name_for_proxmox("ceph-ssd", "vm-100-disk-0", None) == "ceph-ssd;vm-100-disk-0;None"

    def test_round_trip(self) -> None:
        name = naming.backup_image_name_for_proxmox("ident", "scsi1", "db-1")
        parsed = naming.parse_backup_image_name(name)
        assert parsed == naming.BackupImageName("ident", "scsi1", "db-1")
        assert parsed.name == name

    def test_backurne2_plain_name(self) -> None:
        assert naming.parse_backup_image_name("cute-cluster;vm-1;None") == naming.BackupImageName(
            "cute-cluster", "vm-1", "None"
        )

    @pytest.mark.parametrize("name", ["plain-image", "a;b", "a;b;c;d", ";disk;c", "ident;;c", ""])
    def test_foreign_images(self, name: str) -> None:
        assert naming.parse_backup_image_name(name) is None

    def test_image_with_semicolon_is_reported_not_mangled(self) -> None:
        with pytest.raises(NamingError, match="'odd;name'") as info:
            naming.backup_image_name_for_plain("clusterA", "odd;name")
        assert "IDENT;DISK;COMMENT" in str(info.value)

    @pytest.mark.parametrize(
        ("args", "culprit"),
        [
            (("clu;ster", "img"), "'clu;ster'"),
            (("", "img"), "cluster name"),
            (("clusterA", ""), "image"),
            (("clusterA", "a/b"), "'a/b'"),
            (("clusterA", "a@b"), "'a@b'"),
        ],
    )
    def test_plain_invalid(self, args: tuple[str, str], culprit: str) -> None:
        with pytest.raises(NamingError, match=culprit):
            naming.backup_image_name_for_plain(*args)

    @pytest.mark.parametrize(
        ("args", "culprit"),
        [
            (("id;x", "scsi0", "vm"), "'id;x'"),
            (("id", "scsi;0", "vm"), "'scsi;0'"),
            (("id", "scsi0", "v;m"), "'v;m'"),
            (("id", "scsi0", ""), "VM name"),
        ],
    )
    def test_proxmox_invalid(self, args: tuple[str, str, str], culprit: str) -> None:
        with pytest.raises(NamingError, match=culprit):
            naming.backup_image_name_for_proxmox(*args)


class TestImageSpec:
    def test_forms(self) -> None:
        assert naming.image_spec("rbd", None, "img") == "rbd/img"
        assert naming.image_spec("rbd", "", "img") == "rbd/img"
        assert naming.image_spec("rbd", "ns", "img") == "rbd/ns/img"
        snap = "backup;daily;30;2018-06-01T15:44:26.072348"
        assert naming.image_spec("rbd", "ns", "img", snap) == f"rbd/ns/img@{snap}"
        assert naming.image_spec("backups", None, "c;img;None", snap) == f"backups/c;img;None@{snap}"

    @pytest.mark.parametrize(
        ("args", "culprit"),
        [
            (("", None, "img"), "pool"),
            (("a/b", None, "img"), "'a/b'"),
            (("-rbd", None, "img"), "'-rbd'"),
            (("rbd", "n/s", "img"), "'n/s'"),
            (("rbd", None, ""), "image"),
            (("rbd", None, "i@g"), "'i@g'"),
            (("rbd", None, "img", ""), "snapshot"),
            (("rbd", None, "img", "a@b"), "'a@b'"),
        ],
    )
    def test_invalid(self, args: tuple, culprit: str) -> None:
        with pytest.raises(NamingError, match=culprit):
            naming.image_spec(*args)
