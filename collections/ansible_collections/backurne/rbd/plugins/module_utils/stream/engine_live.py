# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The live-node half of the stream engine (stream/engine.py): ONE long-lived process per ssh
# channel that serves many images' diffs through librbd in process, instead of one ssh session,
# one bash, one `rbd export-diff` (a fresh cluster connection) and one zstd per image.
#
# This file is shipped over the ssh channel itself: the backup node runs
#   /usr/bin/python3 -c BOOTSTRAP backurne-stream-engine TAG
# on the live node, then writes this file's length and text on the process's stdin, then a
# JSON line with the Ceph access options; nothing but the fixed bootstrap is on the command
# line. So it imports nothing but the standard library and python3-rados/python3-rbd.
#
# Protocol (stdout, binary): frames `kind (1 byte) | request id (u32 LE) | length (u32 LE) |
# payload`. First frame: R (ready) with JSON {"ok": true} or {"ok": false, "error": ...}. Then
# per request (a JSON line on stdin: id, pool, namespace, image, snap, base, compress): any number
# of D (raw) or Z (zlib) frames carrying the `rbd export-diff` v1 stream of that image
# (doc/dev/rbd-diff.rst), then E with JSON {"ok": true, "bytes": N} or {"ok": false, "error": ...}.
# A request that fails leaves the process serving the next one.
import json
import struct
import sys
import zlib
from typing import Any, BinaryIO

FRAME = struct.Struct("<cII")
BANNER = b"rbd diff v1\n"
# A `w` record's data is read and sent in pieces of at most this size (the v1 format allows any).
READ_CHUNK = 4 << 20
# Frames of at most this many stream bytes: big enough to keep the channel's overhead low,
# small enough that the receiver applies while the next one is read.
FRAME_BYTES = 1 << 20


class _Frames:
    """Writes one request's diff stream as D/Z frames, FRAME_BYTES at a time."""

    def __init__(self, out: BinaryIO, request_id: int, compress: bool) -> None:
        self.out = out
        self.request_id = request_id
        self.compress = compress
        self.pending = bytearray()
        self.total = 0

    def emit(self, data: bytes) -> None:
        self.pending += data
        self.total += len(data)
        if len(self.pending) >= FRAME_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        payload, kind = bytes(self.pending), b"D"
        if self.compress:
            payload, kind = zlib.compress(payload, 1), b"Z"
        write_frame(self.out, kind, self.request_id, payload)
        self.pending = bytearray()


def write_frame(out: BinaryIO, kind: bytes, request_id: int, payload: bytes) -> None:
    out.write(FRAME.pack(kind, request_id, len(payload)))
    out.write(payload)


def _name_record(tag: bytes, name: str) -> bytes:
    raw = name.encode("utf-8")
    return tag + struct.pack("<I", len(raw)) + raw


def export_diff(image: Any, snap: str, base: str | None, frames: _Frames) -> None:
    """What `rbd export-diff [--from-snap BASE] IMAGE@SNAP -` writes, into `frames`.

    `image` is open at `snap`. Extents come from diff_iterate as export-diff takes them (parent
    included, not object granular); data that does not exist at `snap` is a zero record.
    """
    size = image.size()
    head = bytearray(BANNER)
    if base is not None:
        head += _name_record(b"f", base)
    head += _name_record(b"t", snap)
    head += b"s" + struct.pack("<Q", size)
    frames.emit(bytes(head))
    extents: list[tuple[int, int, bool]] = []

    def collect(offset: int, length: int, exists: bool) -> int:
        extents.append((offset, length, exists))
        return 0

    image.diff_iterate(0, size, base, collect, include_parent=True, whole_object=False)
    for offset, length, exists in extents:
        if not exists:
            frames.emit(b"z" + struct.pack("<QQ", offset, length))
            continue
        end = offset + length
        while offset < end:
            count = min(READ_CHUNK, end - offset)
            data = image.read(offset, count)
            if len(data) != count:
                raise OSError(f"short read at offset {offset}: {len(data)} of {count} bytes")
            frames.emit(b"w" + struct.pack("<QQ", offset, count))
            frames.emit(data)
            offset += count
    frames.emit(b"e")


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc) or type(exc).__name__
    return f"({abs(int(code))}) {text}" if code else text


class Server:
    def __init__(self, rbd: Any, client: Any, out: BinaryIO) -> None:
        self.rbd = rbd
        self.client = client
        self.out = out
        self.ioctxs: dict[tuple[str, str], Any] = {}

    def ioctx(self, pool: str, namespace: str | None) -> Any:
        key = (pool, namespace or "")
        if key not in self.ioctxs:
            ioctx = self.client.open_ioctx(pool)
            ioctx.set_namespace(key[1])
            self.ioctxs[key] = ioctx
        return self.ioctxs[key]

    def serve(self, request: dict[str, Any]) -> None:
        request_id = int(request["id"])
        frames = _Frames(self.out, request_id, bool(request.get("compress")))
        snap, base = request["snap"], request.get("base")
        try:
            ioctx = self.ioctx(request["pool"], request.get("namespace"))
            with self.rbd.Image(ioctx, request["image"], snapshot=snap, read_only=True) as image:
                if base is not None and base not in [entry["name"] for entry in image.list_snaps()]:
                    # Checked before any byte: export-diff writes its header, then fails.
                    raise LookupError(f"from snapshot {base!r} does not exist on the live image")
                export_diff(image, snap, base, frames)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # Nothing half-sent is ever taken for a stream: E says it failed.
            frames.flush()
            write_frame(self.out, b"E", request_id, json.dumps({"ok": False, "error": _error_text(exc)}).encode())
        else:
            frames.flush()
            write_frame(self.out, b"E", request_id, json.dumps({"ok": True, "bytes": frames.total}).encode())
        self.out.flush()


def _connect(config: dict[str, Any]) -> Any:
    import rados  # type: ignore[import-not-found]  # pylint: disable=import-outside-toplevel

    client = rados.Rados(rados_id=config.get("ceph_client") or "admin", clustername=config.get("cluster") or "ceph")
    seconds = str(max(1, int(config.get("timeout") or 30)))
    client.conf_read_file(config.get("ceph_conf") or None)
    if config.get("keyring"):
        client.conf_set("keyring", config["keyring"])
    client.conf_set("rados_osd_op_timeout", seconds)
    client.conf_set("rados_mon_op_timeout", seconds)
    client.connect(timeout=int(seconds))
    return client


def main() -> None:
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    config = json.loads(stdin.readline() or b"{}")
    try:
        import rbd  # type: ignore[import-not-found]  # pylint: disable=import-outside-toplevel

        client = _connect(config)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # No python3-rbd, or no cluster: the backup node falls back to the CLI pipeline.
        write_frame(out, b"R", 0, json.dumps({"ok": False, "error": _error_text(exc)}).encode())
        out.flush()
        return
    write_frame(out, b"R", 0, json.dumps({"ok": True}).encode())
    out.flush()
    server = Server(rbd, client, out)
    try:
        for line in iter(stdin.readline, b""):
            server.serve(json.loads(line))
    finally:
        client.shutdown()


if __name__ == "__main__":
    main()
