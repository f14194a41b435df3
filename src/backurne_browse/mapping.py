# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# File-level access to a backup snapshot without copying it: a clone of the snapshot on the
# backup cluster, exposed as a block device, its filesystems mounted read-only.
#
#   snapshot --rbd clone (format 2)--> backurne-map.<id>
#     NBD kernel:  rbd-nbd map --read-only                 -> /dev/nbdX
#     otherwise:   rbd-fuse --image=CLONE (a file) -> losetup -r -P --find --show -> /dev/loopN
#   partitions: the kernel's (loopNpM) or, when the kernel has no partition table support
#   (the lab's), one read-only loop device per partition at its offset (partx reads the table)
#   filesystems: blkid -p, then mount -t TYPE with safe read-only options (no journal replay,
#   never a repair)
#
# Why a clone, and why its name: a clone is copy-on-write, created in milliseconds whatever the
# size. It is named `backurne-map.<16 hex>` (no ';'), which parse_backup_image_name() never
# accepts, so the retention, transfer, info/catalog and check code, which only act on
# IDENT;DISK;COMMENT images, never take it for a backup. While it exists:
#   * `rbd snap rm` of the mapped backup snapshot (retention expiring it) does not destroy the
#     data under the clone: with clone format 2 Ceph moves the snapshot into the image's trash
#     snapshot namespace, the clone keeps reading it, and Ceph deletes it when the last clone
#     goes away (at unmap). Verified on 16.2 (tests/integration/test_cli_mapping.py).
#   * `rbd rm` of the backup image fails ("image has snapshots with linked clones"), so a
#     fade-out removal of the image fails safely for that image and is retried next run.
#   * incremental transfers into the backup image go on: a clone pins a snapshot, not the head.
#
# Every mapping is recorded in STATE_DIR/mappings/<id>.json, written after each step, so that
# list-mapped works across processes and unmap can undo a half-made mapping (a crash, a
# failure): the record is the undo log. STATE_DIR/mappings is 0700: the mounted files are the
# backed-up machines' files.
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from backurne_core.ceph.rbd import ImageSpec, RbdError, RbdRunner, stderr_cause
from backurne_core.policy.naming import parse_backup_image_name

CLONE_PREFIX = "backurne-map."
RECORD_VERSION = 1

# Options for a read-only mount that never writes to, replays or repairs the filesystem. A
# crash-consistent snapshot often has a dirty journal/log: ext3/4 `noload` and xfs
# `norecovery` skip its replay (a read-only device could not take it anyway); xfs `nouuid`
# lets the snapshot mount beside the live filesystem it was taken from (same UUID).
_COMMON_OPTIONS = "ro,nodev,nosuid,noexec"
SAFE_MOUNT_OPTIONS: dict[str, str] = {
    "ext4": "noload",
    "ext3": "noload",
    "ext2": "",
    "xfs": "norecovery,nouuid",
    "btrfs": "rescue=nologreplay",
    "vfat": "",
    "exfat": "",
    "ntfs3": "",
    "iso9660": "",
    "squashfs": "",
    "erofs": "",
}
# Partition table entries that are containers, not filesystems (MBR extended partitions).
_EXTENDED_TYPES = {"0x5", "0xf", "0x85"}

_DEFAULT_TIMEOUT = 60.0


class MappingError(RuntimeError):
    """Mapping, unmapping or extracting failed; the message names the image and snapshot."""


class AlreadyMapped(MappingError):
    def __init__(self, mapping: Mapping) -> None:
        super().__init__(f"snapshot {mapping.snapshot!r} of {mapping.image!r} is already mapped (id {mapping.id})")
        self.mapping = mapping


class NotMapped(MappingError):
    pass


class UnsafePath(MappingError):
    """A path to extract is absolute, has '..', or resolves outside the snapshot's filesystem."""


def mapping_id(pool: str, namespace: str | None, image: str, snapshot: str) -> str:
    """A stable id for one snapshot of one image: the same snapshot maps to the same clone."""
    key = json.dumps([pool, namespace or "", image, snapshot])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def clone_name(ident: str) -> str:
    return f"{CLONE_PREFIX}{ident}"


def is_mapping_clone(image: str) -> bool:
    """Whether an image name is one of our file-level access clones (never a backup image)."""
    return image.startswith(CLONE_PREFIX) and parse_backup_image_name(image) is None


def mount_options(fstype: str) -> str | None:
    """The read-only mount options for ``fstype``; None when we do not mount that type."""
    extra = SAFE_MOUNT_OPTIONS.get(fstype)
    if extra is None:
        return None
    return f"{_COMMON_OPTIONS},{extra}" if extra else _COMMON_OPTIONS


@dataclass(frozen=True)
class PartitionEntry:
    number: int
    start_sector: int
    sectors: int
    type: str


def parse_partx(output: str) -> list[PartitionEntry]:
    """Entries of `partx -g -r -o NR,START,SECTORS,TYPE DEV`, extended containers left out."""
    entries = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 3 or not all(f.isdigit() for f in fields[:3]):
            continue
        part_type = fields[3].lower() if len(fields) > 3 else ""
        if part_type in _EXTENDED_TYPES:
            continue
        entries.append(PartitionEntry(int(fields[0]), int(fields[1]), int(fields[2]), part_type))
    return entries


def parse_blkid_export(output: str) -> dict[str, str]:
    """KEY=VALUE lines of `blkid -p -o export`."""
    values = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _unescape_mountinfo(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def loop_devices_backed_by(path: str) -> list[str]:
    """The loop devices whose backing file is ``path`` (from sysfs)."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip() == path:
                found.append(f"/dev/{backing.parent.parent.name}")
    return sorted(found)


def mounted_paths(mountinfo: str | None = None) -> set[str]:
    """Mount points in /proc/self/mountinfo (or the given text)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return set()
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.add(_unescape_mountinfo(fields[4]))
    return points


@dataclass
class Filesystem:
    """One filesystem (or would-be filesystem) of a mapped snapshot."""

    name: str  # "disk" for a filesystem on the whole disk, "p1", "p2", ... for partitions
    device: str
    fstype: str | None = None
    mountpoint: str | None = None
    options: str | None = None
    error: str | None = None


@dataclass
class Mapping:
    """The record of one mapped snapshot (STATE_DIR/mappings/<id>.json)."""

    id: str
    pool: str
    namespace: str | None
    image: str
    snapshot: str
    clone: str
    created: str
    root: str
    method: str | None = None  # "fuse" or "nbd"
    status: str = "mapping"  # "mapping" while being made, then "mapped"
    fuse_dir: str | None = None
    image_file: str | None = None
    base_device: str | None = None
    loop_devices: list[str] = field(default_factory=list)
    filesystems: list[Filesystem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = RECORD_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mapping:
        data = dict(data)
        data.pop("version", None)
        filesystems = [Filesystem(**item) for item in data.pop("filesystems", [])]
        return cls(**data, filesystems=filesystems)

    @property
    def mounted(self) -> list[Filesystem]:
        return [fs for fs in self.filesystems if fs.mountpoint and not fs.error]

    @property
    def label(self) -> str:
        return f"snapshot {self.snapshot!r} of {self.image!r}"


# (exit status or None on timeout, stdout, stderr); strings, so that no `X | None` is evaluated.
CommandResult: TypeAlias = "tuple[int | None, str, str]"
CommandRunner: TypeAlias = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run argv (never a shell): (rc or None on timeout, stdout, stderr).

    stderr goes through a file, not a pipe: rbd-fuse daemonizes, and a daemon holding a pipe
    open would make us wait for it until the timeout.
    """
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout, check=False
            )
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
        except OSError as exc:
            return 127, "", f"cannot run {argv[0]}: {exc}"
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")


class Mapper:
    """Maps backup snapshots of one backup pool[/namespace] for file-level access on this host."""

    def __init__(
        self,
        runner: RbdRunner,
        pool: str,
        namespace: str | None,
        state_dir: str,
        *,
        command: CommandRunner = run_command,
        timeout: float = _DEFAULT_TIMEOUT,
        method: str | None = None,
    ) -> None:
        self.runner = runner
        self.pool = pool
        self.namespace = namespace or None
        # Real path: the kernel reports loop backing files and mount points that way.
        self.state_dir = Path(os.path.realpath(state_dir))
        self.records = self.state_dir / "mappings"
        self.command = command
        self.timeout = timeout
        if method not in (None, "fuse", "nbd"):
            raise ValueError(f"mapping method must be 'fuse' or 'nbd', got {method!r}")
        self.method = method

    # -- records ----------------------------------------------------------------------

    def _prepare_state_dir(self) -> None:
        try:
            self.records.mkdir(parents=True, exist_ok=True)
            os.chmod(self.records, 0o700)
        except OSError as exc:
            raise MappingError(f"state directory {self.records}: {exc.strerror}") from None

    def _record_path(self, ident: str) -> Path:
        return self.records / f"{ident}.json"

    def _save(self, mapping: Mapping) -> None:
        path = self._record_path(mapping.id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(mapping.to_dict(), indent=2, sort_keys=True))
        os.replace(tmp, path)

    def _load(self, ident: str) -> Mapping | None:
        try:
            return Mapping.from_dict(json.loads(self._record_path(ident).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise MappingError(f"mapping record {self._record_path(ident)} is unreadable: {exc}") from None

    @contextlib.contextmanager
    def _locked(self, ident: str) -> Iterator[None]:
        self._prepare_state_dir()
        with open(self.records / f"{ident}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def list_mapped(self) -> list[Mapping]:
        """Every mapping recorded in the state directory (any pool), oldest first."""
        if not self.records.is_dir():
            return []
        found = []
        for path in sorted(self.records.glob("*.json")):
            mapping = self._load(path.stem)
            if mapping is not None:
                found.append(mapping)
        return sorted(found, key=lambda m: (m.created, m.id))

    def get(self, image: str, snapshot: str) -> Mapping | None:
        """The mapping of image@snapshot in this pool, or None."""
        return self._load(mapping_id(self.pool, self.namespace, image, snapshot))

    # -- commands ---------------------------------------------------------------------

    def _run(self, argv: Sequence[str], what: str, label: str, timeout: float | None = None) -> str:
        limit = self.timeout if timeout is None else timeout
        rc, out, err = self.command(argv, limit)
        if rc != 0:
            cause = f"timed out after {limit:g} s" if rc is None else (stderr_cause(err) or f"exit status {rc}")
            raise MappingError(f"{label}: {what} failed: {argv[0]}: {cause}")
        return out

    def _ceph_words(self) -> list[str]:
        # --cluster/--id/--keyring/-c, the words every Ceph client tool takes.
        return self.runner.access.rbd_argv()[1:]

    def _spec(self, image: str, snapshot: str | None = None) -> ImageSpec:
        return ImageSpec(self.pool, self.namespace, image, snapshot)

    def _choose_method(self) -> str:
        if self.method:
            return self.method
        if shutil.which("rbd-nbd") and any(Path("/dev").glob("nbd[0-9]*")):
            return "nbd"
        if shutil.which("rbd-fuse"):
            return "fuse"
        raise MappingError("neither rbd-nbd (with /dev/nbd* in the kernel) nor rbd-fuse is available on this host")

    # -- map --------------------------------------------------------------------------

    def map(self, image: str, snapshot: str) -> Mapping:
        """Clone, expose and mount image@snapshot read-only; AlreadyMapped if it is mapped.

        On failure everything done so far is undone and MappingError names image and snapshot.
        """
        label = f"snapshot {snapshot!r} of {image!r}"
        if parse_backup_image_name(image) is None:
            raise MappingError(f"{label}: {image!r} is not a backup image name (IDENT;DISK;COMMENT)")
        ident = mapping_id(self.pool, self.namespace, image, snapshot)
        with self._locked(ident):
            existing = self._load(ident)
            if existing is not None:
                raise AlreadyMapped(existing)
            try:
                found = self.runner.exists(self._spec(image, snapshot))
            except RbdError as exc:
                raise MappingError(f"{label}: {exc}") from None
            if not found:
                where = f"{self.pool}/{self.namespace}" if self.namespace else self.pool
                raise MappingError(f"{label}: no such snapshot in pool {where}")
            method = self._choose_method()
            root = self.records / ident
            created = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
            mapping = self._record(ident, image, snapshot, created, method)
            root.mkdir(mode=0o700, exist_ok=True)
            self._save(mapping)
            try:
                self._make_clone(mapping)
                if method == "nbd":
                    self._expose_nbd(mapping)
                else:
                    self._expose_fuse(mapping)
                self._attach_partitions(mapping)
                self._mount_all(mapping)
            except BaseException:
                with contextlib.suppress(MappingError, RbdError, OSError):
                    self._teardown(mapping)
                raise
            mapping.status = "mapped"
            self._save(mapping)
            return mapping

    def _make_clone(self, mapping: Mapping) -> None:
        clone = self._spec(mapping.clone)
        try:
            info = self.runner.image_info(clone)
        except RbdError as exc:
            if not exc.is_not_found:
                raise MappingError(f"{mapping.label}: {exc}") from None
            info = None
        if info is not None:
            # Left by an interrupted map (no record survived): reuse it only if it is a clone
            # of this very snapshot.
            parent = info.get("parent") or {}
            if (parent.get("image"), parent.get("snapshot")) != (mapping.image, mapping.snapshot):
                raise MappingError(f"{mapping.label}: image {mapping.clone!r} exists and is not a clone of it")
            return
        source = self._spec(mapping.image, mapping.snapshot)
        args = ["clone", "--rbd-default-clone-format=2", *source.options()]
        args += [f"--dest-pool={self.pool}"]
        if self.namespace:
            args.append(f"--dest-namespace={self.namespace}")
        args.append(f"--dest={mapping.clone}")
        try:
            self.runner.run(args)
        except RbdError as exc:
            raise MappingError(f"{mapping.label}: cloning it: {exc}") from None

    def _wait_mounted(self, path: str, present: bool, label: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while (path in mounted_paths()) != present:
            if time.monotonic() > deadline:
                raise MappingError(f"{label}: {what}: {path} still {'not ' if present else ''}mounted")
            time.sleep(0.05)

    def _expose_fuse(self, mapping: Mapping) -> None:
        fuse_dir = Path(mapping.root) / "fuse"
        fuse_dir.mkdir(mode=0o700, exist_ok=True)
        mapping.fuse_dir = str(fuse_dir)
        self._save(mapping)
        argv = ["rbd-fuse", str(fuse_dir), *self._ceph_words(), f"--poolname={self.pool}"]
        if self.namespace:
            argv.append(f"--namespace={self.namespace}")
        argv += [f"--image={mapping.clone}", "-o", "ro"]
        self._run(argv, "rbd-fuse", mapping.label)
        self._wait_mounted(str(fuse_dir), True, mapping.label, "rbd-fuse")
        image_file = fuse_dir / mapping.clone
        mapping.image_file = str(image_file)
        self._save(mapping)
        device = self._run(
            ["losetup", "--read-only", "--partscan", "--find", "--show", str(image_file)],
            "losetup",
            mapping.label,
        ).strip()
        if not device.startswith("/dev/loop"):
            raise MappingError(f"{mapping.label}: losetup printed {device!r}, not a loop device")
        mapping.base_device = device
        mapping.loop_devices.append(device)
        self._save(mapping)

    def _expose_nbd(self, mapping: Mapping) -> None:
        spec = str(self._spec(mapping.clone))
        device = self._run(
            ["rbd-nbd", "map", "--read-only", *self._ceph_words(), spec], "rbd-nbd map", mapping.label
        ).strip()
        if not device.startswith("/dev/nbd"):
            raise MappingError(f"{mapping.label}: rbd-nbd printed {device!r}, not an nbd device")
        mapping.base_device = device
        self._save(mapping)

    def _attach_partitions(self, mapping: Mapping) -> None:
        base = mapping.base_device
        if base is None:
            raise MappingError(f"{mapping.label}: no device to look into")
        name = os.path.basename(base)
        # The kernel's own partition devices, when it reads partition tables (loopNpM, nbdXpM).
        kernel = sorted(Path("/sys/block", name).glob(f"{name}p[0-9]*"), key=lambda p: int(p.name[len(name) + 1 :]))
        if kernel:
            for part in kernel:
                number = part.name[len(name) + 1 :]
                mapping.filesystems.append(Filesystem(name=f"p{number}", device=f"/dev/{part.name}"))
            self._save(mapping)
            return
        table = ""
        if self._has_partition_table(base, mapping.label):
            table = self._run(["partx", "-g", "-r", "-o", "NR,START,SECTORS,TYPE", base], "partx", mapping.label)
        entries = parse_partx(table)
        if not entries:
            mapping.filesystems.append(Filesystem(name="disk", device=base))
            self._save(mapping)
            return
        # No partition support in the kernel (the lab's): one read-only loop device per
        # partition, at its offset in the disk.
        source = mapping.image_file or base
        for entry in entries:
            device = self._run(
                [
                    "losetup",
                    "--read-only",
                    "--find",
                    "--show",
                    f"--offset={entry.start_sector * 512}",
                    f"--sizelimit={entry.sectors * 512}",
                    source,
                ],
                f"losetup of partition {entry.number}",
                mapping.label,
            ).strip()
            if not device.startswith("/dev/loop"):
                raise MappingError(f"{mapping.label}: losetup printed {device!r}, not a loop device")
            mapping.loop_devices.append(device)
            mapping.filesystems.append(Filesystem(name=f"p{entry.number}", device=device))
            self._save(mapping)

    def _probe(self, device: str) -> dict[str, str]:
        rc, out, err = self.command(["blkid", "-p", "-o", "export", device], self.timeout)
        if rc == 2:  # nothing recognised
            return {}
        if rc != 0:
            cause = "timed out" if rc is None else (stderr_cause(err) or f"exit status {rc}")
            raise MappingError(f"blkid {device}: {cause}")
        return parse_blkid_export(out)

    def _has_partition_table(self, device: str, label: str) -> bool:
        try:
            return "PTTYPE" in self._probe(device)
        except MappingError as exc:
            raise MappingError(f"{label}: {exc}") from None

    def _mount_all(self, mapping: Mapping) -> None:
        mnt = Path(mapping.root) / "mnt"
        mnt.mkdir(mode=0o700, exist_ok=True)
        for fs in mapping.filesystems:
            try:
                probe = self._probe(fs.device)
            except MappingError as exc:
                fs.error = str(exc)
                continue
            fs.fstype = probe.get("TYPE")
            if fs.fstype is None:
                fs.error = "no recognisable filesystem" + (
                    f" (partition table {probe['PTTYPE']})" if "PTTYPE" in probe else ""
                )
                continue
            options = mount_options(fs.fstype)
            if options is None:
                fs.error = f"{fs.fstype}: not a filesystem type backurne mounts"
                continue
            target = mnt / fs.name
            target.mkdir(mode=0o700, exist_ok=True)
            fs.mountpoint = str(target)
            fs.options = options
            self._save(mapping)
            try:
                self._run(["mount", "-t", fs.fstype, "-o", options, fs.device, str(target)], "mount", mapping.label)
            except MappingError as exc:
                fs.error = str(exc)
                with contextlib.suppress(OSError):
                    target.rmdir()
                fs.mountpoint = None
            self._save(mapping)

    # -- unmap ------------------------------------------------------------------------

    def _record(self, ident: str, image: str, snapshot: str, created: str, method: str | None = None) -> Mapping:
        """A new record of image@snapshot in this pool: its clone and root named after ``ident``."""
        return Mapping(
            id=ident,
            pool=self.pool,
            namespace=self.namespace,
            image=image,
            snapshot=snapshot,
            clone=clone_name(ident),
            created=created,
            root=str(self.records / ident),
            method=method,
        )

    def unmap(self, image: str, snapshot: str) -> Mapping | None:
        """Undo map: unmount, detach devices, stop rbd-fuse, remove the clone, drop the record.

        Idempotent: returns the mapping undone, or None when image@snapshot was not mapped (a
        clone left by a crash without a record is still removed).
        """
        ident = mapping_id(self.pool, self.namespace, image, snapshot)
        with self._locked(ident):
            mapping = self._load(ident)
            if mapping is None:
                orphan = self._record(ident, image, snapshot, created="")
                self._teardown(orphan)
                return None
            self._teardown(mapping)
            return mapping

    def _teardown(self, mapping: Mapping) -> None:
        root = Path(mapping.root)
        fuse_dir = mapping.fuse_dir or str(root / "fuse")
        image_file = mapping.image_file or str(Path(fuse_dir) / mapping.clone)
        # What the record says, plus what a crash may have left unrecorded under our directory.
        mounted = mounted_paths()
        targets = {fs.mountpoint for fs in mapping.filesystems if fs.mountpoint}
        targets |= {path for path in mounted if path.startswith(f"{root}/mnt/")}
        for target in sorted(targets, key=len, reverse=True):
            if target in mounted:
                self._run(["umount", target], "umount (is a shell or a program using it?)", mapping.label)
            with contextlib.suppress(OSError):
                Path(target).rmdir()
        for fs in mapping.filesystems:
            fs.mountpoint = None
        self._save_if_recorded(mapping)
        loops = [
            device for device in mapping.loop_devices if self._loop_backing(device) in {image_file, mapping.base_device}
        ]
        loops += [device for device in loop_devices_backed_by(image_file) if device not in loops]
        for device in reversed(loops):
            self._run(["losetup", "--detach", device], "losetup --detach", mapping.label)
        mapping.loop_devices = []
        self._save_if_recorded(mapping)
        if mapping.method == "nbd" and mapping.base_device:
            # /sys/block/nbdX/pid exists while the device is connected (to our rbd-nbd).
            if Path("/sys/block", os.path.basename(mapping.base_device), "pid").exists():
                self._run(["rbd-nbd", "unmap", mapping.base_device], "rbd-nbd unmap", mapping.label)
            mapping.base_device = None
            self._save_if_recorded(mapping)
        if fuse_dir in mounted_paths():
            self._unmount_fuse(fuse_dir, mapping.label)
        self._remove_clone(mapping)
        for leftover in (root / "mnt", Path(fuse_dir), root):
            with contextlib.suppress(OSError):
                leftover.rmdir()
        with contextlib.suppress(FileNotFoundError):
            self._record_path(mapping.id).unlink()

    def _save_if_recorded(self, mapping: Mapping) -> None:
        if self._record_path(mapping.id).exists():
            self._save(mapping)

    @staticmethod
    def _loop_backing(device: str) -> str | None:
        # After a reboot the same /dev/loopN may back something else: detach only our file.
        try:
            return Path("/sys/block", os.path.basename(device), "loop", "backing_file").read_text().strip()
        except OSError:
            return None

    def _unmount_fuse(self, fuse_dir: str, label: str) -> None:
        if os.geteuid() == 0 or not shutil.which("fusermount"):
            argv = ["umount", fuse_dir]
        else:
            argv = ["fusermount", "-u", fuse_dir]
        self._run(argv, "unmounting rbd-fuse", label)
        self._wait_mounted(fuse_dir, False, label, "unmounting rbd-fuse")

    def _remove_clone(self, mapping: Mapping) -> None:
        if not is_mapping_clone(mapping.clone):
            raise MappingError(f"{mapping.label}: refusing to remove {mapping.clone!r}: not a mapping clone")
        spec = self._spec(mapping.clone)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.runner.remove(spec)
                return
            except RbdError as exc:
                if exc.is_not_found:
                    return
                # rbd-fuse may still hold the clone open (a watcher) for a moment after its
                # unmount; anything else is an error to report.
                if time.monotonic() > deadline or "watchers" not in exc.stderr.lower():
                    raise MappingError(f"{mapping.label}: removing clone {mapping.clone!r}: {exc}") from None
                time.sleep(0.5)

    # -- extract ----------------------------------------------------------------------

    def extract(self, image: str, snapshot: str, paths: Sequence[str], dest: str) -> list[dict[str, Any]]:
        """Copy ``paths`` of image@snapshot into directory ``dest``.

        Uses the snapshot's mapping when there is one, otherwise maps it for the copy and
        unmaps it afterwards.
        """
        mapping = self.get(image, snapshot)
        temporary = mapping is None
        if mapping is None:
            mapping = self.map(image, snapshot)
        try:
            return copy_out(mapping, paths, dest)
        finally:
            if temporary:
                self.unmap(image, snapshot)


# -- safe extraction (pure file-system code, no Ceph) -------------------------------------


def path_components(path: str, refuse: Callable[[str], Exception] = UnsafePath) -> list[str]:
    """The components of a relative path inside a snapshot (empty ones and ``.`` dropped);
    ``refuse(message)`` is raised for a NUL byte, an absolute path or any ``..`` component.
    The CLI's extraction (below) and the REST API's file access (backurne_api.files) share it."""
    if "\0" in path:
        raise refuse(f"path {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise refuse(f"path {path!r} is absolute; give a path relative to the snapshot's filesystem")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise refuse(f"path {path!r} contains '..'")
    return parts


def split_relative(path: str) -> list[str]:
    """The components of a user-given path inside a snapshot; UnsafePath if it is unsafe."""
    if not isinstance(path, str) or not path:
        raise UnsafePath(f"path {path!r} is empty")
    return path_components(path)


def resolve_inside(mapping: Mapping, path: str) -> tuple[Filesystem, Path]:
    """(filesystem, real path) of a user-given path; UnsafePath if it would leave the filesystem.

    With one mounted filesystem, paths are relative to it; with several, the first component
    names the filesystem (``p1/etc/hostname``). Symlinks are resolved on the host, so one that
    is absolute or climbs out of the filesystem is refused, not followed.
    """
    parts = split_relative(path)
    mounted = mapping.mounted
    if not mounted:
        raise MappingError(f"{mapping.label}: no filesystem is mounted")
    if len(mounted) == 1:
        fs = mounted[0]
    else:
        by_name = {fs.name: fs for fs in mounted}
        if not parts or parts[0] not in by_name:
            names = ", ".join(sorted(by_name))
            raise MappingError(f"{mapping.label}: path {path!r} must start with a filesystem name ({names})")
        fs = by_name[parts.pop(0)]
    root = Path(os.path.realpath(fs.mountpoint or ""))
    target = Path(os.path.realpath(root.joinpath(*parts)))
    if target != root and root not in target.parents:
        raise UnsafePath(f"{mapping.label}: path {path!r} leads outside the snapshot's filesystem")
    if not os.path.lexists(target):
        raise MappingError(f"{mapping.label}: no {path!r} in the snapshot")
    return fs, target


def _copy_tree(source: Path, target: Path, root: Path, skipped: list[str]) -> int:
    """Copy a directory tree without following symlinks; returns the bytes copied."""
    copied = 0
    target.mkdir(mode=0o700)
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        src = Path(entry.path)
        dst = target / entry.name
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            # Kept as a link (its text), never followed: it cannot pull in a file from outside.
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISDIR(mode):
            copied += _copy_tree(src, dst, root, skipped)
        elif stat.S_ISREG(mode):
            shutil.copy2(src, dst, follow_symlinks=False)
            copied += entry.stat(follow_symlinks=False).st_size
        else:
            skipped.append(str(src.relative_to(root)))  # devices, fifos, sockets
    shutil.copystat(source, target, follow_symlinks=False)
    return copied


def copy_out(mapping: Mapping, paths: Iterable[str], dest: str) -> list[dict[str, Any]]:
    """Copy each path (file or directory) of a mapped snapshot to ``dest``/its base name.

    Every path is checked before anything is copied: unsafe paths, missing paths and existing
    targets (never overwritten) fail the whole call with nothing written.
    """
    paths = list(paths)
    if not paths:
        raise MappingError(f"{mapping.label}: no path to extract")
    destination = Path(dest)
    if not destination.is_dir():
        raise MappingError(f"destination {dest!r} is not a directory")
    plan: list[tuple[str, Filesystem, Path, Path]] = []
    seen: set[str] = set()
    for path in paths:
        fs, source = resolve_inside(mapping, path)
        name = source.name or fs.name
        target = destination / name
        if name in seen or os.path.lexists(target):
            raise MappingError(f"{mapping.label}: {target} already exists; not overwriting it")
        seen.add(name)
        plan.append((path, fs, source, target))
    results = []
    for path, fs, source, target in plan:
        root = Path(os.path.realpath(fs.mountpoint or ""))
        skipped: list[str] = []
        mode = source.lstat().st_mode
        if stat.S_ISDIR(mode):
            size = _copy_tree(source, target, root, skipped)
            kind = "directory"
        elif stat.S_ISREG(mode):
            shutil.copy2(source, target, follow_symlinks=False)
            size = source.lstat().st_size
            kind = "file"
        else:
            raise MappingError(f"{mapping.label}: {path!r} is neither a file nor a directory")
        results.append(
            {"path": path, "filesystem": fs.name, "to": str(target), "type": kind, "bytes": size, "skipped": skipped}
        )
    return results
