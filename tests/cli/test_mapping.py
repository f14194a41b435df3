# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The pure parts of file-level access: names, mount options, parsers, records, and the safe
# extraction, on plain directories standing in for mounted filesystems. The Ceph/kernel side
# (clone, rbd-fuse, loop devices, mounts) is tested against the lab in
# tests/integration/test_cli_mapping.py.
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from backurne_browse import mapping as m
from backurne_core.ceph.rbd import CephAccess, RbdRunner
from backurne_core.policy.naming import parse_backup_image_name

SNAP = "backup;daily;30;2026-11-29T10:00:00.000000"


class TestNames:
    def test_id_is_stable_and_distinct(self) -> None:
        first = m.mapping_id("rbd", None, "c;web;None", SNAP)
        assert first == m.mapping_id("rbd", "", "c;web;None", SNAP)
        assert len(first) == 16 and int(first, 16) >= 0
        others = {
            m.mapping_id("rbd", "ns", "c;web;None", SNAP),
            m.mapping_id("other", None, "c;web;None", SNAP),
            m.mapping_id("rbd", None, "c;web2;None", SNAP),
            m.mapping_id("rbd", None, "c;web;None", SNAP.replace("10:00", "11:00")),
            # A naive concatenation would make these two collide.
            m.mapping_id("rbd", None, "c;web;None@x", "y"),
            m.mapping_id("rbd", None, "c;web;None", "x@y"),
        }
        assert first not in others and len(others) == 6

    def test_clone_is_never_a_backup_image(self) -> None:
        clone = m.clone_name(m.mapping_id("rbd", None, "c;web;None", SNAP))
        assert parse_backup_image_name(clone) is None
        assert m.is_mapping_clone(clone)
        assert not m.is_mapping_clone("c;web;None")
        assert not m.is_mapping_clone("backurne-map.x;y;z")  # looks like a backup image: never ours to remove


class TestMountOptions:
    def test_ext4_never_replays_the_journal(self) -> None:
        options = m.mount_options("ext4").split(",")
        assert "ro" in options and "noload" in options
        assert {"nodev", "nosuid", "noexec"} <= set(options)

    def test_xfs_no_log_recovery_and_duplicate_uuid(self) -> None:
        options = m.mount_options("xfs").split(",")
        assert {"ro", "norecovery", "nouuid"} <= set(options)

    def test_btrfs_no_log_replay(self) -> None:
        assert "rescue=nologreplay" in m.mount_options("btrfs").split(",")

    @pytest.mark.parametrize("fstype", ["swap", "LVM2_member", "crypto_LUKS", "zfs_member", ""])
    def test_not_mounted(self, fstype: str) -> None:
        assert m.mount_options(fstype) is None

    def test_every_option_set_is_read_only(self) -> None:
        for fstype in m.SAFE_MOUNT_OPTIONS:
            assert m.mount_options(fstype).startswith("ro,")


class TestParsers:
    def test_partx_skips_extended_and_junk(self) -> None:
        out = "1 2048 30720 0x83\n2 32768 100000 0x5\n5 34816 20480 0x83\nNR START\n\n6 1 2\n"
        assert m.parse_partx(out) == [
            m.PartitionEntry(1, 2048, 30720, "0x83"),
            m.PartitionEntry(5, 34816, 20480, "0x83"),
            m.PartitionEntry(6, 1, 2, ""),
        ]

    def test_partx_gpt_type_guid(self) -> None:
        guid = "0fc63daf-8483-4772-8e79-3d69d8477de4"
        assert m.parse_partx(f"1 2048 4096 {guid.upper()}\n")[0].type == guid

    def test_blkid_export(self) -> None:
        out = "DEVNAME=/dev/loop3\nUUID=1234\nTYPE=ext4\nUSAGE=filesystem\nnoise\n"
        assert m.parse_blkid_export(out) == {
            "DEVNAME": "/dev/loop3",
            "UUID": "1234",
            "TYPE": "ext4",
            "USAGE": "filesystem",
        }

    def test_mountinfo_unescapes_blanks(self) -> None:
        info = (
            "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n"
            "37 35 0:5 / /var/lib/backurne/mappings/ab/fuse ro - fuse.rbd-fuse rbd-fuse ro\n"
        )
        assert m.mounted_paths(info) == {"/mnt/with space", "/var/lib/backurne/mappings/ab/fuse"}

    def test_mountinfo_of_this_process_has_root(self) -> None:
        assert "/" in m.mounted_paths()


def make_mapping(tmp_path: Path, names: Sequence[str] = ("disk",)) -> m.Mapping:
    record = m.Mapping(
        id="0123456789abcdef",
        pool="rbd",
        namespace=None,
        image="c;web;None",
        snapshot=SNAP,
        clone=m.clone_name("0123456789abcdef"),
        created="2026-11-30T00:00:00",
        root=str(tmp_path / "root"),
        method="fuse",
        status="mapped",
    )
    for name in names:
        mountpoint = tmp_path / "mnt" / name
        mountpoint.mkdir(parents=True)
        record.filesystems.append(m.Filesystem(name, f"/dev/loop9{name}", "ext4", str(mountpoint), "ro"))
    return record


def test_record_round_trip(tmp_path: Path) -> None:
    record = make_mapping(tmp_path, ["p1", "p2"])
    record.filesystems.append(m.Filesystem("p3", "/dev/loop7", None, None, None, "no recognisable filesystem"))
    record.loop_devices = ["/dev/loop5", "/dev/loop6"]
    data = record.to_dict()
    assert data["version"] == m.RECORD_VERSION
    again = m.Mapping.from_dict(data)
    assert again == record
    assert [fs.name for fs in again.mounted] == ["p1", "p2"]


class TestSplitRelative:
    @pytest.mark.parametrize(
        ("path", "parts"), [("etc/hostname", ["etc", "hostname"]), ("./a//b/", ["a", "b"]), (".", [])]
    )
    def test_ok(self, path: str, parts: list[str]) -> None:
        assert m.split_relative(path) == parts

    @pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "a\0b"])
    def test_refused(self, path: str) -> None:
        with pytest.raises(m.UnsafePath):
            m.split_relative(path)


@pytest.fixture
def snapshot_tree(tmp_path: Path) -> m.Mapping:
    """A "mounted" filesystem: files, a nested dir, safe and escaping symlinks, a fifo."""
    record = make_mapping(tmp_path)
    root = Path(record.filesystems[0].mountpoint or "")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("web1\n")
    (root / "etc" / "deep").mkdir()
    (root / "etc" / "deep" / "blob").write_bytes(os.urandom(5000))
    (root / "etc" / "inner-link").symlink_to("hostname")
    (root / "etc" / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "etc" / "fifo")
    (root / "abs-escape").symlink_to("/etc")
    (root / "rel-escape").symlink_to("../../..")
    (root / "ok-link").symlink_to("etc/hostname")
    secret = tmp_path / "outside-secret"
    secret.write_text("host secret")
    (root / "to-secret").symlink_to(secret)
    return record


class TestCopyOut:
    def test_file_and_directory(self, snapshot_tree: m.Mapping, tmp_path: Path) -> None:
        dest = tmp_path / "dest"
        dest.mkdir()
        done = m.copy_out(snapshot_tree, ["etc/hostname", "etc"], str(dest))
        root = Path(snapshot_tree.filesystems[0].mountpoint or "")
        assert (dest / "hostname").read_text() == "web1\n"
        assert (dest / "etc" / "deep" / "blob").read_bytes() == (root / "etc" / "deep" / "blob").read_bytes()
        # Symlinks are copied as links, never followed; the fifo is skipped, not read.
        assert os.readlink(dest / "etc" / "inner-link") == "hostname"
        assert not (dest / "etc" / "fifo").exists()
        assert done[1]["skipped"] == ["etc/fifo"]
        assert done[0] == {
            "path": "etc/hostname",
            "filesystem": "disk",
            "to": str(dest / "hostname"),
            "type": "file",
            "bytes": 5,
            "skipped": [],
        }
        assert done[1]["type"] == "directory" and done[1]["bytes"] == 5 + 5000

    def test_symlink_inside_is_followed(self, snapshot_tree: m.Mapping, tmp_path: Path) -> None:
        dest = tmp_path / "dest"
        dest.mkdir()
        m.copy_out(snapshot_tree, ["ok-link"], str(dest))
        assert (dest / "hostname").read_text() == "web1\n"

    @pytest.mark.parametrize(
        "path", ["abs-escape", "abs-escape/passwd", "rel-escape", "to-secret", "../outside-secret", "/etc/passwd"]
    )
    def test_escapes_refused_and_nothing_written(self, snapshot_tree: m.Mapping, tmp_path: Path, path: str) -> None:
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(m.UnsafePath):
            m.copy_out(snapshot_tree, ["etc/hostname", path], str(dest))
        assert list(dest.iterdir()) == []

    def test_never_overwrites(self, snapshot_tree: m.Mapping, tmp_path: Path) -> None:
        dest = tmp_path / "dest"
        dest.mkdir()
        (dest / "hostname").write_text("mine")
        with pytest.raises(m.MappingError, match="already exists"):
            m.copy_out(snapshot_tree, ["etc/deep", "etc/hostname"], str(dest))
        assert (dest / "hostname").read_text() == "mine"
        assert not (dest / "deep").exists()

    def test_same_base_name_twice_refused(self, snapshot_tree: m.Mapping, tmp_path: Path) -> None:
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(m.MappingError, match="already exists"):
            m.copy_out(snapshot_tree, ["etc/hostname", "ok-link"], str(dest))

    def test_missing_path_and_bad_destination(self, snapshot_tree: m.Mapping, tmp_path: Path) -> None:
        with pytest.raises(m.MappingError, match="no 'etc/nope' in the snapshot"):
            m.copy_out(snapshot_tree, ["etc/nope"], str(tmp_path))
        with pytest.raises(m.MappingError, match="not a directory"):
            m.copy_out(snapshot_tree, ["etc"], str(tmp_path / "missing"))
        with pytest.raises(m.MappingError, match="no path"):
            m.copy_out(snapshot_tree, [], str(tmp_path))

    def test_several_filesystems_need_a_name(self, tmp_path: Path) -> None:
        record = make_mapping(tmp_path, ["p1", "p2"])
        for name in ("p1", "p2"):
            Path(tmp_path / "mnt" / name / "f").write_text(name)
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(m.MappingError, match=r"must start with a filesystem name \(p1, p2\)"):
            m.copy_out(record, ["f"], str(dest))
        m.copy_out(record, ["p2/f"], str(dest))
        assert (dest / "f").read_text() == "p2"

    def test_no_filesystem_mounted(self, tmp_path: Path) -> None:
        record = make_mapping(tmp_path, [])
        with pytest.raises(m.MappingError, match="no filesystem is mounted"):
            m.copy_out(record, ["etc"], str(tmp_path))


class FakeCommands:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> m.CommandResult:
        self.calls.append(list(argv))
        return 1, "", "should not be called"


class TestMapperGuards:
    def mapper(self, tmp_path: Path, commands: FakeCommands) -> m.Mapper:
        runner = RbdRunner(CephAccess(ceph_conf="/nonexistent/ceph.conf"), default_timeout=5)
        return m.Mapper(runner, "rbd", None, str(tmp_path / "state"), command=commands)

    def test_refuses_a_non_backup_image_before_any_command(self, tmp_path: Path) -> None:
        commands = FakeCommands()
        with pytest.raises(m.MappingError, match="not a backup image name"):
            self.mapper(tmp_path, commands).map("backurne-map.0123", SNAP)
        assert commands.calls == []

    def test_state_dir_is_private_and_listing_empty(self, tmp_path: Path) -> None:
        mapper = self.mapper(tmp_path, FakeCommands())
        assert mapper.list_mapped() == []
        mapper._prepare_state_dir()
        assert (tmp_path / "state" / "mappings").stat().st_mode & 0o777 == 0o700

    def test_records_are_listed_and_found(self, tmp_path: Path) -> None:
        mapper = self.mapper(tmp_path, FakeCommands())
        mapper._prepare_state_dir()
        record = make_mapping(tmp_path)
        record.id = m.mapping_id("rbd", None, record.image, record.snapshot)
        mapper._save(record)
        assert mapper.list_mapped() == [record]
        assert mapper.get(record.image, record.snapshot) == record
        assert mapper.get(record.image, "other") is None

    def test_unreadable_record_is_an_error_naming_it(self, tmp_path: Path) -> None:
        mapper = self.mapper(tmp_path, FakeCommands())
        mapper._prepare_state_dir()
        (tmp_path / "state" / "mappings" / "bad.json").write_text("{")
        with pytest.raises(m.MappingError, match=r"bad\.json is unreadable"):
            mapper.list_mapped()

    def test_unknown_method_refused(self, tmp_path: Path) -> None:
        runner = RbdRunner(CephAccess())
        with pytest.raises(ValueError, match="krbd"):
            m.Mapper(runner, "rbd", None, str(tmp_path), method="krbd")
