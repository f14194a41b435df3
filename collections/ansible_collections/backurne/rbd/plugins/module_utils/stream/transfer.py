# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The data path of one backup, run on the backup node:
#
#   ssh live "bash --norc --noprofile -o pipefail -c 'rbd export-diff … - | zstd …'"   (stage "ssh" / "export")
#     -> relay (counts wire bytes) -> zstd -d                        (stage "decompress")
#     -> relay (counts logical bytes) -> rbd import-diff - DEST       (stage "import")
#
# Each stage is its own process with its own stderr pipe. stderr is NEVER merged into the
# stream: export-diff writes its header before it fails, and import-diff, reading the error
# text as diff records, would stop at the "e" of "error" (the end tag) and create the end
# snapshot with wrong content, exit 0 (observed on 16.2). Every exit status is checked; the
# first stage that failed on its own is reported, the others are killed.
import contextlib
import errno
import fcntl
import os
import re
import signal
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import IO, Any, Protocol, cast

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import Lock, LockBusy, release, try_acquire
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
    CephAccess,
    ImageSpec,
    RbdError,
    RbdRunner,
    stderr_cause,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.engine import (
    EngineUnavailable,
    StreamEngine,
    StreamFailed,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import BandwidthLimit, Throttle

CHUNK_SIZE = 1 << 20
# Linux pipes hold 64 KiB by default, so a 1 MiB read would rarely get more than 64 KiB and
# every chunk would cost a wake-up of both neighbours. Widened to the chunk size, the relay
# costs ~0.5 s of CPU per GiB instead of 1-2 s (measured, 2 vCPU); best effort.
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
STDERR_TAIL_BYTES = 64 * 1024
PLACEHOLDER_BYTES = 1 << 20
# How a failed transfer is stopped. Only the stages UPSTREAM of the failure are killed
# (SIGTERM, then SIGKILL after KILL_GRACE); the downstream ones see EOF and end on their own.
# That matters for import-diff: killed, it leaves its watch on the destination for ~30 s
# (osd_client_watch_timeout), and the image cannot be removed or written meanwhile; at EOF
# it fails cleanly ("(74) Bad message") without creating the end snapshot. A downstream
# stage still running STOP_GRACE after the stop began is killed as well.
KILL_GRACE = 3.0
STOP_GRACE = 30.0
# After a first stage fails, let the others end on their own for this long before stopping
# anything: the upstream cause (ssh reporting the remote export's failure) often exits a
# moment after the downstream symptom (import-diff reading a truncated stream), and a stage
# we kill can no longer be told apart from a victim.
FAILURE_SETTLE = 0.5
# How long to wait for a pipe reader after its process is gone (a grandchild could hold it).
DRAIN_WAIT = 5.0
# A transfer whose stream has not moved a byte for this long is stopped and fails its image
# (a full backup cluster makes import-diff block forever, with no error). It must exceed the
# longest silence of a healthy stream: ssh start-up, and export-diff scanning an unchanged
# stretch of a large image without fast-diff (it writes only changed extents).
DEFAULT_STALL_TIMEOUT = 300.0
# librbd's write path reports a refused write here, while `rbd import-diff` (16.2, librbd cache
# on) may still exit 0 and create its end snapshot over the missing data (observed: the backup
# cluster refusing data-object writes, 3-4 of 5 tries). Any such line fails the import.
_WRITE_ERROR = re.compile(
    r"(?:failed to write object|IO error encountered|failed to flush)\b.*?\((?P<errno>\d+)\) (?P<text>[^\n]*)"
)
_FIONREAD = getattr(termios, "FIONREAD", 0x541B)


@dataclass(frozen=True)
class Compression:
    enabled: bool = True
    level: int = 1
    threads: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 19:
            raise ValueError(f"zstd level must be 1..19, got {self.level}")
        if self.threads < 0:
            raise ValueError(f"zstd threads must be >= 0, got {self.threads}")

    def compressor_argv(self) -> list[str]:
        # zstd 1.5.4 takes -T only glued to its number ("-T 0" reads "0" as a file name).
        return ["zstd", "-q", f"-{self.level}", f"-T{self.threads}", "-c"]

    def decompressor_argv(self) -> list[str]:
        return ["zstd", "-q", "-d", "-c"]


@dataclass(frozen=True)
class StreamOptions:
    """How a stream runs: zstd, and its limits in seconds (timeout None: none; stall_timeout None: no watch)."""

    compression: Compression = field(default_factory=Compression)
    timeout: float | None = None
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT
    # The bandwidth limit (throttle.py): per stream and per node, paced on the wire bytes.
    bwlimit: BandwidthLimit = field(default_factory=BandwidthLimit)


@dataclass
class TransferResult:
    image: str
    dest: str
    snapshot: str
    base: str | None
    kind: str
    ok: bool = False
    bytes_wire: int = 0
    bytes_logical: int = 0
    duration: float = 0.0
    failed_stage: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    # Which data path moved it: "cli" (the process pipeline) or "librbd" (stream/engine.py).
    engine: str = "cli"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _StderrTail(threading.Thread):
    """Drains a stage's stderr (so it never blocks on a full pipe), keeping the tail."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.tail = bytearray()

    def run(self) -> None:
        fd = self.stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.tail += chunk
            if len(self.tail) > STDERR_TAIL_BYTES:
                del self.tail[: len(self.tail) - STDERR_TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace")


class _Stage:
    def __init__(self, name: str, argv: list[str], *, stdin: int | None, stdout: int | None) -> None:
        self.name = name
        self.argv = argv
        self.killed = False
        # Own process group: killing a stage must also kill what it started (the rbd and zstd
        # of a local `bash -c` pipeline), or they would linger holding the pipes. An ssh
        # ControlMaster daemonises into its own session and is not hit.
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)
        self.stderr = _StderrTail(cast(IO[bytes], self.proc.stderr))
        self.stderr.start()

    @property
    def rc(self) -> int | None:
        # Set by the reaper thread; poll() would return None while that thread waits.
        return self.proc.returncode

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, sig)

    def failed_on_its_own(self) -> bool:
        rc = self.rc
        # SIGPIPE means a downstream stage went away first: that one is the cause.
        return rc is not None and rc != 0 and not self.killed and rc != -signal.SIGPIPE

    def close(self, busy: list[IO[bytes]]) -> None:
        self.stderr.join(DRAIN_WAIT)
        if self.stderr.is_alive():
            busy = [*busy, self.stderr.stream]
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            # Never close a pipe under a thread still blocked on it (a grandchild such as an
            # ssh ControlMaster could keep it open); the daemon thread dies with the process.
            if stream is None or any(stream is other for other in busy):
                continue
            with contextlib.suppress(OSError):
                stream.close()


class _Relay(threading.Thread):
    """Copies one pipe into the next, counting bytes; closes the destination at EOF.

    With a ``throttle`` (the bandwidth limit), it moves slices of the throttle's size and pays
    for each after moving it, sleeping while the rate says so: the stream's long-run rate is
    the limit, its burst the buckets'. Zero copy (splice) either way.
    """

    def __init__(
        self,
        src: IO[bytes],
        dst: IO[bytes],
        wake: threading.Event,
        on_bytes: Callable[[int], None] | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.src = src
        self.dst = dst
        self.wake = wake
        self.on_bytes = on_bytes
        self.throttle = throttle
        self.chunk = CHUNK_SIZE if throttle is None else throttle.slice_size(CHUNK_SIZE)
        self.count = 0
        self.broken_pipe = False
        self.error: OSError | None = None
        # When a byte last went through (monotonic): the stall watch reads it.
        self.last_moved = time.monotonic()

    def _moved(self, size: int) -> None:
        self.count += size
        self.last_moved = time.monotonic()
        if self.on_bytes is not None:
            self.on_bytes(self.count)
        if self.throttle is not None:
            self.throttle.take(size)
            # A paced stream is not a stalled one: the wait counts as movement.
            self.last_moved = time.monotonic()

    def _splice(self, src_fd: int, dst_fd: int) -> bool:
        """Move the stream pipe to pipe inside the kernel; False if splice is not available.

        splice(2) hands the pipe's pages over instead of copying them into this process and
        back: the relay's CPU per GiB drops from ~0.5 s to a few syscalls, which counted on a
        2-core node where ssh, zstd and rbd want the CPU too (bench/transfer.py).
        """
        splice = getattr(os, "splice", None)  # Python >= 3.10, Linux
        if splice is None:
            return False
        while True:
            try:
                moved = splice(src_fd, dst_fd, self.chunk)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    return False  # not pipes at both ends, or no splice here: nothing moved yet
                if exc.errno == errno.EPIPE:
                    # The reader is gone. splice says EPIPE even at the end of the stream (the
                    # kernel looks at the reader before at EOF), e.g. import-diff done with the
                    # last record before ssh closed its end: read/write tells a clean end (EOF)
                    # from a reader that stopped early (data left to write: EPIPE again).
                    return False
                raise
            if not moved:
                return True
            self._moved(moved)

    def _copy(self, src_fd: int, dst_fd: int) -> None:
        while True:
            chunk = os.read(src_fd, self.chunk)
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                written = os.write(dst_fd, view)
                view = view[written:]
            self._moved(len(chunk))

    def run(self) -> None:
        src_fd = self.src.fileno()
        dst_fd = self.dst.fileno()
        for fd in (src_fd, dst_fd):
            with contextlib.suppress(OSError):  # EPERM above /proc/sys/fs/pipe-max-size
                fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK_SIZE)
        try:
            if not self._splice(src_fd, dst_fd):
                self._copy(src_fd, dst_fd)
        except BrokenPipeError:
            # The reader died; its own exit status tells why. Leave src open: closing it
            # would make the upstream stage fail with EPIPE and look like the culprit.
            self.broken_pipe = True
        except OSError as exc:
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.dst.close()
            self.wake.set()


def _progress_guard(progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    state = {"broken": False}

    def call(count: int) -> None:
        # A failing progress callback (a UI, a metric) must not break the data path.
        if state["broken"]:
            return
        try:
            progress(count)
        except Exception:
            state["broken"] = True

    return call


class _Pipeline:
    """The running stages and relays of one transfer, and their fate."""

    def __init__(self) -> None:
        self.stages: list[_Stage] = []
        self.relays: list[_Relay] = []
        self.wake = threading.Event()
        self.timed_out = False
        # Set when the stream stopped moving for the stall timeout: the stage it stopped at.
        self.stalled: _Stage | None = None
        self.started = time.monotonic()
        self.stop_started: float | None = None

    def start_stage(self, name: str, argv: list[str], *, stdin: int | None, stdout: int | None) -> _Stage:
        stage = _Stage(name, argv, stdin=stdin, stdout=stdout)
        self.stages.append(stage)
        threading.Thread(target=self._reap, args=(stage,), daemon=True).start()
        return stage

    def _reap(self, stage: _Stage) -> None:
        stage.proc.wait()
        self.wake.set()

    def relay(
        self,
        src: IO[bytes] | None,
        dst: IO[bytes] | None,
        on_bytes: Callable[[int], None] | None,
        throttle: Throttle | None = None,
    ) -> _Relay:
        # Both ends exist: the stages were started with stdout=PIPE / stdin=PIPE.
        relay = _Relay(cast(IO[bytes], src), cast(IO[bytes], dst), self.wake, on_bytes, throttle)
        self.relays.append(relay)
        relay.start()
        return relay

    def _running(self) -> list[_Stage]:
        return [stage for stage in self.stages if stage.rc is None]

    def _failed_index(self) -> int | None:
        """The most downstream stage known to have failed (a broken relay: its reader)."""
        failed = [index for index, stage in enumerate(self.stages) if stage.rc not in (None, 0)]
        failed += [index + 1 for index, relay in enumerate(self.relays) if relay.error or relay.broken_pipe]
        return max(failed) if failed else None

    def _kill(self, stages: list[_Stage], sig: signal.Signals) -> None:
        running = [stage for stage in stages if stage.rc is None]
        # Mark them all first: a stage dying of the first one's death is a victim too.
        for stage in running:
            stage.killed = True
        for stage in running:
            stage.signal_group(sig)

    def abandon_start(self) -> None:
        """A stage could not be started: end the stages already running and reap them.

        EOF rather than a signal first: a killed import-diff would hold a watch on its image for
        ~30 s (see STOP_GRACE)."""
        for stage in self.stages:
            if stage.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    stage.proc.stdin.close()
        self.stop_upstream_of(0)
        self.wait(None)

    def stop_upstream_of(self, index: int) -> None:
        self.stop_started = time.monotonic() if self.stop_started is None else self.stop_started
        self._kill(self.stages[:index], signal.SIGTERM)

    def last_progress(self) -> float:
        """When a byte last moved through any relay (the start while none has)."""
        return max([self.started, *(relay.last_moved for relay in self.relays)])

    def stalled_stage(self) -> _Stage:
        """The stage a stream that stopped moving waits on, for the error message.

        Relay i feeds stage i+1. Going downstream first: a running stage whose input holds
        unread bytes, or whose input has ended (its relay is done), is the one not moving (e.g.
        import-diff blocked on a full cluster); otherwise nothing arrives from the source.
        """
        for index in reversed(range(len(self.relays))):
            relay, reader = self.relays[index], self.stages[index + 1]
            if reader.rc is None and (not relay.is_alive() or _unread_bytes(relay.dst) > 0):
                return reader
        return self.stages[0]

    def wait(self, timeout: float | None, stall_timeout: float | None = None) -> None:
        """Until every stage has ended; stops the source on `timeout` (seconds since the call)
        or when no relay has moved a byte for `stall_timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failure_at: float | None = None
        while True:
            self.wake.clear()
            if not self._running():
                break
            now = time.monotonic()
            pause = 0.5
            if self.stop_started is not None:
                if now - self.stop_started >= STOP_GRACE:
                    self._kill(self.stages, signal.SIGKILL)
                elif now - self.stop_started >= KILL_GRACE:
                    self._kill([stage for stage in self.stages if stage.killed], signal.SIGKILL)
            elif (failed := self._failed_index()) is not None:
                failure_at = now if failure_at is None else failure_at
                if now - failure_at >= FAILURE_SETTLE:
                    self.stop_upstream_of(failed)
                else:
                    pause = FAILURE_SETTLE - (now - failure_at)
            elif deadline is not None and now >= deadline:
                self.timed_out = True
                # Stop the source; everything after it drains and ends on EOF.
                self.stop_upstream_of(1)
            elif stall_timeout is not None and now - self.last_progress() >= stall_timeout:
                self.stalled = self.stalled_stage()
                # As for the timeout: the source goes, the rest ends on EOF, and a stage
                # that cannot (import-diff blocked in a write) is killed after STOP_GRACE.
                self.stop_upstream_of(1)
            else:
                if deadline is not None:
                    pause = min(pause, deadline - now)
                if stall_timeout is not None:
                    pause = min(pause, max(0.0, stall_timeout - (now - self.last_progress())))
            self.wake.wait(pause)
        for relay in self.relays:
            relay.join(DRAIN_WAIT)

    def close(self) -> None:
        for stage in self.stages:
            if stage.rc is None:
                # Only on an exception escaping wait() (e.g. KeyboardInterrupt): no stage may
                # outlive the transfer.
                stage.killed = True
                stage.signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stage.proc.wait(KILL_GRACE)
            elif stage.killed:
                # A killed stage's leader is gone; sweep what is left of its group.
                stage.signal_group(signal.SIGKILL)
        busy = [relay.src for relay in self.relays if relay.is_alive()]
        for stage in self.stages:
            stage.close(busy)


def _unread_bytes(stream: IO[bytes]) -> int:
    """Bytes waiting in a pipe (either end; 0 when it cannot tell, e.g. already closed)."""
    try:
        buf = fcntl.ioctl(stream.fileno(), _FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(buf, "little", signed=True)


def import_write_error(stderr: str, target: str) -> str | None:
    """The cause to report when an import's stderr shows refused writes, else None.

    e.g. "Operation not permitted writing to the backup cluster (12 failed writes; first:
    handle_write_object: rbd_data.… failed to write object: (1) Operation not permitted)".
    """
    found = [match for match in map(_WRITE_ERROR.search, stderr.splitlines()) if match is not None]
    if not found:
        return None
    first = found[0]
    text = first.group("text").strip() or os.strerror(int(first.group("errno")))
    detail = stderr_cause(first.string) or first.group(0)
    plural = "s" if len(found) != 1 else ""
    return f"{text} writing to {target} ({len(found)} failed write{plural}; first: {detail})"


def _stage_label(stage: _Stage, remote: bool, remote_side: str = "export") -> str:
    if stage.name != "ssh" or not remote:
        return stage.name
    rc = stage.rc
    # 255 is ssh's own failure (connection, auth); a signal means the ssh client died. Any
    # other status is the remote pipeline's (pipefail): `remote_side`, the export for a
    # backup, the import for a restore (restore.py pushes the other way).
    return "ssh" if rc is None or rc == 255 or rc < 0 else remote_side


def _verdict(
    pipeline: _Pipeline,
    remote: bool,
    timeout: float | None,
    remote_side: str = "export",
    stall_timeout: float | None = None,
    import_target: str = "the backup cluster",
) -> tuple[str, str] | None:
    """(failed_stage, error) or None when every stage and relay succeeded.

    The last stage is the import (writing to `import_target`): refused writes on its stderr
    fail the transfer even when every exit status is 0, and name the cause.
    """
    if pipeline.timed_out:
        # Checked first: the downstream stages then fail on the truncated stream, as a
        # consequence. The source is where the stream stopped.
        source = pipeline.stages[0]
        return source.name, f"{source.name}: transfer timed out after {timeout:g} s"
    if pipeline.stalled is not None:
        label = pipeline.stalled.name
        return label, f"{label}: no data moved for {stall_timeout:g} s (stalled)"
    importer = pipeline.stages[-1]
    verdict = _exit_verdict(pipeline, remote, remote_side)
    write_error = import_write_error(importer.stderr.text(), import_target)
    if write_error is not None and (verdict is None or verdict[0] == _stage_label(importer, remote, remote_side)):
        label = _stage_label(importer, remote, remote_side)
        return label, f"{label}: {write_error} ({_status_text(importer.rc)})"
    return verdict


def _exit_verdict(pipeline: _Pipeline, remote: bool, remote_side: str) -> tuple[str, str] | None:
    """The verdict from exit statuses and relays alone."""
    for stage in pipeline.stages:  # upstream first: the earliest own failure is the cause
        if stage.failed_on_its_own():
            label = _stage_label(stage, remote, remote_side)
            cause, status = stderr_cause(stage.stderr.text()), _status_text(stage.rc)
            if not cause and label == "ssh" and stage.rc == 255:
                # A remote command killed by a signal (bash execs a lone command) reaches the ssh
                # client as its own 255, with nothing on stderr (observed: export-diff SIGKILLed).
                cause = "connection lost, or the remote command was killed by a signal"
            return label, f"{label}: {cause} ({status})" if cause else f"{label}: {status}"
    for relay_index, relay in enumerate(pipeline.relays):
        if relay.error is not None:
            return pipeline.stages[relay_index + 1].name, f"relay: {relay.error}"
        if relay.broken_pipe:
            reader = pipeline.stages[relay_index + 1]
            return reader.name, f"{reader.name}: stopped reading before the end of the stream (exit status {reader.rc})"
    for stage in pipeline.stages:
        if stage.rc != 0:
            label = _stage_label(stage, remote, remote_side)
            return label, f"{label}: {_status_text(stage.rc)}"
    return None


def _status_text(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _prepare_destination(backup: RbdRunner, dest: ImageSpec, full: bool) -> bool:
    """Make the destination ready for import-diff; True if this call created it."""
    if not full:
        # import-diff itself refuses a destination without the base snapshot ("start snapshot
        # … does not exist"), before writing anything.
        return False
    try:
        # A 1 MiB placeholder is enough: import-diff resizes the image to the diff's size.
        backup.create(dest, PLACEHOLDER_BYTES)
        return True
    except RbdError as exc:
        if not exc.is_exists:
            raise
    return False


def _empty_head(backup: RbdRunner, dest: ImageSpec, result: TransferResult) -> None:
    # A full export-diff only carries the source's allocated extents; whatever the existing
    # destination HEAD holds elsewhere would survive the import and corrupt the new
    # snapshot. Shrinking HEAD to 0 discards it; the destination's snapshots (its history)
    # keep their own data and size.
    if int(backup.image_info(dest).get("size", -1)) == 0:
        # Already empty (e.g. an earlier full failed before its first write): rbd refuses a
        # resize to the same size, and there is nothing to discard.
        return
    backup.resize(dest, 0, allow_shrink=True)
    result.notes.append("destination existed without a common base: HEAD emptied, its snapshots kept")


def transfer_snapshot(
    live: RbdRunner,
    backup: RbdRunner,
    src_pool: str,
    src_namespace: str | None,
    src_image: str,
    snapshot: str,
    base: str | None,
    dst_pool: str,
    dst_namespace: str | None,
    dst_image: str,
    compression: Compression | None = None,
    timeout: float | None = None,
    progress: Callable[[int], None] | None = None,
    lock_ttl: timedelta | None = None,
    fresh_destination: bool = False,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    snap_prefix: str | None = "backup",
    present: Collection[str] | None = None,
    engine: StreamEngine | None = None,
    engine_fallback: bool = True,
    throttle: Throttle | None = None,
) -> TransferResult:
    """Stream SRC@snapshot (the diff from `base`, or everything when base is None) into DEST.

    Never raises for a failure of this image: the result says which stage failed and why.
    `live` runs the export (normally over ssh), `backup` the import on this node. `timeout`
    bounds the streaming (None: no limit; ssh keep-alives catch a dead peer). `progress` gets
    the cumulative logical (decompressed) byte count. With `lock_ttl`, the destination's
    backup lock is held during the transfer (see lock.py); otherwise the caller holds it.
    `fresh_destination`: the caller has just created DEST as an empty placeholder (a full into
    it needs no creating or emptying, and a failed one removes it again) — two rbd calls saved.
    `stall_timeout`: fail when no byte has moved for that many seconds (None: never).
    `throttle`: the bandwidth limit of this stream (throttle.py), None for none.

    import-diff's exit 0 is not trusted: refused writes on its stderr fail the transfer, and
    the end snapshot must then be on DEST. After any failure, an end snapshot the failed
    import left on DEST (ours: `snap_prefix;…`, and not in `present`, DEST's snapshots before
    the transfer — read here when None) is removed, so no backup snapshot can differ from
    live; a note says so.

    `engine`: stream through the in-process engine (stream/engine.py) instead of the process
    pipeline; where it cannot serve the image before touching DEST, the pipeline does it
    (`engine_fallback`) or the image fails, and a note says why.
    """
    compression = compression or Compression()
    result = TransferResult(
        image=_display(src_pool, src_namespace, src_image),
        dest=_display(dst_pool, dst_namespace, dst_image),
        snapshot=snapshot,
        base=base,
        kind="full" if base is None else "incremental",
    )
    started = time.monotonic()
    lock: Lock | None = None
    created = False
    try:
        try:
            src = ImageSpec(src_pool, src_namespace, src_image)
            dest = ImageSpec(dst_pool, dst_namespace, dst_image)
            if backup.is_remote:
                raise ValueError("the import side runs on this node: the backup runner must be local")
            full = base is None
            created = full if fresh_destination else _prepare_destination(backup, dest, full)
            if lock_ttl is not None:
                outcome = try_acquire(backup, dst_pool, dst_namespace, dst_image, lock_ttl)
                if isinstance(outcome, LockBusy):
                    result.failed_stage, result.error = "prepare", outcome.message
                    # Somebody else owns it now, placeholder or not: leave it alone.
                    created = False
                    return result
                lock = outcome
                if lock.broke_stale:
                    result.notes.append(lock.broke_stale)
            if base is None and not created:
                _empty_head(backup, dest, result)
            # DEST's snapshots before the import: a failure must never remove one of those.
            if present is not None:
                before = set(present)
            else:
                before = set() if created else set(_snapshots_or_none(backup, dest))
        except (RbdError, ValueError) as exc:
            result.failed_stage, result.error = "prepare", f"prepare: {exc}"
            return result
        stream = StreamOptions(compression, timeout, stall_timeout)
        if engine is not None:
            what = (src, snapshot, base, dest)
            _stream_engine(engine, engine_fallback, (live, backup), what, stream, progress, result, throttle)
        else:
            _stream(live, backup, src, snapshot, base, dest, stream, progress, result, throttle)
        after = _confirm_end_snapshot(backup, dest, result) if result.ok else None
        ours = snap_prefix is not None and snapshot.startswith(f"{snap_prefix};")
        if not result.ok and ours and snapshot not in before:
            _drop_unconfirmed_snapshot(backup, dest, after, result)
        if not result.ok and created:
            # Leave no half-written, snapshot-less image behind that would look like a backup.
            try:
                backup.remove(dest)
                result.notes.append("removed the placeholder this transfer had created")
                lock = None  # went away with the image
            except RbdError as exc:
                result.notes.append(f"could not remove the placeholder: {exc}")
        return result
    finally:
        if lock is not None:
            try:
                release(backup, lock)
            except RbdError as exc:
                result.notes.append(f"could not release the lock: {exc}")
        result.duration = round(time.monotonic() - started, 3)


def _snapshots_or_none(backup: RbdRunner, dest: ImageSpec) -> list[str]:
    """DEST's snapshots; none when DEST does not exist (the import will say so)."""
    try:
        return backup.snapshot_names(dest)
    except RbdError as exc:
        if exc.is_not_found:
            return []
        raise


def _confirm_end_snapshot(backup: RbdRunner, dest: ImageSpec, result: TransferResult) -> list[str] | None:
    """Check that the end snapshot is on DEST after an import that said it succeeded.

    One listing, in process when this node has python3-rados (as under the lock). Returns it,
    or None when it could not be read (the result then fails: unconfirmed is not a backup).
    """
    try:
        names = backup.snapshot_names(dest)
    except RbdError as exc:
        result.ok, result.failed_stage = False, "confirm"
        result.error = f"confirm: cannot list the snapshots of the backup image: {exc}"
        return None
    if result.snapshot not in names:
        result.ok, result.failed_stage = False, "import"
        result.error = f"import: import-diff exited 0 but snapshot {result.snapshot!r} is not on the backup image"
    return names


def _drop_unconfirmed_snapshot(
    backup: RbdRunner, dest: ImageSpec, listed: list[str] | None, result: TransferResult
) -> None:
    """After a failed transfer: remove the end snapshot the import created anyway, if it did.

    Its content is not what live holds (refused writes, a stream cut short), and a snapshot
    on both sides is taken as the next incremental's base and lets live-side expiry go on.
    """
    try:
        names = listed if listed is not None else _snapshots_or_none(backup, dest)
        if result.snapshot not in names:
            return
        backup.snap_remove(dest.at(result.snapshot))
    except RbdError as exc:
        result.notes.append(f"could not remove snapshot {result.snapshot!r} left by the failed transfer: {exc}")
        result.error = (
            f"{result.error}; snapshot {result.snapshot!r} it left on the backup image could not be removed ({exc})"
        )
        return
    result.notes.append(
        f"removed snapshot {result.snapshot!r} that the failed transfer had left on the backup image (not trusted)"
    )


def _display(pool: str, namespace: str | None, image: str) -> str:
    return "/".join(part for part in (pool, namespace, image) if part)


def export_words(live: RbdRunner, src: ImageSpec, snapshot: str, base: str | None) -> list[str]:
    args = ["export-diff", "--no-progress", *src.at(snapshot).options()]
    if base is not None:
        args.append(f"--from-snap={base}")
    return live.access.rbd_argv(*args, "--path=-")


def import_diff_words(access: CephAccess, dest: ImageSpec) -> list[str]:
    """`rbd import-diff` of a stream on stdin into DEST: THE import command (backup and restore).

    librbd's cache off: with it on (the default), Ceph 16.2's import-diff logs "failed to write
    object: (1) Operation not permitted" when the cluster refuses the data writes, yet exits 0
    and creates the end snapshot over the missing data in most tries; with it off it fails
    (exit 1, no snapshot) every time (verified on 16.2.15). A stream is written once, so the
    cache buys nothing here.
    """
    return access.rbd_argv(
        "import-diff", "--rbd-cache=false", "--no-progress", "--path=-", *dest.options(with_snap=False)
    )


def import_words(backup: RbdRunner, dest: ImageSpec) -> list[str]:
    return import_diff_words(backup.access, dest)


class StreamResult(Protocol):
    """What a stream fills in: a transfer's or a restore's result."""

    ok: bool
    bytes_wire: int
    bytes_logical: int
    failed_stage: str | None
    error: str | None


@dataclass(frozen=True)
class StageCommand:
    """One stage of a stream: its name (the failed_stage when it is the culprit) and its argv."""

    name: str
    argv: list[str]


@dataclass(frozen=True)
class StreamDirection:
    """Which way a stream goes: where its logical (uncompressed) bytes are counted, which side
    the ssh client runs (its exit status is that side's), and what the import writes to."""

    logical_upstream: bool  # True: the source's output (compressed after it); else the sink's input
    remote_side: str
    import_target: str


# A backup pulls: ssh live "export | zstd" | zstd -d | import.
PULL = StreamDirection(logical_upstream=False, remote_side="export", import_target="the backup cluster")
# A restore pushes: export | zstd | ssh live "zstd -d | import".
PUSH = StreamDirection(logical_upstream=True, remote_side="import", import_target="the live cluster")


def run_stream(
    stages: tuple[StageCommand, StageCommand | None, StageCommand],
    direction: StreamDirection,
    result: StreamResult,
    remote: bool,
    limits: tuple[float | None, float | None],
    progress: Callable[[int], None] | None,
    throttle: Throttle | None = None,
) -> None:
    """Run source | [middle] | sink (the sink is the import), and fill `result` with the verdict.

    The one wiring of the data path, for a backup (PULL) and a restore (PUSH). `progress` gets
    the cumulative logical bytes; the wire bytes are counted at the other end. `remote`: a stage
    named "ssh" is the ssh client. `limits`: (timeout, stall_timeout) in seconds, None for none.
    `throttle` (the bandwidth limit) paces the relay of the wire bytes, those that cross ssh.
    """
    source, middle, sink = stages
    timeout, stall_timeout = limits
    logical_upstream = direction.logical_upstream
    pipeline = _Pipeline()
    on_logical = _progress_guard(progress)
    try:
        try:
            # Downstream first, so that a stage that cannot start fails before any data moves.
            sink_stage = pipeline.start_stage(sink.name, sink.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            middle_stage = None
            if middle is not None:
                middle_stage = pipeline.start_stage(
                    middle.name, middle.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            source_stage = pipeline.start_stage(
                source.name, source.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
            )
        except OSError as exc:
            pipeline.abandon_start()
            result.failed_stage, result.error = "prepare", f"prepare: cannot start a stage: {exc}"
            return
        # Stream order, source first: the verdict blames the most upstream own failure.
        pipeline.stages = [stage for stage in (source_stage, middle_stage, sink_stage) if stage is not None]
        if middle_stage is not None:
            # The wire side is the compressed one: after the middle stage (zstd) for a push,
            # before it (zstd -d) for a pull.
            upstream = pipeline.relay(
                source_stage.proc.stdout,
                middle_stage.proc.stdin,
                on_logical if logical_upstream else None,
                None if logical_upstream else throttle,
            )
            downstream = pipeline.relay(
                middle_stage.proc.stdout,
                sink_stage.proc.stdin,
                None if logical_upstream else on_logical,
                throttle if logical_upstream else None,
            )
        else:
            upstream = downstream = pipeline.relay(
                source_stage.proc.stdout, sink_stage.proc.stdin, on_logical, throttle
            )
        pipeline.wait(timeout, stall_timeout)
        logical, wire = (upstream, downstream) if logical_upstream else (downstream, upstream)
        result.bytes_wire = wire.count
        result.bytes_logical = logical.count
        verdict = _verdict(
            pipeline,
            remote,
            timeout,
            remote_side=direction.remote_side,
            stall_timeout=stall_timeout,
            import_target=direction.import_target,
        )
        if verdict is None:
            result.ok = True
        else:
            result.failed_stage, result.error = verdict
    finally:
        pipeline.close()


def run_rbd_stream(
    remote: RbdRunner,
    rbd_words: tuple[list[str], list[str]],
    direction: StreamDirection,
    stream: StreamOptions,
    progress: Callable[[int], None] | None,
    result: StreamResult,
    throttle: Throttle | None = None,
) -> None:
    """The stages of a backup (PULL) or a restore (PUSH) between this node and ``remote`` (the
    live node, over ssh when it is remote), run with run_stream.

    ``rbd_words``: (the remote side's rbd command, this node's): export and import for a pull,
    import and export for a push. zstd compresses on the sending side and decompresses on the
    receiving one; the remote side's commands run in one remote shell, named "ssh" when remote.
    """
    remote_rbd, local_rbd = rbd_words
    zstd = stream.compression
    pull = direction.remote_side == "export"
    remote_words = [remote_rbd]
    middle = None
    if zstd.enabled:
        # The sending side compresses, the receiving side decompresses.
        remote_words = [remote_rbd, zstd.compressor_argv()] if pull else [zstd.decompressor_argv(), remote_rbd]
        middle = (
            StageCommand("decompress", zstd.decompressor_argv())
            if pull
            else StageCommand("compress", zstd.compressor_argv())
        )
    remote_stage = StageCommand(
        "ssh" if remote.is_remote else direction.remote_side, remote.remote_shell_argv(remote_words)
    )
    local_stage = StageCommand("import" if pull else "export", local_rbd)
    stages = (remote_stage, middle, local_stage) if pull else (local_stage, middle, remote_stage)
    run_stream(stages, direction, result, remote.is_remote, (stream.timeout, stream.stall_timeout), progress, throttle)


def _stream(
    live: RbdRunner,
    backup: RbdRunner,
    src: ImageSpec,
    snapshot: str,
    base: str | None,
    dest: ImageSpec,
    stream: StreamOptions,
    progress: Callable[[int], None] | None,
    result: TransferResult,
    throttle: Throttle | None = None,
) -> None:
    rbd_words = (export_words(live, src, snapshot, base), import_words(backup, dest))
    run_rbd_stream(live, rbd_words, PULL, stream, progress, result, throttle)


def _stream_engine(
    engine: StreamEngine,
    fallback: bool,
    runners: tuple[RbdRunner, RbdRunner],
    what: tuple[ImageSpec, str, str | None, ImageSpec],
    stream: StreamOptions,
    progress: Callable[[int], None] | None,
    result: TransferResult,
    throttle: Throttle | None,
) -> None:
    """The stream through the engine; the process pipeline when the engine cannot serve it.

    `runners`: (live, backup); `what`: (source, snapshot, base, destination).
    """
    live, backup = runners
    src, snapshot, base, dest = what
    limits = (stream.timeout, stream.stall_timeout)
    try:
        outcome = engine.transfer(src, snapshot, base, dest, _progress_guard(progress), limits, throttle)
    except EngineUnavailable as exc:
        if not fallback:
            result.failed_stage, result.error = "prepare", f"prepare: stream engine unavailable: {exc}"
            return
        result.notes.append(f"stream engine not used, CLI pipeline instead: {exc}")
        _stream(live, backup, src, snapshot, base, dest, stream, progress, result, throttle)
        return
    except StreamFailed as exc:
        result.engine = "librbd"
        result.failed_stage, result.error = exc.stage, f"{exc.stage}: {exc}"
        return
    result.engine = "librbd"
    result.ok = True
    result.bytes_wire, result.bytes_logical = outcome.bytes_wire, outcome.bytes_logical
