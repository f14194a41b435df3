# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a running transfer is doing, visible from outside the process.

Two channels, both best effort (a failure here never touches the data path):

- a **status file** ``STATE_DIR/progress-PID.json`` per transfer process, atomically replaced
  (temporary file + rename, so a reader never sees half a document), rewritten at most once per
  ``interval`` (1 s) per worker, listing each worker's image, snapshot, bytes done, expected
  bytes, percentage, rate, start and update times. ``read_status`` reads every such file of the
  state directory, ignoring those of dead processes; ``format_status`` prints them
  (``backurne status``).
- the **process title**: the process's ``comm`` (what ``ps -o comm``, ``top`` and ``pgrep``
  show; 15 bytes: ``bk web1 37%``), each worker thread's own ``comm`` (``ps -T``, ``top -H``)
  through ``prctl(PR_SET_NAME)``, and the command line (``ps -o args``): with the capability
  CAP_SYS_RESOURCE the kernel is pointed at a buffer of ours (``prctl(PR_SET_MM_ARG_START/END)``)
  and the whole title fits; without it the title is written over the original argv area and
  cut to its length (an Ansible module run with pipelining has only ``/usr/bin/python3``, 16
  bytes). Pure ctypes: no C extension such as ``setproctitle`` is needed on the node.

The expected size of a transfer is the sum of the extents ``rbd diff [--from-snap BASE]
IMAGE@SNAP`` lists as existing: the same extent walk export-diff makes, so it matches the
logical stream to its few bytes of headers (a deleted extent costs a record, no data). It is
computed on the live node in a background thread while the transfer already runs; until it
arrives the percentage is unknown (null).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import pid_alive
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.report.units import human_bytes

DEFAULT_STATE_DIR = "/var/lib/backurne"
STATE_DIR_ENV = "BACKURNE_STATE_DIR"
STATUS_PREFIX = "progress-"
UPDATE_INTERVAL = 1.0

_PR_SET_NAME = 15
_PR_SET_MM = 35
_PR_SET_MM_ARG_START = 8
_PR_SET_MM_ARG_END = 9
_COMM_BYTES = 15
_CMDLINE_BYTES = 512


def state_dir(explicit: str | None = None) -> str:
    """The state directory: ``explicit``, else ``$BACKURNE_STATE_DIR``, else /var/lib/backurne."""
    return explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


def expected_from_diff(entries: Iterable[Mapping[str, Any]]) -> int:
    """Bytes export-diff will stream for the ``rbd diff --format json`` entries (data extents only)."""
    total = 0
    for entry in entries:
        # rbd prints "exists" as the string "true"/"false" (16.2).
        if str(entry.get("exists", "true")).lower() == "true":
            total += int(entry.get("length", 0))
    return total


def estimate_transfer_bytes(live: RbdRunner, source: ImageSpec, snapshot: str, base: str | None) -> int:
    """Expected logical bytes of ``source@snapshot`` (from ``base``): one ``rbd diff`` on the live node."""
    args = ["diff", *source.at(snapshot).options()]
    if base is not None:
        args.append(f"--from-snap={base}")
    entries = live.json(args, timeout=600)
    return expected_from_diff(entries if isinstance(entries, list) else [])


# -- process title ----------------------------------------------------------------------------


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def utf8_prefix(text: str, limit: int) -> bytes:
    """``text`` in UTF-8, cut to at most ``limit`` bytes on a character boundary.

    The kernel cuts a title at a byte count; cut inside a multi-byte character, /proc/PID/stat
    and /proc/PID/comm are no longer UTF-8 and tools that read them as text fail (image
    ``é€日本``: "bk 5% é€日" is 14 bytes, the 15th is the first of the 3 bytes of "本").
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    # The encoding is valid UTF-8: the only undecodable bytes are those of the character cut.
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def set_thread_name(name: str) -> bool:
    """The calling thread's ``comm`` (15 bytes), through prctl(PR_SET_NAME); False if impossible."""
    libc = _libc()
    if libc is None:
        return False
    buffer = ctypes.create_string_buffer(utf8_prefix(name, _COMM_BYTES))
    return libc.prctl(_PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0) == 0


def _cut_bytes(data: bytes, limit: int) -> bytes:
    """UTF-8 ``data`` cut to ``limit`` bytes on a character boundary (other bytes: as is)."""
    if len(data) <= limit:
        return data
    try:
        return utf8_prefix(data.decode("utf-8"), limit)
    except UnicodeDecodeError:
        return data[:limit]  # the original command line, whatever its encoding


def _arg_area() -> tuple[int, int] | None:
    try:
        with open("/proc/self/stat", encoding="ascii") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 of proc(5): arg_start and arg_end are fields 48 and 49.
        return int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return None


class ProcessTitle:
    """Sets (and restores) this process's comm and command line as ``ps`` shows them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._libc = _libc()
        self._buffer: Any = None  # our command-line area, when the kernel accepted it
        self._original_comm = self._read("/proc/self/comm").rstrip(b"\n")
        self._original_cmdline = self._read("/proc/self/cmdline")
        self._area = _arg_area()
        self.mode = "none"  # "buffer" | "in-place" | "none": how the command line is set

    @staticmethod
    def _read(path: str) -> bytes:
        try:
            with open(path, "rb") as stream:
                return stream.read()
        except OSError:
            return b""

    def _set_comm(self, text: bytes) -> None:
        # Callers cut on a character boundary (utf8_prefix); the original comm is written back as read.
        with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as stream:
            stream.write(text[:_COMM_BYTES])

    def _point_kernel_at_buffer(self) -> bool:
        if self._libc is None or self._area is None:
            return False
        buffer = ctypes.create_string_buffer(_CMDLINE_BYTES)
        start = ctypes.addressof(buffer)
        end = start + _CMDLINE_BYTES
        # The kernel keeps arg_start <= arg_end at every step: move the bound on the side
        # the new area lies first.
        order = (
            [(_PR_SET_MM_ARG_START, start), (_PR_SET_MM_ARG_END, end)]
            if start < self._area[0]
            else [(_PR_SET_MM_ARG_END, end), (_PR_SET_MM_ARG_START, start)]
        )
        for option, address in order:
            if self._libc.prctl(_PR_SET_MM, option, address, 0, 0) != 0:
                return False  # EPERM without CAP_SYS_RESOURCE
        self._buffer = buffer
        return True

    def _write_cmdline(self, text: bytes) -> None:
        if self.mode == "none":
            if self._point_kernel_at_buffer():
                self.mode = "buffer"
            elif self._area is not None and self._area[1] - self._area[0] > 1:
                self.mode = "in-place"
            else:
                self.mode = "unavailable"
        if self.mode == "buffer":
            data = _cut_bytes(text, _CMDLINE_BYTES - 1).ljust(_CMDLINE_BYTES, b"\0")
            ctypes.memmove(self._buffer, data, _CMDLINE_BYTES)
        elif self.mode == "in-place" and self._area is not None:
            # Python keeps its own copy of argv: the original area is ours to overwrite. The
            # last byte stays NUL so the kernel does not read on into the environment.
            size = self._area[1] - self._area[0]
            data = _cut_bytes(text, size - 1).ljust(size, b"\0")
            ctypes.memmove(self._area[0], data, size)

    def set(self, comm: str, cmdline: str) -> None:
        with self._lock:
            self._set_comm(utf8_prefix(comm, _COMM_BYTES))
            with contextlib.suppress(OSError, ValueError, TypeError):
                self._write_cmdline(cmdline.encode("utf-8", "replace"))

    def restore(self) -> None:
        with self._lock:
            if self._original_comm:
                self._set_comm(self._original_comm)
            if self.mode in ("buffer", "in-place") and self._original_cmdline:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    self._write_cmdline(self._original_cmdline.rstrip(b"\0"))


# -- status file ------------------------------------------------------------------------------


# How long a transfer runs before its expected size is asked for (see estimate_in_background).
ESTIMATE_DELAY = 1.0


class WorkerProgress:
    """One worker's transfer of one snapshot; ``update`` is the ``progress`` callback of transfer_snapshot."""

    def __init__(self, board: ProgressBoard, slot: int, image: str, snapshot: str, dest: str, kind: str) -> None:
        self._board = board
        self.slot = slot
        self.image = image
        self.snapshot = snapshot
        self.dest = dest
        self.kind = kind
        self.bytes_done = 0
        self.bytes_expected: int | None = None
        self.started = board.clock()
        self.updated = self.started
        self.rate = 0.0
        self._last_write = 0.0
        self._rate_mark = (self.started, 0)
        self.finished = threading.Event()  # set by ProgressBoard.finish

    def update(self, count: int) -> None:
        self._board._update(self, count)

    def set_expected(self, expected: int | None) -> None:
        self.bytes_expected = expected
        self._board._flush(self, force=True)

    def estimate_in_background(self, estimate: Callable[[], int], delay: float = 0.0) -> threading.Thread:
        """Runs ``estimate`` (e.g. an ``rbd diff`` on the live node) without delaying the transfer.

        With ``delay``, only if the transfer is still running that many seconds after its start:
        the estimate costs an ssh session and an ``rbd diff`` on the live node, as much as a
        small transfer itself, and nobody watches the progress of one that ends in a second.
        """

        def run() -> None:
            if delay > 0 and self.finished.wait(delay):
                return
            try:
                self.set_expected(estimate())
            except Exception:  # an estimate is a nicety: unknown stays unknown
                return

        thread = threading.Thread(target=run, daemon=True, name="backurne-estimate")
        thread.start()
        return thread

    def percent(self) -> float | None:
        if not self.bytes_expected:
            return None
        # The estimate may be a little short (headers): never claim 100 % before the end.
        return round(min(99.9, 100.0 * self.bytes_done / self.bytes_expected), 1)

    def row(self, pid: int) -> dict[str, Any]:
        return {
            "pid": pid,
            "worker": self.slot,
            "image": self.image,
            "dest": self.dest,
            "snapshot": self.snapshot,
            "kind": self.kind,
            "bytes_done": self.bytes_done,
            "bytes_expected": self.bytes_expected,
            "percent": self.percent(),
            "rate": round(self.rate, 1),
            "started": round(self.started, 3),
            "updated": round(self.updated, 3),
        }


class ProgressBoard:
    """The status file (and the process title) of one transfer process.

    Thread-safe: every worker thread ``start``s a WorkerProgress per snapshot, hands its
    ``update`` to transfer_snapshot and ``finish``es it; ``close`` removes the file. Any I/O
    error disables the file silently: progress must never fail a backup.
    """

    def __init__(
        self,
        directory: str | None,
        *,
        label: str = "backurne transfer",
        interval: float = UPDATE_INTERVAL,
        title: bool = True,
        clock: Callable[[], float] = time.time,
        pid: int | None = None,
    ) -> None:
        self.directory = directory
        self.label = label
        self.interval = interval
        self.clock = clock
        self.pid = pid if pid is not None else os.getpid()
        self.path = os.path.join(directory, f"{STATUS_PREFIX}{self.pid}.json") if directory else None
        self.started = clock()
        self.writes = 0
        self._lock = threading.Lock()
        self._workers: dict[str, WorkerProgress] = {}
        self._title = ProcessTitle() if title else None
        if self.path is not None:
            try:
                os.makedirs(directory, mode=0o755, exist_ok=True)  # type: ignore[arg-type]
            except OSError:
                self.path = None

    def start(self, key: str, image: str, snapshot: str, dest: str = "", kind: str = "") -> WorkerProgress:
        with self._lock:
            used = {worker.slot for worker in self._workers.values()}
            slot = next(index for index in range(len(used) + 1) if index not in used)
            worker = WorkerProgress(self, slot, image, snapshot, dest, kind)
            self._workers[key] = worker
        set_thread_name(f"bk {image}")
        self._flush(worker, force=True)
        return worker

    def finish(self, key: str) -> None:
        with self._lock:
            worker = self._workers.pop(key, None)
        if worker is not None:
            worker.finished.set()
            self._flush(worker, force=True)

    def close(self) -> None:
        with self._lock:
            self._workers.clear()
            if self.path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        if self._title is not None:
            self._title.restore()

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted((worker.row(self.pid) for worker in self._workers.values()), key=lambda row: row["worker"])

    def _update(self, worker: WorkerProgress, count: int) -> None:
        now = self.clock()
        worker.bytes_done = count
        worker.updated = now
        mark_time, mark_bytes = worker._rate_mark
        if now - mark_time >= self.interval:
            worker.rate = (count - mark_bytes) / (now - mark_time)
            worker._rate_mark = (now, count)
        elif worker.rate == 0.0 and now > worker.started:
            worker.rate = count / (now - worker.started)
        self._flush(worker)

    def _flush(self, worker: WorkerProgress, force: bool = False) -> None:
        now = self.clock()
        with self._lock:
            if not force and now - worker._last_write < self.interval:
                return
            worker._last_write = now
            rows = sorted((w.row(self.pid) for w in self._workers.values()), key=lambda row: row["worker"])
            self._write(rows, now)
        self._set_title(rows)

    def _write(self, rows: list[dict[str, Any]], now: float) -> None:
        if self.path is None:
            return
        document = {"pid": self.pid, "label": self.label, "started": self.started, "updated": now, "workers": rows}
        try:
            handle, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{STATUS_PREFIX}")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(document, stream)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
            self.writes += 1
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
            self.path = None

    def _set_title(self, rows: list[dict[str, Any]]) -> None:
        if self._title is None:
            return
        if not rows:
            self._title.set("bk idle", f"{self.label}: idle")
            return
        parts = []
        for row in rows:
            pct = "?%" if row["percent"] is None else f"{row['percent']:.0f}%"
            parts.append(f"{row['image']} {pct} {human_bytes(row['rate'])}/s")
        if len(rows) == 1:
            pct = "?%" if rows[0]["percent"] is None else f"{rows[0]['percent']:.0f}%"
            comm = f"bk {pct} {rows[0]['image']}"
        else:
            comm = f"bk {len(rows)}x"
        self._title.set(comm, f"{self.label}: " + "; ".join(parts))


# -- reading ----------------------------------------------------------------------------------


def read_status(directory: str | None = None) -> list[dict[str, Any]]:
    """Every running worker of every live transfer process writing into ``directory``.

    For the CLI's ``backurne status`` (run it on the backup node: the files are local).
    ``directory`` defaults to ``state_dir()`` ($BACKURNE_STATE_DIR or /var/lib/backurne).
    Files of processes that are gone (killed mid-transfer) are ignored; unreadable or
    half-known files too. Returns the rows sorted by pid then worker slot; each row has
    ``pid worker image dest snapshot kind bytes_done bytes_expected percent rate started
    updated`` (times in epoch seconds, rate in bytes/s, percent None while unknown).
    """
    directory = state_dir(directory)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    rows: list[dict[str, Any]] = []
    for name in names:
        if not (name.startswith(STATUS_PREFIX) and name.endswith(".json")):
            continue
        try:
            pid = int(name[len(STATUS_PREFIX) : -len(".json")])
        except ValueError:
            continue
        if not pid_alive(pid):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as stream:
                document = json.load(stream)
        except (OSError, ValueError):
            continue
        if not isinstance(document, dict) or document.get("pid") != pid:
            continue
        for row in document.get("workers") or []:
            if isinstance(row, dict) and "image" in row:
                rows.append(dict(row, pid=pid))
    return sorted(rows, key=lambda row: (row["pid"], row.get("worker", 0)))


def format_status(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """A table of ``read_status`` rows for ``backurne status``; one line when nothing runs."""
    if not rows:
        return "no transfer running"
    now = time.time() if now is None else now
    header = ("pid", "worker", "image", "snapshot", "done", "expected", "%", "rate", "running")
    table = [header]
    for row in rows:
        expected = row.get("bytes_expected")
        percent = row.get("percent")
        table.append(
            (
                str(row["pid"]),
                str(row.get("worker", "")),
                str(row["image"]),
                str(row.get("snapshot", "")),
                human_bytes(row.get("bytes_done", 0)),
                human_bytes(expected),
                "?" if percent is None else f"{percent:.1f}",
                f"{human_bytes(row.get('rate', 0))}/s",
                f"{max(0, int(now - float(row.get('started', now))))}s",
            )
        )
    widths = [max(len(line[index]) for line in table) for index in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip_strict(line, widths)).rstrip() for line in table
    )
