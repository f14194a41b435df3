"""Faults on the transfer data path, on the real lab: the backup cluster refusing data writes, a
stream that stops moving, the live-side export or the ssh client killed mid-transfer.

Each test breaks the real thing (cephx caps, a stopped or killed process found by this test's
own namespace in its command line), then asserts the exit code, the report, the data on both
clusters by checksum (no backup snapshot may differ from live; the last good base stays on
live), and that the next run after the fault is removed converges by itself.

test_backup_failures.py has the neighbours: the ssh client killed during a FULL transfer, an
unreachable live node, two concurrent runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playbook_helpers import (
    T_RETENTION_LIVE,
    T_SNAPSHOT,
    T_TRANSFER,
    MiB,
    PlaybookRun,
    assert_ok,
    assert_same_data,
    backup_image,
    cluster_name,
    day,
    make_inventory,
    ours,
    run_backup,
    snap_name,
    snaps,
    spec,
)

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, ImageSpec, RbdRunner, SshTarget
from ansible_collections.backurne.rbd.plugins.module_utils.stream import transfer as core_transfer
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import transfer_snapshot

PROFILES = {"daily": {"count": 7}}
# Caps that let client.backurne open and snapshot images on the backup cluster (header, directory,
# id and object-map objects writable) but not write their data objects: the run of issue 12 #1.
REFUSING_OSD_CAPS = (
    "profile rbd-read-only, allow rwx pool=rbd object_prefix rbd_header., "
    "allow rwx pool=rbd object_prefix rbd_directory, allow rwx pool=rbd object_prefix rbd_id., "
    "allow rwx pool=rbd object_prefix rbd_object_map."
)


# -- faults ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def backup_refuses_data_writes(lab: Any) -> Iterator[None]:
    """client.backurne on the backup cluster may write image headers but no data objects.

    The caps it had are put back on the way out, whatever happened (the lab is shared by every
    test of the run). Only the caps are read and written: the key never leaves `ceph`.
    """
    (entry,) = json.loads(lab.ceph("backup", "auth", "get", "client.backurne", "--format=json"))
    saved = dict(entry["caps"])
    assert set(saved) >= {"mon", "osd"}, f"unexpected caps layout: {sorted(saved)}"
    lab.ceph(
        "backup",
        "auth",
        "caps",
        "client.backurne",
        "mon",
        "profile rbd",
        "mgr",
        "profile rbd",
        "osd",
        REFUSING_OSD_CAPS,
    )
    try:
        yield
    finally:
        words = [word for kind, caps in sorted(saved.items()) for word in (kind, caps)]
        lab.ceph("backup", "auth", "caps", "client.backurne", *words)
        (back,) = json.loads(lab.ceph("backup", "auth", "get", "client.backurne", "--format=json"))
        assert back["caps"] == saved, f"caps not restored: {back['caps']} != {saved}"


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _proc(pid: int, what: str) -> str:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _imported_bytes(pattern: re.Pattern[str]) -> int:
    """Bytes read so far by the `rbd import-diff` whose command line matches (0: none yet)."""
    best = 0
    for pid in _pids():
        if _proc(pid, "comm").strip() != "rbd" or not pattern.search(_proc(pid, "cmdline")):
            continue
        for line in _proc(pid, "io").splitlines():
            if line.startswith("rchar:"):
                best = max(best, int(line.split()[1]))
    return best


class Catcher(threading.Thread):
    """Sends ``sig`` once to the process (``comm`` name) whose command line matches ``pattern``,
    as soon as the import into this test's backup image has read ``after_bytes``.

    The patterns carry the test's own namespace and image: nothing of another test, another
    lab or anyone else can match. Stopped processes are remembered for the cleanup."""

    def __init__(
        self, comm: str, pattern: str, importer: str, sig: signal.Signals, after_bytes: int, timeout: float = 240
    ) -> None:
        super().__init__(daemon=True)
        self.comm = comm
        self.pattern = re.compile(pattern)
        self.importer = re.compile(importer)
        self.sig = sig
        self.after_bytes = after_bytes
        self.timeout = timeout
        self.stop = threading.Event()
        self.hit: list[tuple[int, str]] = []
        self.imported_at_hit = 0

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            imported = _imported_bytes(self.importer) if self.after_bytes else 0
            if imported >= self.after_bytes:
                for pid in _pids():
                    if _proc(pid, "comm").strip() != self.comm:
                        continue
                    cmdline = _proc(pid, "cmdline")
                    if not self.pattern.search(cmdline):
                        continue
                    try:
                        os.kill(pid, self.sig)
                    except ProcessLookupError:
                        continue
                    self.hit.append((pid, cmdline))
                    self.imported_at_hit = imported
                    return
            time.sleep(0.005)

    def release(self) -> None:
        """End what was stopped (SIGKILL works on a stopped process; SIGCONT lets it die)."""
        for pid, cmdline in self.hit:
            if _proc(pid, "cmdline") != cmdline:
                continue  # gone, or the pid was reused: not ours any more
            for sig in (signal.SIGKILL, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)


def export_pattern(ns: str, image: str) -> str:
    return rf"export-diff .*--namespace={re.escape(ns)} --image={re.escape(image)} "


def import_pattern(ns: str, bimage: str) -> str:
    # /proc's cmdline ends with the NUL (read here as a blank) after the last word.
    return rf"import-diff .*--namespace={re.escape(ns)} --image={re.escape(bimage)}(?: |$)"


def run_with(catcher: Catcher, run: Callable[[], PlaybookRun]) -> PlaybookRun:
    catcher.start()
    try:
        return run()
    finally:
        catcher.stop.set()
        catcher.join()
        catcher.release()


# -- shared assertions ------------------------------------------------------------------------------


def assert_backup_unchanged(lab: Any, ns: str, image: str, bimage: str, kept: list[str], new: str) -> None:
    """After a failed run: the new snapshot is absent on backup, the backup's snapshots are
    the ones it had, each equal to live by checksum, and the last good base is still on live."""
    assert ours(snaps(lab, "backup", ns, bimage)) == sorted(kept), "a failed transfer left a backup snapshot"
    assert new not in snaps(lab, "backup", ns, bimage)
    on_live = snaps(lab, "live", ns, image)
    assert kept[-1] in on_live, f"the last good base {kept[-1]} was expired on live: {on_live}"
    assert new in on_live, "the snapshot that failed to transfer is still pending on live"
    assert_same_data(lab, ns, image, bimage, kept)


def assert_converged(lab: Any, ns: str, image: str, bimage: str) -> list[str]:
    """The newest live snapshot is on backup, and every shared snapshot is equal by checksum."""
    on_live, on_backup = snaps(lab, "live", ns, image), snaps(lab, "backup", ns, bimage)
    assert on_live and on_live[-1] in on_backup, (on_live, on_backup)
    shared = [snap for snap in on_backup if snap in on_live]
    assert_same_data(lab, ns, image, bimage, shared)
    return shared


def failed_item(run: PlaybookRun, image: str) -> dict[str, Any]:
    item = run.image(T_TRANSFER, image)
    assert (item["status"], item["ok"], item["snapshots"]) == ("failed", False, []), item
    assert f"'{image}'" in item["error"], item
    assert image in run.failure_text(), run.failure_text()
    return item


def report_record(path: Path, image: str) -> dict[str, Any]:
    records = [rec for rec in json.loads(path.read_text())["images"] if rec["image"] == image]
    assert len(records) == 1, records
    return records[0]


# -- the tests ----------------------------------------------------------------------------------


def test_backup_cluster_refusing_data_writes(lab, ns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 #1: import-diff with the librbd cache on exited 0 over refused writes and left a
    snapshot with wrong data; live-side expiry then removed the last good base."""
    report = tmp_path / "report.json"
    monkeypatch.setenv("BACKURNE_REPORT_JSON", str(report))
    lab.write_image("live", spec(ns, "vm"), 16, seed=1201, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    bimg = backup_image(cluster_name(inv), "vm")
    s0 = snap_name("daily", 7, day(0))
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    assert snaps(lab, "backup", ns, bimg) == [s0]

    lab.overwrite("live", spec(ns, "vm"), 0.25, seed=1202, admin=True)
    pending: list[str] = []
    with backup_refuses_data_writes(lab):
        # The cache-on bug was intermittent (3-4 of 5): several tries, each must fail.
        for attempt in range(3):
            moment = day(1, minutes=10 * attempt)
            new = snap_name("daily", 7, moment)
            run = run_backup(inv, tmp_path, now=moment, extra_vars={"backurne_force": True})
            assert run.rc != 0, f"attempt {attempt}: a refused write must fail the run\n{run.describe()}"
            assert run.image(T_SNAPSHOT, "vm")["new_snapshots"] == [new]
            pending.append(new)
            item = failed_item(run, "vm")
            # The transfers go from the base through every pending snapshot: the first one fails.
            # After a failed try the object map marks the objects import-diff tried to write, so
            # the HEAD guard may find HEAD changed and try to roll it back to the base: that
            # write is refused too, and it is what fails the image then.
            if "snap rollback" in item["error"]:
                assert attempt > 0 and f"@{s0}" in item["error"], item
                assert "Operation not permitted" in item["error"], item
            else:
                assert f"snapshot {pending[0]!r}: import failed" in item["error"], item
                assert "Operation not permitted writing to the backup cluster" in item["error"], item
            record = report_record(report, "vm")
            assert record["status"] == "failed" and "Operation not permitted" in record["error"], record
            # Live-side expiry kept the base and everything newer (nothing of ours removed).
            assert run.result(T_RETENTION_LIVE)["failed_images"] == []
            assert_backup_unchanged(lab, ns, "vm", bimg, [s0], new)
            assert [snap for snap in pending if snap not in snaps(lab, "live", ns, "vm")] == []

    # The caps are back: the next run converges by itself (no new snapshot needed).
    later = day(1, minutes=60)
    run = assert_ok(run_backup(inv, tmp_path, now=later))
    sent = run.image(T_TRANSFER, "vm")
    assert (sent["status"], sent["kind"], sent["base"]) == ("transferred", "incremental", s0), sent
    assert sent["snapshots"] == pending, sent
    assert report_record(report, "vm")["status"] == "transferred"
    assert ours(snaps(lab, "backup", ns, bimg)) == sorted([s0, *pending])
    # Live-side expiry then kept only the new base (max_on_live 0): it is equal on both sides.
    assert assert_converged(lab, ns, "vm", bimg) == [pending[-1]]


def test_import_with_cache_on_is_distrusted(
    lab, ns, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence, against real Ceph: even an import-diff run the old way
    (librbd cache on), which exits 0 over refused writes, must not leave a backup snapshot.

    import-diff's exit status is recorded per try; the assertion is on the outcome only, since
    Ceph decides the exit status (0 in most tries on 16.2 with the cache on)."""

    def cache_on(backup: RbdRunner, dest: ImageSpec) -> list[str]:
        return backup.access.rbd_argv("import-diff", "--no-progress", "--path=-", *dest.options(with_snap=False))

    monkeypatch.setattr(core_transfer, "import_words", cache_on)
    target = SshTarget(
        lab.live_ip,
        port=lab.port,
        identity_file=str(lab.ssh_key),
        known_hosts_file=str(lab.known_hosts),
        control_dir=str(tmp_path_factory.mktemp("cp")),  # short: a socket path has ~100 bytes
    )
    try:
        _cache_on_tries(lab, ns, target)
    finally:
        # Do not leave the ControlMaster behind for ControlPersist seconds.
        subprocess.run(target.exit_master_argv(), capture_output=True, timeout=30, check=False)


def _cache_on_tries(lab: Any, ns: str, target: SshTarget) -> None:
    live_access = CephAccess(ceph_client="backurne", keyring=str(lab.keyring("live")), ceph_conf=str(lab.live_conf))
    live = RbdRunner(live_access, target)
    backup = RbdRunner(
        CephAccess(ceph_client="backurne", keyring=str(lab.keyring("backup")), ceph_conf=str(lab.backup_conf))
    )
    s0, s1 = snap_name("daily", 7, day(0)), snap_name("daily", 7, day(1))
    lab.write_image("live", spec(ns, "vm"), 16, seed=1211, admin=True)
    live.snap_create(ImageSpec("rbd", ns, "vm", s0))
    first = transfer_snapshot(live, backup, "rbd", ns, "vm", s0, None, "rbd", ns, "vm")
    assert first.ok, first
    lab.overwrite("live", spec(ns, "vm"), 0.25, seed=1212, admin=True)
    live.snap_create(ImageSpec("rbd", ns, "vm", s1))
    outcomes = []
    with backup_refuses_data_writes(lab):
        for _ in range(5):
            result = transfer_snapshot(live, backup, "rbd", ns, "vm", s1, s0, "rbd", ns, "vm")
            assert not result.ok, result
            assert result.failed_stage == "import", result
            assert "Operation not permitted writing to the backup cluster" in (result.error or ""), result
            assert snaps(lab, "backup", ns, "vm") == [s0], result
            outcomes.append("exit 0" if "(exit status 0)" in (result.error or "") else "exit non-zero")
            if "(exit status 0)" in (result.error or ""):
                # import-diff created s1 over the refused writes: it was taken away again.
                assert any(f"removed snapshot {s1!r}" in note for note in result.notes), result
    print(f"import-diff with the cache on, refused writes: {outcomes}")
    assert_same_data(lab, ns, "vm", "vm", [s0])
    done = transfer_snapshot(live, backup, "rbd", ns, "vm", s1, s0, "rbd", ns, "vm")
    assert done.ok, done
    assert_same_data(lab, ns, "vm", "vm", [s0, s1])


def _big_incremental(lab: Any, ns: str, tmp_path: Path) -> tuple[dict[str, Any], str, str, str]:
    """A 256 MiB image backed up once (s0), then half of it rewritten on live: the next
    transfer streams ~128 MiB, long enough to catch it mid-stream."""
    lab.write_image("live", spec(ns, "big"), 256, seed=1220, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    bimg = backup_image(cluster_name(inv), "big")
    s0 = snap_name("daily", 7, day(0))
    assert_ok(run_backup(inv, tmp_path, now=day(0), extra_vars={"backurne_compression": False}))
    lab.overwrite("live", spec(ns, "big"), 0.5, seed=1221, block=1 * MiB, admin=True)
    return inv, bimg, s0, snap_name("daily", 7, day(1))


def _converges_after(lab: Any, ns: str, inv: dict[str, Any], bimg: str, s0: str, s1: str, tmp_path: Path) -> None:
    run = assert_ok(run_backup(inv, tmp_path, now=day(1, minutes=60), extra_vars={"backurne_compression": False}))
    assert run.image(T_SNAPSHOT, "big")["new_snapshots"] == [], "the pending snapshot is sent, no new one taken"
    sent = run.image(T_TRANSFER, "big")
    assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "incremental", s0, [s1])
    assert ours(snaps(lab, "backup", ns, bimg)) == sorted([s0, s1])
    # s0 was compared while it was the base; live-side expiry then let it go (max_on_live 0).
    assert assert_converged(lab, ns, "big", bimg) == [s1]


def test_stalled_transfer_fails_and_converges(lab, ns, tmp_path: Path) -> None:
    """Issue 12 #2: a stream that stops moving (here the live-side export stopped with SIGSTOP)
    used to hang for the 6 h per-snapshot timeout; backurne_stall_timeout ends it."""
    inv, bimg, s0, s1 = _big_incremental(lab, ns, tmp_path)
    catcher = Catcher("rbd", export_pattern(ns, "big"), import_pattern(ns, bimg), signal.SIGSTOP, after_bytes=1)
    extra = {"backurne_stall_timeout": 5, "backurne_compression": False}
    run = run_with(catcher, lambda: run_backup(inv, tmp_path, now=day(1), extra_vars=extra))
    assert catcher.hit, "the export-diff of this test's image was never caught"
    assert run.rc != 0, run.describe()
    item = failed_item(run, "big")
    assert "no data moved for 5 s (stalled)" in item["error"], item
    assert s1 in item["error"], item
    assert run.result(T_RETENTION_LIVE)["failed_images"] == []
    assert_backup_unchanged(lab, ns, "big", bimg, [s0], s1)
    _converges_after(lab, ns, inv, bimg, s0, s1, tmp_path)


@pytest.mark.parametrize(
    ("victim", "comm", "stage", "cause", "compression"),
    [
        # Compressed (the default): the remote pipeline `export-diff | zstd` reports the export's
        # death through bash's pipefail. Alone, bash execs export-diff, and its death by a signal
        # reaches the ssh client only as ssh's own 255 ("ssh failed").
        ("export", "rbd", "export failed", "Killed", True),
        ("ssh", "ssh", "ssh failed", "killed by SIGKILL", False),
    ],
)
def test_killed_mid_incremental(
    lab, ns, tmp_path: Path, victim: str, comm: str, stage: str, cause: str, compression: bool
) -> None:
    """The live-side `rbd export-diff`, or the ssh client on the backup node, SIGKILLed while an
    incremental streams (test_backup_failures.py kills ssh during a full)."""
    inv, bimg, s0, s1 = _big_incremental(lab, ns, tmp_path)
    catcher = Catcher(comm, export_pattern(ns, "big"), import_pattern(ns, bimg), signal.SIGKILL, after_bytes=16 * MiB)
    extra = {"backurne_compression": compression}
    run = run_with(catcher, lambda: run_backup(inv, tmp_path, now=day(1), extra_vars=extra))
    assert catcher.hit, f"the {victim} of this test's image was never caught mid-stream"
    print(f"{victim} killed after {catcher.imported_at_hit} bytes imported: {catcher.hit[0][1][:200]}")
    assert run.rc != 0, run.describe()
    item = failed_item(run, "big")
    print(f"error: {item['error']}")
    assert stage in item["error"] and cause in item["error"] and s1 in item["error"], item
    assert run.result(T_RETENTION_LIVE)["failed_images"] == []
    assert_backup_unchanged(lab, ns, "big", bimg, [s0], s1)
    _converges_after(lab, ns, inv, bimg, s0, s1, tmp_path)


def test_process_patterns_match_only_this_tests_image() -> None:
    """What the catcher looks for: a command line of this namespace and image, no neighbour's."""
    ns = "t-0123abcd"
    export = f"rbd --id backurne export-diff --no-progress --pool=rbd --namespace={ns} --image=big --snap=s --path=- "
    assert re.search(export_pattern(ns, "big"), export)
    assert not re.search(export_pattern(ns, "bi"), export)
    assert not re.search(export_pattern(ns, "big"), export.replace(ns, f"{ns}-2"))
    importer = (
        f"rbd import-diff --rbd-cache=false --no-progress --path=- --pool=rbd --namespace={ns} --image=c;big;None "
    )
    assert re.search(import_pattern(ns, "c;big;None"), importer)
    assert not re.search(import_pattern(ns, "c;big;None"), importer.replace("None", "None2"))
