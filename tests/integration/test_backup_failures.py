"""backup.yml when things go wrong: a transfer killed mid-stream, a live cluster that cannot
be reached, two runs at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from playbook_helpers import (
    T_SNAPSHOT,
    T_TRANSFER,
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


class SshKiller(threading.Thread):
    """Kills (SIGKILL) the local ssh client streaming `rbd export-diff` of one image."""

    def __init__(self, ns: str, image: str, timeout: float = 180) -> None:
        super().__init__(daemon=True)
        self.pattern = f"export-diff.*--namespace={re.escape(ns)}.*--image={re.escape(image)}"
        self.timeout = timeout
        self.stop = threading.Event()
        self.killed: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            found = subprocess.run(["pgrep", "-f", self.pattern], capture_output=True, text=True, check=False)
            for pid in found.stdout.split():
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                # The ssh client on the backup node (not sshd, bash or rbd on the live node).
                if comm == "ssh" and "--path=-" in cmdline:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.killed.append(cmdline)
                    return
            time.sleep(0.01)


def test_transfer_killed_mid_stream(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "big"), 64, seed=200, admin=True)
    lab.write_image("live", spec(ns, "small"), 8, seed=201, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    name = cluster_name(inv)
    b_big, b_small = backup_image(name, "big"), backup_image(name, "small")
    s0 = snap_name("daily", 7, day(0))

    killer = SshKiller(ns, "big")
    killer.start()
    try:
        run = run_backup(inv, tmp_path, now=day(0))
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed, "the ssh streaming big's export-diff was never seen: nothing was killed"

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
    # No snapshot claims to hold the half-imported data.
    if b_big in images(lab, "backup", ns):
        assert snaps(lab, "backup", ns, b_big) == []
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
        assert list(inv["all"]["children"]["live_clusters"]["hosts"]) == ["lab-live", "lab-live-broken", "lab-live-third"]
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

    statuses = []
    for run in runs:
        assert run.stats is not None, run.describe()
        # A run may find an image locked by the other and skip it; nothing may be corrupt.
        text = run.failure_text().lower()
        assert "corrupt" not in text and "import-diff" not in text, run.describe()
        for item in run.result(T_TRANSFER)["images"] if run.results(T_TRANSFER) else []:
            statuses.append(item["status"])
    assert set(statuses) <= {"transferred", "up-to-date", "locked"}, statuses
    for img in names:
        bimg = backup_image(name, img)
        on_backup = ours(snaps(lab, "backup", ns, bimg))
        assert on_backup == [s0], (img, on_backup)
        sent = [
            snap
            for run in runs
            if run.results(T_TRANSFER)
            for item in run.result(T_TRANSFER)["images"]
            if item["image"] == img
            for snap in item["snapshots"]
        ]
        assert sorted(sent) == on_backup, f"{img}: transferred {sent}, on backup {on_backup}"
        assert_same_data(lab, ns, img, bimg, [s0])
    for run in runs:
        assert run.rc == 0, f"a concurrent run failed:\n{run.failure_text()}\n{run.describe()}"

    # Nothing is left locked: the next run goes on incrementally for every image.
    s1 = snap_name("daily", 7, day(1))
    run = assert_ok(run_backup(inv, tmp_path / "run3", now=day(1)))
    for img in names:
        sent = run.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "incremental", s0, [s1])
        assert_same_data(lab, ns, img, backup_image(name, img), [s0, s1])
