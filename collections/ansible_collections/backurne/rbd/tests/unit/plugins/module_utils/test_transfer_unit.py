# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The transfer pipeline against a fake `rbd` (no Ceph): argv building, stage attribution,
# cleanup (no fd, no process left), and run_batch.
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner, SshTarget
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import BatchError, run_batch
from ansible_collections.backurne.rbd.plugins.module_utils.stream import transfer
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import (
    Compression,
    TransferResult,
    transfer_snapshot,
)

# export-diff writes a deterministic, compressible stream ending with a trailer; import-diff
# stores what it reads and, like the real one, refuses a stream without its end, and records
# its end snapshot ($FAKE_END_SNAP, default snap-2) where `snap ls` lists it. Images named
# write-error* get the end snapshot and exit 0 although librbd logged refused writes (Ceph
# 16.2 with its cache on); nosnap* exit 0 without creating it.
FAKE_RBD = r"""#!{python}
import json, os, sys, time
args = sys.argv[1:]
state = os.environ["FAKE_RBD_DIR"]
with open(os.path.join(state, "calls.log"), "a") as fh:
    fh.write(json.dumps(args) + "\n")
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
image = opts.get("image", "")
path = os.path.join(state, image.replace("/", "_") + ".img")
snaps_path = path[:-4] + ".snaps"
def snaps():
    return json.load(open(snaps_path)) if os.path.exists(snaps_path) else []
def save(names):
    json.dump(names, open(snaps_path, "w"))
size = int(os.environ.get("FAKE_SIZE", str(8 << 20)))
out = sys.stdout.buffer
def die(msg, rc):
    sys.stderr.write(msg + "\n")
    sys.exit(rc)
if "export-diff" in args:
    if image.startswith("export-fail"):
        out.write(b"rbd diff v1\n" + b"x" * 65536)
        out.flush()
        die("rbd: export-diff error: (2) No such file or directory", 2)
    if image.startswith("stall"):
        out.write(b"rbd diff v1\n" + b"z" * 4096)
        out.flush()
        time.sleep(60)
    if image.startswith("slow"):
        while True:
            out.write(b"y" * 4096)
            out.flush()
            time.sleep(0.05)
    block = (b"backurne-fake-diff " * 64)[:1024]
    for offset in range(0, size, 1024):
        out.write(block)
    out.write(b"END!")
elif "import-diff" in args:
    if image.startswith("import-stall"):
        sys.stdin.buffer.read(1024)
        time.sleep(60)
    if image.startswith("import-fail"):
        sys.stdin.buffer.read(1024)
        die("rbd: import-diff failed: (22) Invalid argument", 22)
    data = sys.stdin.buffer.read()
    if "write-error" in image:
        for tid in range(3):
            sys.stderr.write(
                "2026-12-03T08:28:13.609+0000 7fe7f65d76c0 -1 librbd::io::ObjectRequest: 0x7f2d80001c50 "
                f"handle_write_object: rbd_data.101b.000000000000000{{tid}} failed to write object: "
                "(1) Operation not permitted\n"
            )
    if not data.endswith(b"END!"):
        if image.startswith("half-snap"):
            save(snaps() + [os.environ.get("FAKE_END_SNAP", "snap-2")])
        die("rbd: failed to decode write data: (74) Bad message", 74)
    with open(path, "wb") as fh:
        fh.write(data[:-4])
    if not image.startswith("nosnap"):
        save(snaps() + [os.environ.get("FAKE_END_SNAP", "snap-2")])
elif "snap" in args and "ls" in args:
    if not os.path.exists(path):
        die("rbd: error opening image: (2) No such file or directory", 2)
    print(json.dumps([{{"id": i, "name": n}} for i, n in enumerate(snaps())]))
elif "snap" in args and "rm" in args:
    if image.startswith("snaprm-fail"):
        die("rbd: failed to remove snapshot: (16) Device or resource busy", 16)
    save([n for n in snaps() if n != opts["snap"]])
elif "create" in args:
    if image.startswith("create-fail"):
        die("rbd: create error: (1) Operation not permitted", 1)
    if os.path.exists(path):
        die("rbd: create error: (17) File exists", 17)
    open(path, "wb").close()
elif "rm" in args:
    if snaps():
        die("rbd: image has snapshots - these must be deleted with 'rbd snap purge' first", 39)
    os.unlink(path)
elif "resize" in args or "info" in args:
    if not os.path.exists(path):
        die("rbd: error opening image: (2) No such file or directory", 2)
    if "info" in args:
        print(json.dumps({{"id": "abc"}}))
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "rbd"
    script.write_text(FAKE_RBD.format(python=sys.executable))
    script.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_RBD_DIR", str(state))
    return state


def calls(state: Path) -> list[list[str]]:
    log = state / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def subcommands(state: Path) -> list[str]:
    known = ("export-diff", "import-diff", "snap", "create", "rm", "resize", "info")
    return [next(word for word in call if word in known) for call in calls(state)]


LIVE = RbdRunner(CephAccess("ceph", "backurne"), label="live")
BACKUP = RbdRunner(CephAccess("ceph", "backurne"), label="backup")


def run(image: str, dest: str, base: str | None = None, **kwargs: object) -> TransferResult:
    return transfer_snapshot(LIVE, BACKUP, "rbd", "ns", image, "snap-2", base, "bk", None, dest, **kwargs)  # type: ignore[arg-type]


def children() -> set[int]:
    """This test process's live children. /proc/PID/stat is read as bytes: another process's
    name (field 2, in parentheses) may be any bytes, not UTF-8; only the fields after the last
    ")" are looked at, and only processes whose parent is this one are kept."""
    mine = str(os.getpid()).encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == mine and fields[0] != b"Z":
                found.add(int(entry))
    return found


def test_children_reads_non_utf8_process_names() -> None:
    # A child whose comm is cut inside a multi-byte character ("bk " + half of "日").
    code = "import sys, time; open('/proc/self/comm', 'wb').write(b'bk \\xe6\\x97'); print(flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"
        assert Path(f"/proc/{proc.pid}/comm").read_bytes().strip() == b"bk \xe6\x97"
        assert proc.pid in children()
    finally:
        proc.kill()
        proc.wait()


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class TestCompression:
    def test_argv(self) -> None:
        assert Compression().compressor_argv() == ["zstd", "-q", "-1", "-T0", "-c"]
        assert Compression(level=3, threads=2).compressor_argv() == ["zstd", "-q", "-3", "-T2", "-c"]
        assert Compression().decompressor_argv() == ["zstd", "-q", "-d", "-c"]

    @pytest.mark.parametrize("kwargs", [{"level": 0}, {"level": 20}, {"threads": -1}])
    def test_invalid(self, kwargs: dict[str, int]) -> None:
        with pytest.raises(ValueError):
            Compression(**kwargs)


class TestArgv:
    def test_export_words(self) -> None:
        src = transfer.ImageSpec("rbd", "ns", "-img x")
        words = transfer.export_words(LIVE, src, "snap;2", "snap;1")
        assert words == [
            "rbd",
            "--cluster",
            "ceph",
            "--id",
            "backurne",
            "export-diff",
            "--no-progress",
            "--pool=rbd",
            "--namespace=ns",
            "--image=-img x",
            "--snap=snap;2",
            "--from-snap=snap;1",
            "--path=-",
        ]
        assert "--from-snap" not in " ".join(transfer.export_words(LIVE, src, "s", None))

    def test_import_words(self) -> None:
        dest = transfer.ImageSpec("bk", None, "c;-img;None")
        assert transfer.import_words(BACKUP, dest)[-6:] == [
            "import-diff",
            "--rbd-cache=false",
            "--no-progress",
            "--path=-",
            "--pool=bk",
            "--image=c;-img;None",
        ]

    def test_remote_export_is_one_quoted_bash_pipeline(self, tmp_path: Path) -> None:
        live = RbdRunner(CephAccess(), SshTarget("10.0.0.1", control_dir=str(tmp_path)))
        stages = [transfer.export_words(live, transfer.ImageSpec("rbd", None, "a b", "s"), "s", None)]
        stages.append(Compression().compressor_argv())
        argv = live.remote_shell_argv(stages)
        assert argv[0] == "ssh"
        assert argv[-1].startswith("bash --norc --noprofile -o pipefail -c ")
        assert "'\"'\"'--image=a b'\"'\"'" in argv[-1]


class TestTransferWithFakeRbd:
    @pytest.mark.parametrize("enabled", [True, False])
    def test_full_creates_destination(self, fake: Path, enabled: bool) -> None:
        seen: list[int] = []
        result = run("img", "dst", compression=Compression(enabled=enabled), progress=seen.append)
        assert result.ok, result
        assert (result.kind, result.failed_stage, result.error) == ("full", None, None)
        assert result.bytes_logical == (8 << 20) + 4
        if enabled:
            assert 0 < result.bytes_wire < result.bytes_logical // 10
        else:
            assert result.bytes_wire == result.bytes_logical
        assert (fake / "dst.img").stat().st_size == 8 << 20
        # Created here: nothing to list first; the end snapshot is confirmed afterwards.
        assert subcommands(fake) in (
            ["create", "import-diff", "export-diff", "snap"],
            ["create", "export-diff", "import-diff", "snap"],
        )
        assert seen and seen == sorted(seen) and seen[-1] == result.bytes_logical
        assert result.to_dict()["dest"] == "bk/dst"

    def test_full_into_existing_destination_empties_head(self, fake: Path) -> None:
        (fake / "dst.img").write_bytes(b"old")
        result = run("img", "dst")
        assert result.ok
        resize = [call for call in calls(fake) if "resize" in call]
        assert resize and "--size=0B" in resize[0] and "--allow-shrink" in resize[0]
        assert any("HEAD emptied" in note for note in result.notes)

    def test_incremental_touches_nothing_first(self, fake: Path) -> None:
        (fake / "dst.img").write_bytes(b"old")
        result = run("img", "dst", base="snap-1")
        assert result.ok and result.kind == "incremental"
        # Only reads besides the stream: the snapshots before (none given) and the end snapshot after.
        assert sorted(subcommands(fake)) == ["export-diff", "import-diff", "snap", "snap"]
        assert all("ls" in call for call in calls(fake) if "snap" in call)
        export = next(call for call in calls(fake) if "export-diff" in call)
        assert "--from-snap=snap-1" in export and "--snap=snap-2" in export

    def test_export_failure_is_blamed_on_export(self, fake: Path) -> None:
        result = run("export-fail", "dst")
        assert not result.ok
        assert result.failed_stage == "export"
        assert "export-diff error: (2)" in (result.error or "")
        # The placeholder this call created is gone again.
        assert not (fake / "dst.img").exists()
        assert any("removed the placeholder" in note for note in result.notes)

    def test_import_failure_kills_the_rest(self, fake: Path) -> None:
        (fake / "import-fail.img").write_bytes(b"")
        started = time.monotonic()
        # Uncompressed: zstd would hold the slow stream back in its buffers.
        result = run("slow", "import-fail", base="snap-1", compression=Compression(enabled=False), timeout=20)
        assert result.failed_stage == "import"
        assert "(22) Invalid argument" in (result.error or "")
        assert time.monotonic() - started < 10
        assert not children()

    def test_decompress_failure(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        broken = ["sh", "-c", "head -c 10 >/dev/null; echo 'zstd: /*stdin*\\: unknown header' >&2; exit 1"]
        monkeypatch.setattr(Compression, "decompressor_argv", lambda self: broken)
        (fake / "dst.img").write_bytes(b"")
        result = run("img", "dst", base="snap-1")
        assert result.failed_stage == "decompress"
        assert "unknown header" in (result.error or "")

    def test_stage_that_cannot_start(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(Compression, "decompressor_argv", lambda self: ["/nonexistent/zstd", "-d"])
        result = run("img", "dst")
        assert (result.ok, result.failed_stage) == (False, "prepare")
        assert "cannot start a stage" in (result.error or "")
        assert not (fake / "dst.img").exists()
        assert not children()

    def test_timeout(self, fake: Path) -> None:
        (fake / "dst.img").write_bytes(b"")
        result = run("slow", "dst", base="snap-1", timeout=1.0)
        # Not even the grandchildren of the killed `bash -c` pipeline survive.
        assert not [pid for pid in all_pids() if str(fake.parent) in cmdline(pid)]
        assert not result.ok
        assert result.failed_stage == "export"
        assert "timed out after 1 s" in (result.error or "")
        assert 1.0 <= result.duration < 8
        assert not children()

    def test_prepare_failure(self, fake: Path) -> None:
        result = run("img", "create-fail")
        assert (result.ok, result.failed_stage) == (False, "prepare")
        assert "Operation not permitted" in (result.error or "")
        assert "export-diff" not in subcommands(fake)

    def test_hostile_names_are_rejected_not_run(self, fake: Path) -> None:
        result = transfer_snapshot(LIVE, BACKUP, "rbd", None, "a/b", "s", None, "bk", None, "d")
        assert (result.ok, result.failed_stage) == (False, "prepare")
        assert calls(fake) == []

    def test_backup_runner_must_be_local(self, fake: Path, tmp_path: Path) -> None:
        remote = RbdRunner(CephAccess(), SshTarget("h", control_dir=str(tmp_path)))
        result = transfer_snapshot(LIVE, remote, "rbd", None, "i", "s", None, "bk", None, "d")
        assert result.failed_stage == "prepare"

    def test_failing_progress_callback_does_not_break_the_stream(self, fake: Path) -> None:
        def explode(count: int) -> None:
            raise RuntimeError("ui gone")

        assert run("img", "dst", progress=explode).ok

    def test_no_fd_or_process_leak(self, fake: Path) -> None:
        def fds() -> int:
            return len(os.listdir("/proc/self/fd"))

        run("img", "warmup")
        before = fds()
        for index in range(3):
            run("img", f"d{index}")
            run("export-fail", f"e{index}")
        (fake / "import-fail.img").write_bytes(b"")
        run("img", "import-fail", base="snap-1")
        assert fds() == before
        assert not children()


class TestStageLabel:
    @pytest.mark.parametrize(("rc", "label"), [(255, "ssh"), (-9, "ssh"), (1, "export"), (2, "export")])
    def test_remote(self, rc: int, label: str) -> None:
        stage = type("S", (), {"name": "ssh", "rc": rc})()
        assert transfer._stage_label(stage, remote=True) == label  # type: ignore[arg-type]


class TestRunBatch:
    def test_order_and_bound(self) -> None:
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}

        def work(item: int) -> int:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.01 * (item % 3))
            with lock:
                state["now"] -= 1
            return item * 10

        assert run_batch(list(range(20)), work, workers=3) == [item * 10 for item in range(20)]
        assert 1 < state["peak"] <= 3

    def test_error_isolation(self) -> None:
        def work(item: int) -> str:
            if item == 2:
                raise RuntimeError("boom")
            if item == 3:
                raise SystemExit(1)
            return f"ok {item}"

        results = run_batch([1, 2, 3, 4], work, workers=2, on_error=lambda item, exc: f"failed {item}: {exc!r}")
        assert results == ["ok 1", "failed 2: RuntimeError('boom')", "failed 3: SystemExit(1)", "ok 4"]

    def test_without_on_error_everything_runs_then_raises(self) -> None:
        done: list[int] = []

        def work(item: int) -> int:
            if item == 0:
                raise ValueError("first")
            done.append(item)
            return item

        with pytest.raises(BatchError) as info:
            run_batch([0, 1, 2], work, workers=1)
        assert sorted(done) == [1, 2]
        assert info.value.results == [None, 1, 2]
        assert list(info.value.errors) == [0]

    def test_edges(self) -> None:
        assert run_batch([], lambda item: item, workers=4) == []
        with pytest.raises(ValueError):
            run_batch([1], lambda item: item, workers=0)


# os.splice is Python 3.10+: on a 3.9 node the relay copies with read/write from the start.
SPLICE_CASES = ["refused", "absent"] + (["works"] if hasattr(os, "splice") else [])


@pytest.mark.parametrize("splice", SPLICE_CASES)
def test_relay_moves_every_byte_with_or_without_splice(monkeypatch: pytest.MonkeyPatch, splice: str) -> None:
    import errno
    import hashlib
    import subprocess

    real_splice = getattr(os, "splice", None)
    calls = {"splice": 0}

    def counting_splice(src: int, dst: int, count: int) -> int:
        calls["splice"] += 1
        if splice == "refused" or real_splice is None:
            raise OSError(errno.EINVAL, "not a pipe")
        return real_splice(src, dst, count)

    if splice == "absent":
        monkeypatch.delattr(os, "splice", raising=False)
    else:
        monkeypatch.setattr(os, "splice", counting_splice, raising=False)
    data = os.urandom(3 * 1024 * 1024 + 17)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    reader = subprocess.Popen(["sha256sum"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    seen: list[int] = []
    relay = transfer._Relay(writer.stdout, reader.stdin, threading.Event(), seen.append)
    relay.start()
    writer.stdin.write(data)
    writer.stdin.close()
    out = reader.stdout.read().decode().split()[0]
    relay.join(10)
    writer.wait(10)
    reader.wait(10)
    assert out == hashlib.sha256(data).hexdigest()
    assert relay.count == len(data) and seen[-1] == len(data)
    assert relay.error is None and not relay.broken_pipe
    if splice == "works":
        assert calls["splice"] >= 2  # the stream went through splice, EOF included
    elif splice == "refused":
        assert calls["splice"] == 1  # tried once, then read/write
    else:
        assert calls["splice"] == 0  # no os.splice (3.9): read/write from the start


def test_relay_reader_done_before_the_writer_closes_is_a_clean_end() -> None:
    # import-diff exits after the stream's last record while ssh still holds its end open:
    # splice reports EPIPE at that EOF; the relay must not call it a reader that stopped early.
    import subprocess

    size = 2 * 1024 * 1024
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.stdout.buffer.write(b'x' * {size}); sys.stdout.flush(); time.sleep(0.5)",
        ],
        stdout=subprocess.PIPE,
    )
    reader = subprocess.Popen(["head", "-c", str(size)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    relay = transfer._Relay(writer.stdout, reader.stdin, threading.Event())
    relay.start()
    relay.join(10)
    assert reader.wait(10) == 0 and writer.wait(10) == 0
    assert relay.count == size and not relay.broken_pipe and relay.error is None


def test_relay_reader_that_stops_early_is_reported() -> None:
    import subprocess

    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * (8 << 20))"], stdout=subprocess.PIPE
    )
    reader = subprocess.Popen(["head", "-c", "1000"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    relay = transfer._Relay(writer.stdout, reader.stdin, threading.Event())
    relay.start()
    relay.join(10)
    reader.wait(10)
    writer.kill()
    writer.wait(10)
    assert relay.broken_pipe and relay.count < 8 << 20


# -- distrusting import-diff's exit 0, and no silent stall -----------------------------------

OURS = "backup;daily;7;2026-01-01T00:00:00.000000"
# What Ceph 16.2's import-diff printed when the backup cluster refused data writes (librbd cache
# on; exit 0 and the end snapshot created in most tries), copied from the lab.
REFUSED_WRITES_STDERR = """\
2026-12-03T08:28:13.609+0000 7fe7f65d76c0 -1 librbd::io::ObjectRequest: 0x7f2d80001c50 handle_write_object: \
rbd_data.101b9c8bf9aa.0000000000000000 failed to write object: (1) Operation not permitted
2026-12-03T08:28:13.611+0000 7fe7f65d76c0 -1 librbd::cache::WriteAroundObjectDispatch: 0x7f0640011d10 \
handle_in_flight_io_complete: IO error encountered: tid=10: (1) Operation not permitted
"""


def run_ours(image: str, dest: str, base: str | None = None, **kwargs: object) -> TransferResult:
    return transfer_snapshot(LIVE, BACKUP, "rbd", "ns", image, OURS, base, "bk", None, dest, **kwargs)  # type: ignore[arg-type]


def fake_snaps(state: Path, image: str) -> list[str]:
    path = state / f"{image}.snaps"
    return json.loads(path.read_text()) if path.exists() else []


class TestImportWriteErrors:
    def test_refused_writes_name_the_cause_and_target(self) -> None:
        cause = transfer.import_write_error(REFUSED_WRITES_STDERR, "the backup cluster")
        assert cause is not None
        assert cause.startswith("Operation not permitted writing to the backup cluster (2 failed writes; first: ")
        assert "handle_write_object: rbd_data.101b9c8bf9aa.0000000000000000 failed to write object" in cause
        # The Ceph log prefix (time, thread, level) is not part of the message.
        assert "2026-12-03T" not in cause and "7fe7f65d76c0" not in cause

    def test_other_errno(self) -> None:
        line = (
            "2026-12-03T08:28:13.609+0000 7f -1 librbd::io::ObjectRequest: x failed to write object: "
            "(28) No space left on device\n"
        )
        cause = transfer.import_write_error(line, "the live cluster")
        assert cause is not None and cause.startswith(
            "No space left on device writing to the live cluster (1 failed write;"
        )

    @pytest.mark.parametrize(
        "stderr",
        [
            "",
            "Importing image diff: 100% complete...done.\n",
            "2026-12-03T08:28:13.609+0000 7f -1 did not load config file, using default settings.\n",
            "rbd: import-diff failed: (1) Operation not permitted\n",  # the exit status says it already
            "end snapshot 'x' already exists, aborting\nrbd: import-diff failed: (17) File exists\n",
        ],
    )
    def test_no_write_error(self, stderr: str) -> None:
        assert transfer.import_write_error(stderr, "the backup cluster") is None

    def test_exit_0_with_refused_writes_fails_and_drops_the_snapshot(
        self, fake: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", OURS)
        (fake / "write-error.img").write_bytes(b"")
        (fake / "write-error.snaps").write_text(json.dumps(["backup;daily;7;2025-12-31T00:00:00.000000"]))
        result = run_ours("img", "write-error", base="backup;daily;7;2025-12-31T00:00:00.000000")
        assert (result.ok, result.failed_stage) == (False, "import")
        assert "Operation not permitted writing to the backup cluster" in (result.error or "")
        assert "(exit status 0)" in (result.error or "")
        # The snapshot import-diff created over the refused writes is gone; the base is kept.
        assert fake_snaps(fake, "write-error") == ["backup;daily;7;2025-12-31T00:00:00.000000"]
        assert any(f"removed snapshot {OURS!r}" in note and "not trusted" in note for note in result.notes)

    def test_exit_0_without_the_end_snapshot_fails(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", OURS)
        (fake / "nosnap.img").write_bytes(b"")
        result = run_ours("img", "nosnap", base="b")
        assert (result.ok, result.failed_stage) == (False, "import")
        assert f"import-diff exited 0 but snapshot {OURS!r} is not on the backup image" in (result.error or "")
        assert result.notes == []

    def test_failed_import_that_left_its_snapshot(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", OURS)
        # A truncated stream (export fails) into an import that created its end snapshot anyway.
        (fake / "half-snap.img").write_bytes(b"")
        result = run_ours("export-fail", "half-snap", base="b")
        assert (result.ok, result.failed_stage) == (False, "export")
        assert fake_snaps(fake, "half-snap") == []
        assert any("removed snapshot" in note for note in result.notes)

    def test_a_snapshot_that_was_there_before_is_never_removed(
        self, fake: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", OURS)
        (fake / "half-snap.img").write_bytes(b"")
        result = run_ours("export-fail", "half-snap", base="b", present=[OURS])
        assert not result.ok
        assert fake_snaps(fake, "half-snap") == [OURS]
        assert not [call for call in calls(fake) if "rm" in call]

    def test_a_foreign_snapshot_is_never_removed(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", "snap-2")
        (fake / "half-snap.img").write_bytes(b"")
        result = run("export-fail", "half-snap", base="b")  # "snap-2": not "backup;…"
        assert not result.ok
        assert fake_snaps(fake, "half-snap") == ["snap-2"]

    def test_removal_that_fails_is_in_the_error(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", OURS)
        (fake / "snaprm-fail-write-error.img").write_bytes(b"")
        result = run_ours("img", "snaprm-fail-write-error", base="b")
        assert not result.ok
        assert f"snapshot {OURS!r} it left on the backup image could not be removed" in (result.error or "")
        assert any("could not remove snapshot" in note for note in result.notes)

    def test_failed_full_into_a_placeholder_removes_snapshot_then_image(
        self, fake: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_END_SNAP", OURS)
        result = run_ours("img", "write-error-new")
        assert not result.ok
        # rbd refuses to remove an image with snapshots: the snapshot had to go first.
        assert not (fake / "write-error-new.img").exists()
        assert [n for n in result.notes if "removed" in n] == [
            f"removed snapshot {OURS!r} that the failed transfer had left on the backup image (not trusted)",
            "removed the placeholder this transfer had created",
        ]


class TestStall:
    def test_source_that_stops_sending(self, fake: Path) -> None:
        (fake / "dst.img").write_bytes(b"")
        # Uncompressed: zstd would hold the few bytes sent back in its buffers.
        result = run(
            "stall", "dst", base="snap-1", stall_timeout=1.0, timeout=60, compression=Compression(enabled=False)
        )
        assert (result.ok, result.failed_stage) == (False, "export")
        assert result.error == "export: no data moved for 1 s (stalled)"
        assert 0 < result.bytes_logical < 1 << 20
        assert not [pid for pid in all_pids() if str(fake.parent) in cmdline(pid)]
        assert not children()

    def test_import_that_stops_reading(self, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # e.g. a full backup cluster: import-diff blocks in a write and reads no more.
        monkeypatch.setattr(transfer, "STOP_GRACE", 2.0)
        (fake / "import-stall.img").write_bytes(b"")
        result = run("img", "import-stall", base="snap-1", stall_timeout=1.0, compression=Compression(enabled=False))
        assert (result.ok, result.failed_stage) == (False, "import")
        assert result.error == "import: no data moved for 1 s (stalled)"
        assert not children()

    def test_a_slow_stream_that_keeps_moving_is_not_stalled(self, fake: Path) -> None:
        (fake / "dst.img").write_bytes(b"")
        # 4 KiB every 50 ms, forever: only the overall timeout stops it.
        result = run(
            "slow", "dst", base="snap-1", stall_timeout=1.0, timeout=3.0, compression=Compression(enabled=False)
        )
        assert result.failed_stage == "export"
        assert "timed out after 3 s" in (result.error or "")

    def test_stall_watch_off(self, fake: Path) -> None:
        (fake / "dst.img").write_bytes(b"")
        result = run("stall", "dst", base="snap-1", stall_timeout=None, timeout=2.0)
        assert "timed out after 2 s" in (result.error or "")


class TestStalledStage:
    """Which stage a stream that stopped moving is waiting on, from real pipes."""

    def _pipeline(self, source: list[str], reader: list[str]) -> transfer._Pipeline:
        import subprocess

        pipeline = transfer._Pipeline()
        sink = pipeline.start_stage("import", reader, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        src = pipeline.start_stage("export", source, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        pipeline.stages = [src, sink]
        pipeline.relay(src.proc.stdout, sink.proc.stdin, None)
        return pipeline

    def _finish(self, pipeline: transfer._Pipeline) -> None:
        import signal

        pipeline._kill(pipeline.stages, signal.SIGKILL)
        pipeline.wait(10)
        pipeline.close()

    def test_nothing_from_the_source(self) -> None:
        pipeline = self._pipeline(["sleep", "30"], ["cat"])
        try:
            time.sleep(0.3)
            assert pipeline.stalled_stage().name == "export"
            assert pipeline.relays[0].count == 0
        finally:
            self._finish(pipeline)

    def test_reader_not_reading(self) -> None:
        pipeline = self._pipeline(["head", "-c", "100000", "/dev/zero"], ["sleep", "30"])
        try:
            deadline = time.monotonic() + 5
            while pipeline.relays[0].count < 100000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pipeline.relays[0].count == 100000
            assert pipeline.stalled_stage().name == "import"  # bytes wait unread in its pipe
            assert pipeline.last_progress() > pipeline.started
        finally:
            self._finish(pipeline)


def test_silent_ssh_255_says_what_it_may_mean() -> None:
    import subprocess

    pipeline = transfer._Pipeline()
    sink = pipeline.start_stage("import", ["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    source = pipeline.start_stage("ssh", ["sh", "-c", "exit 255"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    pipeline.stages = [source, sink]
    pipeline.relay(source.proc.stdout, sink.proc.stdin, None)
    try:
        pipeline.wait(10)
        verdict = transfer._verdict(pipeline, remote=True, timeout=10)
    finally:
        pipeline.close()
    assert verdict == (
        "ssh",
        "ssh: connection lost, or the remote command was killed by a signal (exit status 255)",
    )
