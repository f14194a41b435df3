# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The core I/O (rbd runner, transfer pipeline, checksum) against the real two-cluster lab:
# the backup side runs here with the backup conf, the live side over ssh, as in production,
# with the restricted `client.backurne` on both sides.
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
    CephAccess,
    ImageSpec,
    RbdError,
    RbdRunner,
    SshTarget,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import compare_snapshot, snapshot_checksum
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, transfer_snapshot

POOL = "rbd"
SNAP1 = "backup;daily;30;2026-11-29T10:00:00"
SNAP2 = "backup;daily;30;2026-11-30T10:00:00"


@pytest.fixture(scope="module")
def ssh_target(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTarget]:
    target = SshTarget(
        lab.live_ip,
        port=lab.port,
        identity_file=str(lab.ssh_key),
        known_hosts_file=str(lab.known_hosts),
        control_dir=str(tmp_path_factory.mktemp("cp")),
    )
    yield target
    # Do not leave the ControlMaster behind for ControlPersist seconds.
    subprocess.run(target.exit_master_argv(), capture_output=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def live(lab: Any, ssh_target: SshTarget) -> RbdRunner:
    access = CephAccess(ceph_client="backurne", keyring=str(lab.keyring("live")), ceph_conf=str(lab.live_conf))
    return RbdRunner(access, ssh_target, label=f"live node {lab.live_ip}")


@pytest.fixture(scope="module")
def backup(lab: Any) -> RbdRunner:
    access = CephAccess(ceph_client="backurne", keyring=str(lab.keyring("backup")), ceph_conf=str(lab.backup_conf))
    return RbdRunner(access, label="backup node (local)")


def spec(ns: str, image: str, snap: str | None = None) -> str:
    return f"{POOL}/{ns}/{image}" + (f"@{snap}" if snap else "")


def make_live_image(lab: Any, live: RbdRunner, ns: str, image: str, size_mb: int, seed: int, *snaps: str) -> None:
    lab.write_image("live", spec(ns, image), size_mb, seed)
    for snap in snaps:
        live.snap_create(ImageSpec(POOL, ns, image, snap))


def pull(
    live: RbdRunner, backup: RbdRunner, ns: str, image: str, dest: str, snap: str, base: str | None, **kwargs: Any
) -> Any:
    return transfer_snapshot(live, backup, POOL, ns, image, snap, base, POOL, ns, dest, **kwargs)


def assert_same(lab: Any, ns: str, image: str, dest: str, snap: str) -> str:
    live_sum = lab.checksum("live", spec(ns, image, snap))
    assert lab.checksum("backup", spec(ns, dest, snap)) == live_sum
    return live_sum


def backup_snaps(backup: RbdRunner, ns: str, dest: str) -> list[str] | None:
    return backup.list_images(POOL, ns).get(dest)


@pytest.mark.parametrize(("full_compressed", "incremental_compressed"), [(True, False), (False, True)])
def test_full_then_incremental(
    lab: Any, live: RbdRunner, backup: RbdRunner, ns: str, full_compressed: bool, incremental_compressed: bool
) -> None:
    make_live_image(lab, live, ns, "vm-1-disk-0", 16, 1, SNAP1)
    full = pull(
        live, backup, ns, "vm-1-disk-0", "c;vm-1-disk-0;None", SNAP1, None, compression=Compression(full_compressed)
    )
    assert full.ok, full
    assert (full.kind, full.base, full.failed_stage) == ("full", None, None)
    assert full.bytes_logical > 16 << 20  # the diff: data plus record headers
    assert full.bytes_wire > 0 and full.duration > 0
    assert_same(lab, ns, "vm-1-disk-0", "c;vm-1-disk-0;None", SNAP1)

    lab.overwrite("live", spec(ns, "vm-1-disk-0"), 0.1, seed=2)
    live.snap_create(ImageSpec(POOL, ns, "vm-1-disk-0", SNAP2))
    incr = pull(
        live,
        backup,
        ns,
        "vm-1-disk-0",
        "c;vm-1-disk-0;None",
        SNAP2,
        SNAP1,
        compression=Compression(incremental_compressed),
    )
    assert incr.ok, incr
    assert incr.kind == "incremental"
    assert incr.bytes_logical < full.bytes_logical
    assert_same(lab, ns, "vm-1-disk-0", "c;vm-1-disk-0;None", SNAP2)
    assert_same(lab, ns, "vm-1-disk-0", "c;vm-1-disk-0;None", SNAP1)
    assert backup_snaps(backup, ns, "c;vm-1-disk-0;None") == [SNAP1, SNAP2]


def test_hostile_names(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    token = uuid.uuid4().hex[:8]
    marker = f"pwned-{token}"
    # No '/' is possible in an rbd name: the injected commands `cd` home and write there.
    names = [
        "a b",
        "it's",
        "x;cd;touch " + marker + "-semi",
        "$(cd;touch " + marker + "-dollar)",
        "`cd;touch " + marker + "-tick`",
        "-leading",
        '"dq" && cd && touch ' + marker + "-and",
    ]
    hostile_snap = f"-s $(cd;touch {marker}-snap) `id`;'q'"
    for index, name in enumerate(names):
        make_live_image(lab, live, ns, name, 8, 10 + index, hostile_snap)
        dest = f"lab;{name};None"
        result = pull(live, backup, ns, name, dest, hostile_snap, None)
        assert result.ok, result
        assert_same(lab, ns, name, dest, hostile_snap)
    assert live.list_images(POOL, ns) == {name: [hostile_snap] for name in names}
    assert backup.list_images(POOL, ns) == {f"lab;{name};None": [hostile_snap] for name in names}
    for where in {Path.home(), Path.cwd(), Path("/root"), Path("/")}:
        assert not list(where.glob(f"{marker}*")), f"a hostile name executed something in {where}"


def test_leading_dash_through_runner_methods(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    image = ImageSpec(POOL, ns, "-rf")
    backup.create(image, 4 << 20)
    assert backup.exists(image) and not backup.exists(image.at("-s"))
    backup.snap_create(image.at("-s"))
    assert backup.exists(image.at("-s"))
    backup.resize(image, 8 << 20)
    assert backup.image_info(image)["size"] == 8 << 20
    backup.snap_remove(image.at("-s"))
    backup.remove(image)
    assert not backup.exists(image)


def _ssh_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if fields[1] == me and argv[0] == b"ssh" and b"export-diff" in b" ".join(argv):
            found.append(int(entry))
    return found


@pytest.mark.parametrize("full", [True, False])
def test_ssh_killed_mid_stream(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str, full: bool) -> None:
    make_live_image(lab, live, ns, "big", 32, 3, SNAP1)
    if not full:
        assert pull(live, backup, ns, "big", "dest", SNAP1, None).ok
        lab.overwrite("live", spec(ns, "big"), 0.5, seed=4)
        live.snap_create(ImageSpec(POOL, ns, "big", SNAP2))
    killed: list[int] = []

    def kill_ssh(count: int) -> None:
        if not killed:
            for pid in _ssh_children():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    snap, base = (SNAP1, None) if full else (SNAP2, SNAP1)
    result = pull(live, backup, ns, "big", "dest", snap, base, compression=Compression(False), progress=kill_ssh)
    assert killed
    assert not result.ok
    assert result.failed_stage == "ssh", result
    assert "SIGKILL" in (result.error or "")
    if full:
        # The placeholder this transfer created is removed again: no image, no history.
        assert backup_snaps(backup, ns, "dest") is None
    else:
        assert backup_snaps(backup, ns, "dest") == [SNAP1]
        assert_same(lab, ns, "big", "dest", SNAP1)


def test_tiny_timeout(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    make_live_image(lab, live, ns, "img", 32, 5, SNAP1)
    result = pull(live, backup, ns, "img", "dest", SNAP1, None, timeout=0.2)
    assert (result.ok, result.failed_stage) == (False, "ssh")
    assert "timed out after 0.2 s" in (result.error or "")
    assert result.duration < 10
    assert backup_snaps(backup, ns, "dest") is None


def test_export_fails_missing_base(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    make_live_image(lab, live, ns, "img", 8, 6, SNAP1)
    assert pull(live, backup, ns, "img", "dest", SNAP1, None).ok
    live.snap_create(ImageSpec(POOL, ns, "img", SNAP2))
    # export-diff writes its header, then fails: the truncated stream must not become SNAP2.
    result = pull(live, backup, ns, "img", "dest", SNAP2, "backup;daily;30;2000-01-01T00:00:00")
    assert (result.ok, result.failed_stage) == (False, "export"), result
    assert "(2) No such file or directory" in (result.error or "")
    assert backup_snaps(backup, ns, "dest") == [SNAP1]


def test_import_fails_destination_lacks_base(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    make_live_image(lab, live, ns, "img", 8, 7, SNAP1, SNAP2)
    backup.create(ImageSpec(POOL, ns, "dest"), 1 << 20)
    result = pull(live, backup, ns, "img", "dest", SNAP2, SNAP1)
    assert (result.ok, result.failed_stage) == (False, "import"), result
    assert "does not exist" in (result.error or "") or "(22)" in (result.error or "")
    assert backup_snaps(backup, ns, "dest") == []


def test_emptied_destination_full_keeps_old_snapshots(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    make_live_image(lab, live, ns, "img", 16, 8, SNAP1)
    assert pull(live, backup, ns, "img", "dest", SNAP1, None).ok
    old_sum = lab.checksum("backup", spec(ns, "dest", SNAP1))
    # The live image is recreated (no common snapshot any more) with data only in its first
    # 4 MiB: a full diff carries nothing for the rest, where the old HEAD had data.
    lab.rbd("live", "snap", "purge", "--no-progress", spec(ns, "img"))
    lab.rbd("live", "rm", "--no-progress", spec(ns, "img"))
    lab.write_image("live", spec(ns, "img"), 4, seed=9)
    lab.rbd("live", "resize", "--no-progress", "--size", "16M", spec(ns, "img"))
    live.snap_create(ImageSpec(POOL, ns, "img", SNAP2))
    result = pull(live, backup, ns, "img", "dest", SNAP2, None)
    assert result.ok, result
    assert any("HEAD emptied" in note for note in result.notes)
    assert_same(lab, ns, "img", "dest", SNAP2)
    assert backup_snaps(backup, ns, "dest") == [SNAP1, SNAP2]
    assert lab.checksum("backup", spec(ns, "dest", SNAP1)) == old_sum


def test_checksum_compare_runs_both_sides_concurrently(
    lab: Any, live: RbdRunner, backup: RbdRunner, ns: str, tmp_path: Path
) -> None:
    make_live_image(lab, live, ns, "img", 16, 11, SNAP1)
    assert pull(live, backup, ns, "img", "c;img;None", SNAP1, None).ok
    log = tmp_path / "hash.log"
    # A hasher that notes when it starts and ends (both "nodes" share this filesystem), and
    # before hashing waits (up to 30 s) for the other side to start: run one after the other, the
    # first ends before the second starts and the order below fails; run together, a slow ssh
    # start on a loaded machine cannot make it fail (a fixed `sleep 1` could).
    quoted = shlex.quote(str(log))
    script = (
        f"echo start $(date +%s.%N) >> {quoted}; "
        f'for _ in $(seq 300); do [ "$(grep -c ^start {quoted})" -ge 2 ] && break; sleep 0.1; done; '
        f"xxhsum; rc=$?; echo end $(date +%s.%N) >> {quoted}; exit $rc"
    )
    hasher = ("bash", "-c", script)
    result = compare_snapshot(
        live, backup, ImageSpec(POOL, ns, "img"), ImageSpec(POOL, ns, "c;img;None"), SNAP1, hasher
    )
    assert result.match and result.error is None, result
    assert result.live == lab.checksum("live", spec(ns, "img", SNAP1))
    events = sorted((float(stamp), kind) for kind, stamp in (line.split() for line in log.read_text().splitlines()))
    assert [kind for _, kind in events] == ["start", "start", "end", "end"], events


def test_checksum_mismatch_and_errors(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    make_live_image(lab, live, ns, "img", 8, 12, SNAP1)
    lab.write_image("backup", spec(ns, "other"), 8, seed=13)
    backup.snap_create(ImageSpec(POOL, ns, "other", SNAP1))
    differ = compare_snapshot(live, backup, f"{POOL}/{ns}/img", f"{POOL}/{ns}/other", SNAP1)
    assert not differ.match and differ.live and differ.backup
    assert "checksums differ" in (differ.error or "")
    missing = compare_snapshot(live, backup, f"{POOL}/{ns}/img", f"{POOL}/{ns}/nothing", SNAP1)
    assert not missing.match and missing.live and missing.backup is None
    assert "backup:" in (missing.error or "")
    # pipefail: a failed export is an error, not the hash of an empty stream.
    with pytest.raises(RbdError) as info:
        snapshot_checksum(live, POOL, ns, "img", "no-such-snap")
    assert f"on live node {lab.live_ip}" in str(info.value)


def test_runner_errors_name_the_object_and_node(lab: Any, live: RbdRunner, ns: str) -> None:
    with pytest.raises(RbdError) as info:
        live.snap_create(ImageSpec(POOL, ns, "missing", "s"))
    message = str(info.value)
    assert message.startswith(f"rbd snap create {POOL}/{ns}/missing@s on live node {lab.live_ip}: ")
    assert "(2) No such file or directory" in message and "\n" not in message
    assert "AQ" not in message  # no key material (cephx keys start with AQ)


def test_ssh_failure_is_reported_as_ssh(lab: Any, backup: RbdRunner, ns: str, tmp_path: Path) -> None:
    # A host key that is not in known_hosts: strict checking refuses, rc 255.
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    target = SshTarget(
        lab.live_ip,
        port=lab.port,
        identity_file=str(lab.ssh_key),
        known_hosts_file=str(empty_known_hosts),
        control_master=False,
    )
    stranger = RbdRunner(CephAccess(ceph_client="backurne"), target, label="live node")
    with pytest.raises(RbdError, match=r"ssh: .*[Hh]ost key verification failed"):
        stranger.list_images(POOL, ns)
    result = transfer_snapshot(stranger, backup, POOL, ns, "x", "s", "b", POOL, ns, "x")
    assert result.failed_stage == "ssh" and "Host key verification failed" in (result.error or "")


def test_parallel_transfers(lab: Any, live: RbdRunner, backup: RbdRunner, ns: str) -> None:
    from ansible_collections.backurne.rbd.plugins.module_utils.module_base.batch import run_batch

    names = [f"disk-{index}" for index in range(4)]
    for index, name in enumerate(names):
        make_live_image(lab, live, ns, name, 8, 20 + index, SNAP1)
    started = time.monotonic()
    results = run_batch(names, lambda name: pull(live, backup, ns, name, f"c;{name};None", SNAP1, None), workers=4)
    assert [result.ok for result in results] == [True] * 4, results
    assert [result.image for result in results] == [f"{POOL}/{ns}/{name}" for name in names]
    assert time.monotonic() - started < 60
    for name in names:
        assert_same(lab, ns, name, f"c;{name};None", SNAP1)
