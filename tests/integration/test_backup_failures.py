"""backup.yml when things go wrong: a transfer killed mid-stream, a live cluster that cannot
be reached, two runs at once.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from playbook_helpers import (
    T_RETENTION_BACKUP,
    T_RETENTION_LIVE,
    T_SNAPSHOT,
    T_TRANSFER,
    MiB,
    assert_ok,
    assert_same_data,
    backup_image,
    cluster_name,
    day,
    finish_backup,
    images,
    make_inventory,
    ours,
    run_backup,
    snap_name,
    snaps,
    spec,
    start_backup,
    state,
)


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def _proc(pid: int, what: str) -> str:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class SshKiller(threading.Thread):
    """Kills (SIGKILL) the ssh client streaming `rbd export-diff` of one image into the backup
    cluster, once `rbd import-diff` on the backup node has read ``after_bytes`` of the stream."""

    def __init__(self, ns: str, image: str, backup_image: str, after_bytes: int, timeout: float = 180) -> None:
        super().__init__(daemon=True)
        self.export = f"export-diff.*--namespace={re.escape(ns)}.*--image={re.escape(image)} "
        self.importer = f"import-diff.*--namespace={re.escape(ns)}.*--image={re.escape(backup_image)}$"
        self.after_bytes = after_bytes
        self.timeout = timeout
        self.stop = threading.Event()
        self.killed: list[str] = []
        self.imported_before_kill = 0

    def _imported(self) -> int:
        best = 0
        for pid in _pids(self.importer):
            if _proc(pid, "comm").strip() != "rbd":
                continue
            for line in _proc(pid, "io").splitlines():
                if line.startswith("rchar:"):
                    best = max(best, int(line.split()[1]))
        return best

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            imported = self._imported()
            if imported >= self.after_bytes:
                for pid in _pids(self.export):
                    # The ssh client on the backup node (not sshd, bash or rbd on the live node).
                    if _proc(pid, "comm").strip() != "ssh":
                        continue
                    cmdline = _proc(pid, "cmdline")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.killed.append(cmdline)
                    self.imported_before_kill = imported
                    return
            time.sleep(0.01)


def test_transfer_killed_mid_stream(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "big"), 64, seed=200, admin=True)
    lab.write_image("live", spec(ns, "small"), 8, seed=201, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    name = cluster_name(inv)
    b_big, b_small = backup_image(name, "big"), backup_image(name, "small")
    s0 = snap_name("daily", 7, day(0))

    killer = SshKiller(ns, "big", b_big, after_bytes=8 * MiB)
    killer.start()
    try:
        run = run_backup(inv, tmp_path, now=day(0))
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed, "the ssh streaming big's export-diff was never caught mid-stream: nothing was killed"
    assert killer.imported_before_kill < 64 * MiB
    print(f"killed after {killer.imported_before_kill} bytes imported: {killer.killed[0]}")

    assert run.rc != 0, "a failed image must fail the run"
    assert "big" in run.failure_text(), run.failure_text()
    assert "small" not in run.failure_text(), run.failure_text()
    failed = run.image(T_TRANSFER, "big")
    assert failed["status"] == "failed" and failed["ok"] is False, failed
    assert "'big'" in failed["error"] and s0 in failed["error"], failed
    assert [i["image"] for i in run.result(T_TRANSFER)["failed_images"]] == ["big"]
    sent = run.image(T_TRANSFER, "small")
    assert (sent["status"], sent["kind"], sent["snapshots"]) == ("transferred", "full", [s0]), sent
    assert snaps(lab, "backup", ns, b_small) == [s0]
    assert_same_data(lab, ns, "small", b_small, [s0])
    # No snapshot claims to hold half-imported data.
    if b_big in images(lab, "backup", ns):
        assert snaps(lab, "backup", ns, b_big) == [], "a snapshot was created from a truncated stream"
    assert snaps(lab, "live", ns, "big") == [s0]

    # The next run converges by itself: the pending snapshot is sent, no new one is taken.
    later = day(0, minutes=60)
    run = assert_ok(run_backup(inv, tmp_path, now=later))
    plan = run.image(T_SNAPSHOT, "big")
    assert plan["new_snapshots"] == [] and plan["transfers"] == [{"from_snap": None, "to_snap": s0}], plan
    sent = run.image(T_TRANSFER, "big")
    assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "full", None, [s0]), sent
    assert run.image(T_TRANSFER, "small")["status"] == "up-to-date"
    assert state(lab, "backup", ns) == {b_big: [s0], b_small: [s0]}
    assert snaps(lab, "live", ns, "big") == [s0]
    assert_same_data(lab, ns, "big", b_big, [s0])


def test_transfer_failing_before_any_data_converges(lab, ns, tmp_path: Path) -> None:
    """The live node's sshd cannot be reached from the backup node: nothing is streamed at all."""
    lab.write_image("live", spec(ns, "early"), 8, seed=205, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    bimg = backup_image(cluster_name(inv), "early")
    s0 = snap_name("daily", 7, day(0))
    unreachable = copy.deepcopy(inv)
    unreachable["all"]["children"]["backup_nodes"]["hosts"]["lab-backup"]["backurne_backup"]["ssh"]["port"] = 1

    run = run_backup(unreachable, tmp_path, now=day(0))
    assert run.rc != 0
    failed = run.image(T_TRANSFER, "early")
    assert failed["status"] == "failed" and "'early'" in failed["error"], failed
    assert "ssh" in failed["error"], failed
    assert snaps(lab, "live", ns, "early") == [s0]
    if bimg in images(lab, "backup", ns):
        assert snaps(lab, "backup", ns, bimg) == []

    run = run_backup(inv, tmp_path, now=day(0, minutes=60))
    assert run.rc == 0, f"the retry did not converge:\n{run.failure_text()}"
    sent = run.image(T_TRANSFER, "early")
    assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "full", None, [s0]), sent
    assert snaps(lab, "backup", ns, bimg) == [s0]
    assert_same_data(lab, ns, "early", bimg, [s0])


def _broken_conf(lab, directory: Path) -> Path:
    text = lab.live_conf.read_text()
    text = re.sub(r"(?m)^mon_host = .*$", "mon_host = 127.0.0.99", text)
    text = re.sub(r"(?m)^client_mount_timeout = .*$", "client_mount_timeout = 5\nrados_mon_op_timeout = 5", text)
    assert "127.0.0.99" in text and "rados_mon_op_timeout = 5" in text
    path = directory / "broken-live.conf"
    path.write_text(text)
    return path


def test_unreachable_live_cluster_does_not_stop_the_others(lab, ns, tmp_path: Path) -> None:
    ns2 = f"{ns}-2"
    lab.rbd("live", "namespace", "create", f"rbd/{ns2}", admin=True)
    try:
        lab.write_image("live", spec(ns, "one"), 8, seed=210, admin=True)
        lab.write_image("live", spec(ns2, "two"), 8, seed=211, admin=True)
        base = make_inventory(lab, ns)
        first = cluster_name(base)
        broken, third = f"{first}b", f"{first}c"
        live_vars = base["all"]["children"]["live_clusters"]["hosts"]["lab-live"]

        def live_host(cluster: str, namespace: str, conf: str) -> dict:
            host = {key: value for key, value in live_vars.items() if key != "backurne_live"}
            host["backurne_live"] = {
                **live_vars["backurne_live"],
                "name": cluster,
                "namespace": namespace,
                "ceph": {**live_vars["backurne_live"]["ceph"], "ceph_conf": conf},
            }
            return host

        inv = make_inventory(
            lab,
            ns,
            name=first,
            profiles={"daily": {"count": 7}},
            extra_live_clusters={
                "lab-live-broken": live_host(broken, ns, str(_broken_conf(lab, tmp_path))),
                "lab-live-third": live_host(third, ns2, str(lab.live_conf)),
            },
        )
        assert list(inv["all"]["children"]["live_clusters"]["hosts"]) == [
            "lab-live",
            "lab-live-broken",
            "lab-live-third",
        ]
        s0 = snap_name("daily", 7, day(0))

        run = run_backup(inv, tmp_path, now=day(0), timeout=240)
        assert run.rc != 0, "the run must fail when a live cluster could not be backed up"
        final = [e for e in run.failed_events() if e.task == "Fail the run if a live cluster could not be backed up"]
        assert len(final) == 1, run.describe()
        message = final[0].result["msg"]
        assert broken in message, message
        assert not re.search(rf"\b({re.escape(first)}|{re.escape(third)})\b", message), message
        assert run.duration < 150, f"an unreachable cluster made the run take {run.duration:.0f} s"
        # Both reachable clusters were backed up, before and after the broken one.
        assert state(lab, "backup", ns) == {backup_image(first, "one"): [s0], backup_image(third, "two"): [s0]}
        assert_same_data(lab, ns, "one", backup_image(first, "one"), [s0])
        assert lab.checksum("live", f"rbd/{ns2}/two@{s0}", admin=True) == lab.checksum(
            "backup", spec(ns, backup_image(third, "two"), s0), admin=True
        )
    finally:
        lab.purge_namespace("live", ns2)


def test_two_concurrent_runs(lab, ns, tmp_path: Path) -> None:
    names = ("p", "q", "r")
    for index, img in enumerate(names):
        lab.write_image("live", spec(ns, img), 16, seed=220 + index, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
    name = cluster_name(inv)
    s0 = snap_name("daily", 7, day(0))

    started = [start_backup(inv, tmp_path / f"run{i}", now=day(0)) for i in (1, 2)]
    runs = [finish_backup(proc, info) for proc, info in started]

    for run in runs:
        assert run.stats is not None and run.results(T_TRANSFER), run.describe()
        # With the same injected "now" both runs name the same snapshot: the one that comes
        # second may find it already taken by the other (an artifact of the injected clock).
        # Nothing else may fail: an image the other run is writing is skipped as "locked".
        snap_errors = [item["error"] for item in run.result(T_SNAPSHOT)["failed_images"]]
        assert all("(17) File exists" in error for error in snap_errors), snap_errors
        transfer = run.result(T_TRANSFER)
        assert transfer["failed_images"] == [], f"concurrent run: {transfer['failed_images']}"
        assert {item["status"] for item in transfer["images"]} <= {"transferred", "up-to-date", "locked"}
        for task in (T_RETENTION_LIVE, T_RETENTION_BACKUP):
            assert run.result(task)["failed_images"] == [], (task, run.result(task)["failed_images"])
        if run.rc != 0:
            assert snap_errors, f"a concurrent run failed:\n{run.failure_text()}"
    for img in names:
        bimg = backup_image(name, img)
        on_backup = ours(snaps(lab, "backup", ns, bimg))
        assert on_backup == [s0], (img, on_backup)
        sent = [
            snap
            for run in runs
            for item in run.result(T_TRANSFER)["images"]
            if item["image"] == img
            for snap in item["snapshots"]
        ]
        assert sorted(sent) == on_backup, f"{img}: transferred {sent}, on backup {on_backup}"
        assert snaps(lab, "live", ns, img) == [s0]
        assert_same_data(lab, ns, img, bimg, [s0])

    # Nothing is left locked: the next run goes on incrementally for every image.
    s1 = snap_name("daily", 7, day(1))
    run = assert_ok(run_backup(inv, tmp_path / "run3", now=day(1)))
    for img in names:
        sent = run.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == (
            "transferred",
            "incremental",
            s0,
            [s1],
        )
        assert_same_data(lab, ns, img, backup_image(name, img), [s0, s1])
