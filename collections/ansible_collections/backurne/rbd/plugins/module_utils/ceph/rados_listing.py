# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Direct RADOS access in this process (python3-rados, python3-rbd) for what the rbd and rados
# CLIs would otherwise cost one process each, per image: listing a pool, finding a backup
# image's header, its size, snapshots and image-meta, taking and dropping the backup lock on
# that header, creating the live snapshots.
#
# Why: every rbd/rados CLI call starts a new RADOS client (config, cephx, monitor and OSD maps),
# 40-80 ms of CPU on the lab's 2-core VM; `rbd ls -l` also opens every image through librbd, about
# 5 ms per image (1.1 s for 200 images, twice per run). The names and snapshots it prints are two
# omap reads away: the pool's `rbd_directory` object maps every format-2 image name to its id,
# and each image's `rbd_header.<id>` object holds its `size` and one `snapshot_<id>` key per
# snapshot whose value starts with the snapshot's id and name (cls_rbd's encoding, versioned,
# new fields only ever appended). 200 images: ~60 ms. The backup lock is a cls_lock exclusive
# lock on that header, the same one `rados lock get` takes (see lock.py).
#
# Only what `rbd ls -l` / `rbd snap ls` show is returned: user snapshots (a snapshot in the trash
# namespace, kept for a clone, or a group snapshot is not listed), oldest first (snapshot id
# order). Anything this reader is not sure about (python3-rados missing, a format-1 image in the
# pool, an encoding it does not know, any RADOS error but a vanished header) makes the caller use
# the CLI (RbdRunner): the in-process path can only be faster, never different.
import contextlib
import errno
import json
import struct
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DIRECTORY_OBJECT = "rbd_directory"
HEADER_PREFIX = "rbd_header."
SNAP_KEY_PREFIX = "snapshot_"
NAME_KEY_PREFIX = "name_"
META_KEY_PREFIX = "metadata_"
# cls::rbd::SnapshotNamespaceType: USER = 0, GROUP = 1, TRASH = 2, MIRROR = 3.
USER_SNAPSHOT_NAMESPACE = 0
# cls_rbd_snap's newest struct version, the one Ceph 16.2, 18.2 and 20.2 write (ENCODE_START(8, ...),
# compat 8 once no pre-Nautilus OSD is left; compared on real clusters of the three). A struct
# whose compat version is above it cannot be read without knowing the new layout (Ceph's own
# DECODE_START refuses it): the CLI of that version lists it instead.
SNAPSHOT_VERSION_KNOWN = 8
# Omap keys per read (a header has at most a few hundred snapshots; the directory can be big).
OMAP_PAGE = 1024
# python3-rbd exception classes whose errno attribute may be unset -> the errno rbd would print.
_RBD_ERRNO = (("ImageExists", errno.EEXIST), ("ImageNotFound", errno.ENOENT), ("ImageBusy", errno.EBUSY))
# Header reads in flight: the directory is one object, the headers are spread over the OSDs.
READ_WORKERS = 8


class ListingUnsupported(Exception):
    """The pool holds something this reader does not decode: use `rbd ls -l` instead."""


class ImageMissing(Exception):
    """The image is not in the pool's directory, or its header is gone."""


class MonCommandFailed(Exception):
    """The monitor refused a command: errno and its status text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.errno = code


class SnapshotFailed(Exception):
    """librbd refused a snapshot: errno and its message."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.errno = code


class _Reader:
    """Little-endian reader of Ceph's encoding (include/encoding.h)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise ListingUnsupported(f"truncated value ({len(self.data)} bytes)")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.u32()).decode("utf-8")

    def struct_start(self) -> tuple[int, int]:
        """ENCODE_START's header (version u8, compat u8, length u32) -> (version, end offset)."""
        version = self.u8()
        self.u8()  # compat version
        length = self.u32()
        end = self.offset + length
        if end > len(self.data):
            raise ListingUnsupported("truncated struct")
        return version, end


def decode_directory_id(value: bytes) -> str:
    """rbd_directory's `name_<image>` value: the image id, an encoded string."""
    reader = _Reader(value)
    image_id = reader.string()
    if not image_id or reader.offset != len(value):
        raise ListingUnsupported("unexpected rbd_directory entry")
    return image_id


def decode_snapshot(value: bytes) -> tuple[int, str, int]:
    """A header's `snapshot_<id>` value (cls_rbd_snap) -> (snap id, name, namespace type).

    Layout (cls/rbd/cls_rbd.h): id u64, name string, image_size u64; then, only when the
    struct's compat version is below 8 (written for pre-Nautilus OSDs), the unused features
    u64 and from version 2 the parent (a struct of its own, skipped by its length); then from
    version 3 protection_status u8, from 4 flags u64, from 5 the snapshot namespace (a struct
    whose first field is the u32 type). Before version 5 every snapshot was a user snapshot.
    Later fields (timestamp, child count, parent overlap) are not read.
    """
    reader = _Reader(value)
    version = reader.u8()
    compat = reader.u8()
    length = reader.u32()
    end = reader.offset + length
    if version < 1 or end > len(value):
        raise ListingUnsupported(f"snapshot encoding version {version}, {len(value)} bytes")
    if compat > SNAPSHOT_VERSION_KNOWN or compat > version:
        raise ListingUnsupported(f"snapshot encoding version {version} (compat {compat}) not known")
    snap_id = reader.u64()
    name = reader.string()
    reader.u64()  # image_size
    if compat < 8:
        reader.u64()  # features, unused
        if version >= 2:
            _parent_version, parent_end = reader.struct_start()
            reader.offset = parent_end
    namespace_type = USER_SNAPSHOT_NAMESPACE
    if version >= 3:
        reader.u8()  # protection_status
    if version >= 4:
        reader.u64()  # flags
    if version >= 5:
        reader.struct_start()
        namespace_type = reader.u32()
    if reader.offset > end:
        raise ListingUnsupported("snapshot fields past the end of their struct")
    return snap_id, name, namespace_type


def user_snapshots(header_values: Iterable[tuple[str, bytes]]) -> list[str]:
    """The user snapshots' names, oldest first (by snapshot id), from a header's omap."""
    found = []
    for key, value in header_values:
        if not key.startswith(SNAP_KEY_PREFIX):
            continue
        snap_id, name, namespace_type = decode_snapshot(value)
        if namespace_type == USER_SNAPSHOT_NAMESPACE:
            found.append((snap_id, name))
    return [name for _snap_id, name in sorted(found)]


def _omap_values(ioctx: Any, rados: Any, oid: str, prefix: str, after: str = "") -> list[tuple[str, bytes]]:
    values: list[tuple[str, bytes]] = []
    while True:
        with rados.ReadOpCtx() as op:
            pairs, _status = ioctx.get_omap_vals(op, after, prefix, OMAP_PAGE)
            ioctx.operate_read_op(op, oid)
            page = [(key, bytes(value or b"")) for key, value in pairs]
        values.extend(page)
        if len(page) < OMAP_PAGE:
            return values
        after = page[-1][0]


def list_images_rados(ioctx: Any, rados: Any) -> dict[str, list[str]]:
    """The ioctx's pool/namespace: images -> their user snapshots, oldest first, like `rbd ls -l`.

    `rados` is the python3-rados module (passed in so that this file imports without it, e.g.
    for its unit tests). Raises ListingUnsupported (or a rados error) when the caller must fall
    back to the rbd CLI.
    """
    return {name: snaps for name, (snaps, _meta) in list_images_meta_rados(ioctx, rados, None).items()}


def list_images_meta_rados(
    ioctx: Any, rados: Any, meta_prefix: str | None
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """As list_images_rados, with each image's image-meta whose key starts with ``meta_prefix``
    (the holds: ``backurne.hold.``), read from the same header in the same pass (None: none)."""
    try:
        size, _mtime = ioctx.stat(DIRECTORY_OBJECT)
    except rados.ObjectNotFound:
        # No directory: the namespace does not exist (the CLI says so) or is from before
        # namespaces had one.
        raise ListingUnsupported("no rbd_directory") from None
    if size:
        # Format-1 images are listed in the directory's data (tmap), not its omap.
        raise ListingUnsupported("format-1 images in the pool")
    ids = {
        key[len(NAME_KEY_PREFIX) :]: decode_directory_id(value)
        for key, value in _omap_values(ioctx, rados, DIRECTORY_OBJECT, NAME_KEY_PREFIX)
    }

    def snapshots(item: tuple[str, str]) -> tuple[str, tuple[list[str], dict[str, str]] | None]:
        name, image_id = item
        header = HEADER_PREFIX + image_id
        try:
            values = _omap_values(ioctx, rados, header, SNAP_KEY_PREFIX)
            meta = {} if meta_prefix is None else _metadata(ioctx, rados, header, META_KEY_PREFIX + meta_prefix)
        except rados.ObjectNotFound:
            # Removed between the directory read and this one: `rbd ls -l` skips it too.
            return name, None
        return name, (user_snapshots(values), meta)

    with ThreadPoolExecutor(max_workers=READ_WORKERS) as readers:
        listed = list(readers.map(snapshots, sorted(ids.items())))
    return {name: found for name, found in listed if found is not None}


def _metadata(ioctx: Any, rados: Any, header: str, prefix: str) -> dict[str, str]:
    """image-meta pairs of a header whose omap key starts with ``prefix`` (``metadata_...``)."""
    return {
        key[len(META_KEY_PREFIX) :]: value.decode("utf-8", "replace")
        for key, value in _omap_values(ioctx, rados, header, prefix)
    }


def header_object(ioctx: Any, rados: Any, image: str) -> str:
    """The `rbd_header.<id>` object of one format-2 image, from the pool's directory."""
    with rados.ReadOpCtx() as op:
        found, _status = ioctx.get_omap_vals_by_keys(op, (NAME_KEY_PREFIX + image,))
        try:
            ioctx.operate_read_op(op, DIRECTORY_OBJECT)
        except rados.ObjectNotFound:
            raise ListingUnsupported("no rbd_directory") from None
        entries = dict(found)
    if not entries:
        raise ImageMissing(image)
    return HEADER_PREFIX + decode_directory_id(bytes(next(iter(entries.values()))))


def image_metadata(ioctx: Any, rados: Any, image: str) -> dict[str, str]:
    """The image's `rbd image-meta` keys and values: the header's `metadata_<key>` omap entries
    (the values are the raw UTF-8 bytes `image-meta set` stored)."""
    header = header_object(ioctx, rados, image)
    try:
        values = _omap_values(ioctx, rados, header, META_KEY_PREFIX)
    except rados.ObjectNotFound:
        raise ImageMissing(image) from None
    try:
        return {key[len(META_KEY_PREFIX) :]: value.decode("utf-8") for key, value in values}
    except UnicodeDecodeError:
        raise ListingUnsupported(f"metadata of {image!r} is not UTF-8") from None


def image_header(ioctx: Any, rados: Any, image: str) -> tuple[str, int, list[str]]:
    """(header object, size in bytes, user snapshots oldest first) of one format-2 image."""
    header = header_object(ioctx, rados, image)
    with rados.ReadOpCtx() as op:
        sizes, _status = ioctx.get_omap_vals_by_keys(op, ("size",))
        snaps, _status = ioctx.get_omap_vals(op, "", SNAP_KEY_PREFIX, OMAP_PAGE)
        try:
            ioctx.operate_read_op(op, header)
        except rados.ObjectNotFound:
            raise ImageMissing(image) from None
        size_values = dict(sizes)
        snap_values = [(key, bytes(value or b"")) for key, value in snaps]
    if len(snap_values) == OMAP_PAGE:
        snap_values += _omap_values(ioctx, rados, header, SNAP_KEY_PREFIX, after=snap_values[-1][0])
    raw_size = bytes(size_values.get("size") or b"")
    if len(raw_size) != 8:
        raise ListingUnsupported(f"unexpected size in {header}")
    return header, int(struct.unpack("<Q", raw_size)[0]), user_snapshots(snap_values)


class RadosSession:
    """One RADOS client for a module run, shared by its worker threads (librados is thread-safe)."""

    def __init__(self, rados: Any, client: Any) -> None:
        self.rados = rados
        self.client = client
        # The name `rados lock info` shows for the locks this client takes.
        self.locker = f"client.{client.get_instance_id()}"
        self._ioctxs: dict[tuple[str, str], Any] = {}
        self._guard = threading.Lock()

    @classmethod
    def open(
        cls, cluster: str, ceph_client: str, keyring: str | None, ceph_conf: str | None, timeout: float
    ) -> RadosSession | None:
        """A connected session, or None (no python3-rados, or it cannot connect: use the CLI)."""
        found = rados_connector(cluster, ceph_client, keyring, ceph_conf, timeout)
        if found is None:
            return None
        rados, connect = found
        try:
            return cls(rados, connect())
        except Exception:  # pylint: disable=broad-exception-caught
            return None

    def ioctx(self, pool: str, namespace: str | None) -> Any:
        key = (pool, namespace or "")
        with self._guard:
            if key not in self._ioctxs:
                ioctx = self.client.open_ioctx(pool)
                ioctx.set_namespace(key[1])
                self._ioctxs[key] = ioctx
            return self._ioctxs[key]

    def list_images(self, pool: str, namespace: str | None) -> dict[str, list[str]]:
        return list_images_rados(self.ioctx(pool, namespace), self.rados)

    def list_images_meta(
        self, pool: str, namespace: str | None, meta_prefix: str
    ) -> dict[str, tuple[list[str], dict[str, str]]]:
        return list_images_meta_rados(self.ioctx(pool, namespace), self.rados, meta_prefix)

    def image_header(self, pool: str, namespace: str | None, image: str) -> tuple[str, int, list[str]]:
        return image_header(self.ioctx(pool, namespace), self.rados, image)

    def image_metadata(self, pool: str, namespace: str | None, image: str) -> dict[str, str]:
        return image_metadata(self.ioctx(pool, namespace), self.rados, image)

    def lock_exclusive(
        self, pool: str, namespace: str | None, header: str, name: str, cookie: str, description: str
    ) -> bool:
        """Take the exclusive lock; False when it is held (by anyone, this cookie included)."""
        try:
            self.ioctx(pool, namespace).lock_exclusive(header, name, cookie, description)
        except (self.rados.ObjectBusy, self.rados.ObjectExists):
            return False
        return True

    def unlock(self, pool: str, namespace: str | None, header: str, name: str, cookie: str) -> None:
        """Drop a lock this client took; already gone (broken, image removed) is not an error."""
        with contextlib.suppress(self.rados.ObjectNotFound):
            self.ioctx(pool, namespace).unlock(header, name, cookie)

    def snap_create(self, pool: str, namespace: str | None, image: str, snapshot: str) -> None:
        """Create a snapshot through librbd in this process (python3-rbd), as `rbd snap create` does.

        Raises SnapshotFailed(errno, text) for what librbd refuses (exists, not found, busy...),
        and ListingUnsupported when python3-rbd is missing (the caller uses the CLI).
        """
        rbd = self._rbd_module()
        try:
            with rbd.Image(self.ioctx(pool, namespace), image) as opened:
                opened.create_snap(snapshot)
        except rbd.Error as exc:
            code = getattr(exc, "errno", None) or next(
                (number for kind, number in _RBD_ERRNO if isinstance(exc, getattr(rbd, kind, ()))), 0
            )
            raise SnapshotFailed(abs(int(code)), str(exc)) from None

    def create_image(self, pool: str, namespace: str | None, image: str, size: int) -> None:
        """`rbd create --size=SIZE` through librbd in this process (python3-rbd): the cluster's
        default format, features and order, as the CLI takes them from the same configuration.

        Errors as in snap_create (SnapshotFailed for a refusal, e.g. (17) when it exists).
        """
        rbd = self._rbd_module()
        try:
            rbd.RBD().create(self.ioctx(pool, namespace), image, int(size), old_format=False)
        except rbd.Error as exc:
            raise SnapshotFailed(self._rbd_errno(rbd, exc), str(exc)) from None

    def head_differs(self, pool: str, namespace: str | None, image: str, snapshot: str) -> bool:
        """Whether the image's HEAD differs from `snapshot` (librbd in this process, python3-rbd).

        A size change, or any extent diff_iterate reports since the snapshot (object granular:
        the object map answers without reading data). Stops at the first extent. Raises
        SnapshotFailed for what librbd refuses (image or snapshot missing...) and
        ListingUnsupported when python3-rbd is missing (the caller uses the CLI).
        """
        rbd = self._rbd_module()

        class _Found(Exception):
            pass

        def found(_offset: int, _length: int, _exists: bool) -> int:
            raise _Found

        try:
            with rbd.Image(self.ioctx(pool, namespace), image, read_only=True) as opened:
                head_size = opened.size()
                sizes = {snap["name"]: snap["size"] for snap in opened.list_snaps()}
                if snapshot not in sizes:
                    raise SnapshotFailed(errno.ENOENT, f"snapshot {snapshot!r} not found")
                if sizes[snapshot] != head_size:
                    return True
                try:
                    opened.diff_iterate(0, head_size, snapshot, found, include_parent=True, whole_object=True)
                except _Found:
                    return True
        except rbd.Error as exc:
            raise SnapshotFailed(self._rbd_errno(rbd, exc), str(exc)) from None
        return False

    def snap_rollback(self, pool: str, namespace: str | None, image: str, snapshot: str) -> None:
        """`rbd snap rollback` through librbd in this process; errors as in head_differs."""
        rbd = self._rbd_module()
        try:
            with rbd.Image(self.ioctx(pool, namespace), image) as opened:
                opened.rollback_to_snap(snapshot)
        except rbd.Error as exc:
            raise SnapshotFailed(self._rbd_errno(rbd, exc), str(exc)) from None

    @staticmethod
    def _rbd_errno(rbd: Any, exc: BaseException) -> int:
        code = getattr(exc, "errno", None) or next(
            (number for kind, number in _RBD_ERRNO if isinstance(exc, getattr(rbd, kind, ()))), 0
        )
        return abs(int(code))

    def mon_command(self, command: dict[str, Any], timeout: float) -> Any:
        """A monitor command's JSON answer (``command`` carries "format": "json").

        Raises MonCommandFailed with the monitor's errno and status text when it refuses.
        """
        code, out, status = self.client.mon_command(json.dumps(command), b"", timeout=max(1, int(timeout)))
        if code != 0:
            raise MonCommandFailed(abs(int(code)), str(status or ""))
        return json.loads(out or b"null")

    def _rbd_module(self) -> Any:
        try:
            import rbd  # type: ignore[import-not-found]  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise ListingUnsupported("no python3-rbd") from None
        return rbd

    def close(self) -> None:
        with self._guard:
            for ioctx in self._ioctxs.values():
                with contextlib.suppress(Exception):
                    ioctx.close()
            self._ioctxs.clear()
        with contextlib.suppress(Exception):
            self.client.shutdown()


def rados_connector(
    cluster: str, ceph_client: str, keyring: str | None, ceph_conf: str | None, timeout: float
) -> tuple[Any, Callable[[], Any]] | None:
    """(the rados module, a function returning a connected client) or None without python3-rados."""
    try:
        import rados  # type: ignore[import-not-found]  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None

    def connect() -> Any:
        client = rados.Rados(rados_id=ceph_client, clustername=cluster)
        seconds = max(1, int(timeout))
        try:
            # None reads what the rbd CLI reads: $CEPH_CONF, then /etc/ceph/$cluster.conf, ...
            client.conf_read_file(ceph_conf or None)
            if keyring:
                client.conf_set("keyring", keyring)
            client.conf_set("rados_osd_op_timeout", str(seconds))
            client.conf_set("rados_mon_op_timeout", str(seconds))
            client.connect(timeout=seconds)
        except BaseException:
            client.shutdown()
            raise
        return client

    return rados, connect
