# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The stream engine (option stream_engine: librbd | auto): many images' diffs over ONE ssh
# channel per worker to ONE long-lived process on the live node (stream/engine_live.py, shipped
# over the channel), applied in THIS process through librbd, instead of ssh + bash + `rbd
# export-diff` + zstd on the live node and zstd + `rbd import-diff` here, per image: every one of
# those is a process start, the rbd ones a fresh cluster connection (bench/engine.py measures it).
#
# What it keeps from the CLI pipeline (transfer.py): the stream is `rbd export-diff` v1 and is
# applied exactly as `rbd import-diff` applies it (DiffApplier: the from-snapshot must exist on
# the destination, the end snapshot must not; resize to the stream's size; data written with
# 4 KiB zero detection, zero records as write-zeroes; the end snapshot created after every write
# succeeded) and transfer_snapshot() around it does the placeholder, lock, confirmation and
# cleanup as for the CLI. Nothing is trusted that did not arrive in full: the end snapshot is
# only created when the stream's end record AND the live process's "ok" frame both arrived; a
# dead live process, a cut channel, a truncated or malformed frame, a write librbd refuses fail
# that image (the channel is dropped, the next image gets a new one), not the run.
#
# Fallback: what the engine cannot do before touching the destination (no python3-rbd on either
# side, the live process not starting, an unknown reply) makes that image go through the CLI
# pipeline; the result's notes say so.
import contextlib
import json
import os
import pkgutil
import select
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, ImageSpec, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.stream import engine_live
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import Throttle

ENGINES = ("cli", "librbd", "auto")
# The interpreter on the live node that has python3-rbd (Debian's; a pyenv or venv python
# first on PATH would not have it).
LIVE_PYTHON = "/usr/bin/python3"
# Reads the engine's source from stdin (its length on the first line), so that the command line
# holds only this fixed text: nothing of ours is quoted into it but the tag.
BOOTSTRAP = "import sys;b=sys.stdin.buffer;exec(compile(b.read(int(b.readline())),'backurne-stream-engine','exec'))"
ENGINE_ARGV0 = "backurne-stream-engine"
# BACKURNE_STREAM_ENGINE_TAG (environment): a word put on the live process's command line, so a
# test can find ITS engine process (ps) among others.
TAG_ENV = "BACKURNE_STREAM_ENGINE_TAG"
FRAME = engine_live.FRAME
BANNER = engine_live.BANNER
SPARSE_SIZE = 4096  # rbd import-diff's default --sparse-size
ZERO_BLOCK = bytes(SPARSE_SIZE)
# A `w` record larger than this is refused as malformed (ours are at most 4 MiB; rbd's a few).
MAX_RECORD = 256 << 20
# Largest frame payload accepted (the live side sends 1 MiB, zlib may grow it a little).
MAX_FRAME = 64 << 20
READY_TIMEOUT = 60.0
# librados' own limit for one OSD/monitor operation of the applier: a write blocked on a full
# pool fails after it instead of hanging the worker (the stall watch of the CLI pipeline).
DEFAULT_OP_TIMEOUT = 300


class EngineUnavailable(Exception):
    """The engine cannot serve this image and nothing was written: use the CLI pipeline."""


class StreamFailed(Exception):
    """The image's stream failed (after the destination may have been touched): `stage`, message."""

    def __init__(self, stage: str, text: str) -> None:
        super().__init__(text)
        self.stage = stage


class ChannelBroken(Exception):
    """The channel to the live process is unusable (EOF, timeout, malformed frame)."""


# -- the applier: `rbd import-diff` in this process ---------------------------------------------


class DiffApplier:
    """Applies one `rbd export-diff` v1 stream, fed in pieces, to an open librbd image.

    Mirrors tools/rbd/action/Import.cc (do_import_diff_fd) of Ceph 16.2, stricter where it is
    lax: a resize failure, an unknown tag, bytes after the end record, a missing end snapshot
    record or a from/to snapshot other than the one asked for are errors. `finish()` creates
    the end snapshot; nothing else does.
    """

    def __init__(self, image: Any, expected_from: str | None, expected_to: str) -> None:
        self.image = image
        self.expected_from = expected_from
        self.expected_to = expected_to
        self.buffer = bytearray()
        self.banner_seen = False
        self.ended = False
        self.from_seen: str | None = None
        self.to_seen: str | None = None
        # True once the destination was changed (resized or written): no fallback after that.
        self.touched = False
        self.snapshots = {str(entry["name"]) for entry in image.list_snaps()}

    def feed(self, data: bytes) -> None:
        if self.ended:
            if data:
                raise StreamFailed("import", f"{len(data)} bytes after the end record of the diff stream")
            return
        self.buffer += data
        while self._step():
            pass

    def _need(self, count: int) -> bytes | None:
        if len(self.buffer) < count:
            return None
        chunk = bytes(self.buffer[:count])
        del self.buffer[:count]
        return chunk

    def _peek_len(self, start: int, fmt: str) -> int | None:
        size = struct.calcsize(fmt)
        if len(self.buffer) < start + size:
            return None
        return int(struct.unpack_from(fmt, self.buffer, start)[0])

    def _step(self) -> bool:
        """Consume one complete record from the buffer; False when more bytes are needed."""
        if not self.banner_seen:
            banner = self._need(len(BANNER))
            if banner is None:
                return False
            if banner != BANNER:
                raise StreamFailed("import", "invalid or unexpected diff banner")
            self.banner_seen = True
            return True
        if self.ended or not self.buffer:
            return False
        tag = bytes(self.buffer[:1])
        if tag in (b"f", b"t"):
            return self._name_record(tag)
        if tag == b"s":
            record = self._need(9)
            if record is None:
                return False
            self._resize(int(struct.unpack_from("<Q", record, 1)[0]))
            return True
        if tag in (b"w", b"z"):
            return self._io_record(tag)
        if tag == b"e":
            del self.buffer[:1]
            self.ended = True
            if self.buffer:
                raise StreamFailed("import", f"{len(self.buffer)} bytes after the end record of the diff stream")
            return False
        raise StreamFailed("import", f"unrecognized tag byte {tag[0]} in the diff stream")

    def _name_record(self, tag: bytes) -> bool:
        length = self._peek_len(1, "<I")
        if length is None:
            return False
        if length > 4096:
            raise StreamFailed("import", "snapshot name longer than 4096 bytes in the diff stream")
        record = self._need(5 + length)
        if record is None:
            return False
        name = record[5:].decode("utf-8")
        if tag == b"f":
            if name != self.expected_from:
                raise StreamFailed("import", f"diff starts at snapshot {name!r}, expected {self.expected_from!r}")
            if name not in self.snapshots:
                raise StreamFailed("import", f"start snapshot {name!r} does not exist in the image, aborting")
            self.from_seen = name
        else:
            if name != self.expected_to:
                raise StreamFailed("import", f"diff ends at snapshot {name!r}, expected {self.expected_to!r}")
            if name in self.snapshots:
                raise StreamFailed("import", f"end snapshot {name!r} already exists, aborting")
            self.to_seen = name
        return True

    def _check_order(self) -> None:
        # import-diff checks the from-snapshot when its record comes; ours always comes first.
        if self.expected_from is not None and self.from_seen is None:
            raise StreamFailed("import", "the diff stream has no start snapshot record")

    def _resize(self, size: int) -> None:
        self._check_order()
        if self.image.size() != size:
            self.touched = True
            self.image.resize(size)

    def _io_record(self, tag: bytes) -> bool:
        if len(self.buffer) < 17:
            return False
        offset, length = struct.unpack_from("<QQ", self.buffer, 1)
        if tag == b"z":
            del self.buffer[:17]
            self._check_order()
            self.touched = True
            self.image.write_zeroes(offset, length)
            return True
        if length > MAX_RECORD:
            raise StreamFailed("import", f"write record of {length} bytes in the diff stream")
        if len(self.buffer) < 17 + length:
            return False
        data = bytes(self.buffer[17 : 17 + length])
        del self.buffer[: 17 + length]
        self._check_order()
        self._write_sparse(offset, data)
        return True

    def _write_sparse(self, offset: int, data: bytes) -> None:
        """Write like import-diff: runs of all-zero 4 KiB blocks (from the record's start) as write-zeroes."""
        self.touched = True
        view = memoryview(data)
        start, size = 0, len(data)
        while start < size:
            zeroed = _is_zero(view[start : start + SPARSE_SIZE])
            end = start
            while end < size and _is_zero(view[end : end + SPARSE_SIZE]) == zeroed:
                end = min(end + SPARSE_SIZE, size)
            if zeroed:
                self.image.write_zeroes(offset + start, end - start)
            else:
                written = self.image.write(bytes(view[start:end]), offset + start)
                if written != end - start:
                    raise StreamFailed("import", f"short write at offset {offset + start}: {written} bytes")
            start = end

    def finish(self) -> None:
        """The stream is complete: flush and create the end snapshot, as import-diff does."""
        if not self.ended:
            raise StreamFailed("import", "the diff stream ended before its end record (truncated)")
        if self.to_seen is None:
            raise StreamFailed("import", "the diff stream has no end snapshot record")
        self._check_order()
        self.image.flush()
        self.image.create_snap(self.to_seen)


def _is_zero(block: memoryview) -> bool:
    return block == ZERO_BLOCK[: len(block)]


# -- the channel to the live process -------------------------------------------------------------


def engine_source() -> bytes:
    """engine_live.py's text (also from inside AnsiballZ's zip)."""
    data = pkgutil.get_data(engine_live.__name__.rpartition(".")[0], "engine_live.py")
    if not data:
        raise EngineUnavailable("cannot read the live-side engine's source")
    return data


def live_config(access: CephAccess, timeout: float) -> dict[str, Any]:
    """The live node's Ceph access for the engine process (paths only: no key material)."""
    return {
        "cluster": access.cluster,
        "ceph_client": access.ceph_client,
        "keyring": access.keyring,
        "ceph_conf": access.ceph_conf,
        "timeout": int(timeout),
    }


class LiveChannel:
    """One ssh session running the live-side engine; one request at a time."""

    def __init__(self, live: RbdRunner, tag: str) -> None:
        words = [LIVE_PYTHON, "-c", BOOTSTRAP, ENGINE_ARGV0, tag]
        self.proc = subprocess.Popen(
            live.command_argv(words),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stderr_tail = bytearray()
        self._stderr_reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_reader.start()
        self.buffer = bytearray()
        self.next_id = 1
        self.broken: str | None = None

    def _drain_stderr(self) -> None:
        stream = cast(IO[bytes], self.proc.stderr)
        with contextlib.suppress(OSError, ValueError):
            for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
                self.stderr_tail = (self.stderr_tail + chunk)[-8192:]

    def stderr_text(self) -> str:
        return bytes(self.stderr_tail).decode("utf-8", "replace").strip()

    def start(self, config: dict[str, Any]) -> None:
        """Ship the source and the config; wait for the ready frame. EngineUnavailable otherwise."""
        source = engine_source()
        try:
            self._send(str(len(source)).encode() + b"\n" + source + json.dumps(config).encode() + b"\n")
            kind, _request, payload = self.read_frame(READY_TIMEOUT)
        except ChannelBroken as exc:
            raise EngineUnavailable(f"the live-side engine did not start: {exc}") from None
        answer = _json(payload) if kind == b"R" else None
        if not isinstance(answer, dict):
            raise EngineUnavailable(f"the live-side engine answered {kind!r} instead of ready")
        if not answer.get("ok"):
            raise EngineUnavailable(f"the live-side engine cannot run there: {answer.get('error')}")

    def _send(self, data: bytes) -> None:
        stdin = cast(IO[bytes], self.proc.stdin)
        try:
            stdin.write(data)
            stdin.flush()
        except OSError as exc:
            raise ChannelBroken(f"cannot write to the live-side engine: {exc}") from None

    def request(self, fields: dict[str, Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        self._send(json.dumps({"id": request_id, **fields}).encode() + b"\n")
        return request_id

    def _fill(self, count: int, deadline: float | None) -> None:
        fd = cast(IO[bytes], self.proc.stdout).fileno()
        while len(self.buffer) < count:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _w, _x = select.select([fd], [], [], wait)
            if not ready:
                raise ChannelBroken("no data from the live-side engine (stalled)")
            chunk = os.read(fd, max(1 << 20, count - len(self.buffer)))
            if not chunk:
                raise ChannelBroken(self._eof_text(count))
            self.buffer += chunk

    def _eof_text(self, count: int) -> str:
        where = "in the middle of a frame (truncated)" if self.buffer else "between frames"
        rc = self.proc.poll()
        status = "" if rc is None else f", ssh exit status {rc}"
        stderr = self.stderr_text()
        return f"the live-side engine's stream ended {where}{status}" + (f": {stderr}" if stderr else "")

    def read_frame(self, stall: float | None) -> tuple[bytes, int, bytes]:
        """The next frame; ChannelBroken when none arrives within `stall` seconds or the channel ends."""
        deadline = None if stall is None else time.monotonic() + stall
        self._fill(FRAME.size, deadline)
        kind, request_id, length = FRAME.unpack_from(self.buffer)
        if kind not in b"RDZE" or length > MAX_FRAME:
            raise ChannelBroken(f"malformed frame from the live-side engine (kind {kind!r}, {length} bytes)")
        self._fill(FRAME.size + length, deadline)
        payload = bytes(self.buffer[FRAME.size : FRAME.size + length])
        del self.buffer[: FRAME.size + length]
        return kind, request_id, payload

    def close(self) -> None:
        with contextlib.suppress(OSError):
            cast(IO[bytes], self.proc.stdin).close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self._stderr_reader.join(1)
        with contextlib.suppress(OSError):
            cast(IO[bytes], self.proc.stdout).close()


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


# -- the engine: channels per worker, the applier's cluster client ------------------------------


@dataclass
class EngineOutcome:
    bytes_wire: int = 0
    bytes_logical: int = 0


class StreamEngine:
    """One per transfer batch: a channel per worker thread, one backup-side RADOS client."""

    def __init__(self, live: RbdRunner, backup: RbdRunner, compress: bool, op_timeout: float | None) -> None:
        self.live = live
        self.backup = backup
        self.compress = compress
        self.op_timeout = int(op_timeout or DEFAULT_OP_TIMEOUT)
        self.tag = os.environ.get(TAG_ENV) or uuid.uuid4().hex[:12]
        self._local = threading.local()
        self._channels: list[LiveChannel] = []
        self._guard = threading.Lock()
        # Why the engine cannot run at all (set once: every image then goes the CLI way).
        self.unavailable: str | None = None
        self._client: Any = None
        self._rbd: Any = None

    # The backup side: its own client, with librbd's cache off as for `rbd import-diff`
    # (transfer.import_diff_words says why) and a bound on every operation.
    def _backup_client(self) -> tuple[Any, Any]:
        with self._guard:
            if self._client is None:
                try:
                    import rados  # type: ignore[import-not-found]  # pylint: disable=import-outside-toplevel
                    import rbd  # type: ignore[import-not-found]  # pylint: disable=import-outside-toplevel
                except ImportError as exc:
                    raise EngineUnavailable(f"no python3-rbd on this node ({exc})") from None
                access = self.backup.access
                problem = access.file_problem()
                if problem:
                    raise EngineUnavailable(problem)
                client = rados.Rados(rados_id=access.ceph_client, clustername=access.cluster)
                try:
                    client.conf_read_file(access.ceph_conf or None)
                    if access.keyring:
                        client.conf_set("keyring", access.keyring)
                    client.conf_set("rbd_cache", "false")
                    client.conf_set("rados_osd_op_timeout", str(self.op_timeout))
                    client.conf_set("rados_mon_op_timeout", str(self.op_timeout))
                    client.connect(timeout=self.op_timeout)
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    client.shutdown()
                    raise EngineUnavailable(f"cannot connect to the backup cluster in process: {exc}") from None
                self._client, self._rbd = client, rbd
            return self._client, self._rbd

    def _channel(self) -> LiveChannel:
        channel: LiveChannel | None = getattr(self._local, "channel", None)
        if channel is not None and channel.broken is None:
            return channel
        if channel is not None:
            self._drop(channel)
        channel = LiveChannel(self.live, self.tag)
        with self._guard:
            self._channels.append(channel)
        try:
            channel.start(live_config(self.live.access, self.op_timeout))
        except EngineUnavailable:
            self._drop(channel)
            raise
        self._local.channel = channel
        return channel

    def _drop(self, channel: LiveChannel) -> None:
        channel.broken = channel.broken or "dropped"
        if getattr(self._local, "channel", None) is channel:
            self._local.channel = None
        # Killed, not asked: it may be in the middle of sending a large diff we no longer read.
        with contextlib.suppress(OSError):
            os.killpg(channel.proc.pid, 15)
        channel.close()
        with self._guard:
            if channel in self._channels:
                self._channels.remove(channel)

    def close(self) -> None:
        with self._guard:
            channels = list(self._channels)
        for channel in channels:
            channel.close()
        with self._guard:
            self._channels.clear()
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.shutdown()
                self._client = None

    def transfer(
        self,
        src: ImageSpec,
        snapshot: str,
        base: str | None,
        dest: ImageSpec,
        progress: Callable[[int], None] | None,
        limits: tuple[float | None, float | None],
        throttle: Throttle | None = None,
    ) -> EngineOutcome:
        """Stream src@snapshot (from base) into dest. EngineUnavailable: nothing written, use the CLI.

        `limits`: (timeout, stall timeout) in seconds, None for none, as for the CLI pipeline.
        `throttle`: the bandwidth limit (throttle.py), paid on the wire bytes of each frame.

        StreamFailed: the image failed (stage and message); the end snapshot was not created.
        """
        if self.unavailable:
            raise EngineUnavailable(self.unavailable)
        try:
            client, rbd = self._backup_client()
            channel = self._channel()
        except EngineUnavailable as exc:
            self.unavailable = str(exc)
            raise
        try:
            ioctx = client.open_ioctx(dest.pool)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise EngineUnavailable(f"cannot open pool {dest.pool!r} in process: {exc}") from None
        try:
            ioctx.set_namespace(dest.namespace or "")
            with rbd.Image(ioctx, dest.image) as image:
                return self._run(channel, image, (src, snapshot, base), progress, limits, throttle)
        except rbd.Error as exc:
            raise StreamFailed("import", f"librbd on the backup cluster: {_rbd_text(exc)}") from None
        finally:
            ioctx.close()

    def _run(
        self,
        channel: LiveChannel,
        image: Any,
        what: tuple[ImageSpec, str, str | None],
        progress: Callable[[int], None] | None,
        limits: tuple[float | None, float | None],
        throttle: Throttle | None = None,
    ) -> EngineOutcome:
        src, snapshot, base = what
        timeout, stall = limits
        deadline = None if timeout is None else time.monotonic() + timeout
        applier = DiffApplier(image, base, snapshot)
        outcome = EngineOutcome()
        fields = {"pool": src.pool, "namespace": src.namespace, "image": src.image, "snap": snapshot, "base": base}
        try:
            request_id = channel.request({**fields, "compress": self.compress})
            while True:
                kind, answered, payload = channel.read_frame(_wait(stall, deadline))
                if answered != request_id or kind not in b"DZE":
                    raise ChannelBroken(f"unexpected frame {kind!r} for request {answered} (expected {request_id})")
                if kind == b"E":
                    self._end(applier, payload)
                    return outcome
                outcome.bytes_wire += len(payload)
                data = zlib.decompress(payload) if kind == b"Z" else payload
                outcome.bytes_logical += len(data)
                # Every byte of this image's stream passes here once: the bandwidth limit is paid on
                # the wire bytes (len(payload)), as the CLI pipeline's relay pays on what crosses ssh.
                if throttle is not None:
                    throttle.take(len(payload))
                applier.feed(data)
                if progress is not None:
                    progress(outcome.bytes_logical)
        except ChannelBroken as exc:
            self._drop(channel)
            if deadline is not None and time.monotonic() >= deadline:
                raise StreamFailed("export", f"transfer timed out after {timeout:g} s") from None
            if "stalled" in str(exc):
                raise StreamFailed("export", f"no data moved for {stall:g} s (stalled)") from None
            if not applier.touched:
                raise EngineUnavailable(f"the live-side engine failed before any write: {exc}") from None
            raise StreamFailed("export", str(exc)) from None
        except zlib.error as exc:
            self._drop(channel)
            raise StreamFailed("export", f"corrupt compressed frame from the live-side engine: {exc}") from None
        except StreamFailed as exc:
            # The rest of this image's frames are not read: the channel goes, a new one follows.
            self._drop(channel)
            if not applier.touched:
                raise EngineUnavailable(f"{exc.stage}: {exc}") from None
            raise
        except Exception:
            self._drop(channel)
            raise

    @staticmethod
    def _end(applier: DiffApplier, payload: bytes) -> None:
        answer = _json(payload)
        if not isinstance(answer, dict):
            raise StreamFailed("export", "malformed end frame from the live-side engine")
        if not answer.get("ok"):
            raise StreamFailed("export", f"live node: {answer.get('error')}")
        applier.finish()


def _wait(stall: float | None, deadline: float | None) -> float | None:
    """How long to wait for the next frame: the stall timeout, bounded by the overall deadline."""
    if deadline is None:
        return stall
    left = max(0.0, deadline - time.monotonic())
    return left if stall is None else min(stall, left)


def _rbd_text(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc) or type(exc).__name__
    if code:
        with contextlib.suppress(ValueError, OverflowError):
            return f"({abs(int(code))}) {os.strerror(abs(int(code)))}: {text}"
    return text
