# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The per-image cost of a changed small image: the CLI pipeline vs the stream engine (#17).

For each N (--sizes, default 50,300), N images of 1 MiB with 4 KiB written are created on the
live cluster (python3-rbd in bulk) and snapshotted; then the product's transfer job
(TransferBatch, module_utils/stream/backup_job.py: placeholder, lock, HEAD guard, stream,
confirmation, exactly what the transfer module runs) pulls them, once with stream_engine=cli
and once with stream_engine=librbd, each into its own backup namespace, the order alternating
per N. Then 4 KiB of every image is rewritten, a second snapshot taken, and both pull the
incremental (the "daily" run). Printed: the batch's wall time per run and the slope per extra
image, (t(N_max) - t(N_min)) / (N_max - N_min), for first and daily runs, side by side.

What is NOT in these times: the other tasks of a playbook run (snapshot creation on live is
timed separately, in bulk, as the snapshot module does it: librbd in process; listings,
expiry, checksums). Every transferred snapshot is checked afterwards: all images' snapshot lists
on both backup namespaces, and the data of a sample by checksum against live.

The job runs under /usr/bin/python3 (python3-rbd, as on a backup node): this script re-runs
itself there with --worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import POOL, REPO, SYSTEM_PYTHON, BenchError, Lab, lab_up, log, machine_line

S1 = "backup;daily;7;2026-12-01T00:00:00"
S2 = "backup;daily;7;2026-12-02T00:00:00"
PREFIX = "img-"
ENGINES = ("cli", "librbd")
TARGET_MS = 100.0


def worker() -> None:
    """Run one TransferBatch (job JSON on stdin); print its timing and outcome as JSON."""
    from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
        CephAccess,
        RbdRunner,
        SshTarget,
    )
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.backup_job import (
        TransferBatch,
        TransferSettings,
    )
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import (
        Compression,
        StreamOptions,
    )

    job = json.load(sys.stdin)
    ssh = SshTarget(**job["ssh"])
    live = RbdRunner(CephAccess(**job["live"]), ssh, label="live node")
    backup = RbdRunner(CephAccess(**job["backup"]), label="backup node")
    settings = TransferSettings(
        pool=POOL,
        namespace=job["backup_ns"],
        source_pool=POOL,
        source_namespace=job["live_ns"],
        snap_prefix="backup",
        stream=StreamOptions(Compression(level=1, threads=0), 21600, 300),
        lock_ttl=timedelta(hours=1),
        workers=job["workers"],
        stream_engine=job["engine"],
    )
    listed = backup.list_images(POOL, job["backup_ns"])  # the run's listing (its own task in a playbook)
    plans = [
        {
            "image": name,
            "backup_image": name,
            "ok": True,
            "transfers": [{"from_snap": job["base"], "to_snap": job["snap"]}],
        }
        for name in job["images"]
    ]
    started = time.monotonic()
    output = TransferBatch(live, backup, settings, listed).run(plans)
    seconds = time.monotonic() - started
    images = output["images"]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "failed": [item for item in images if not item["ok"]][:5],
                "transferred": sum(1 for item in images if item["status"] == "transferred"),
                "by_engine": {e: sum(1 for item in images if item.get("engine") == e) for e in ("cli", "librbd")},
                "notes": sorted({item.get("note", "") for item in images if item.get("note")})[:3],
            }
        )
    )
    # The ssh ControlMaster of the CLI path: not left behind for ControlPersist.
    subprocess.run(ssh.exit_master_argv(), capture_output=True, timeout=30, check=False)


def floor_worker() -> None:
    """Time, one by one, what a changed small image costs (median of --reps), in ms; JSON out."""
    import statistics

    from ansible_collections.backurne.rbd.plugins.module_utils.ceph.lock import release, try_acquire
    from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
        CephAccess,
        ImageSpec,
        RbdRunner,
        SshTarget,
    )
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.engine import StreamEngine
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import export_words

    job = json.load(sys.stdin)
    ssh = SshTarget(**job["ssh"])
    live = RbdRunner(CephAccess(**job["live"]), ssh, label="live node")
    backup = RbdRunner(CephAccess(**job["backup"]), label="backup node")
    live_ns, backup_ns, reps = job["live_ns"], job["backup_ns"], job["reps"]
    src = ImageSpec(POOL, live_ns, f"{PREFIX}00000")
    timings: dict[str, float] = {}

    def timed(name: str, action: Any, setup: Any = None) -> None:
        samples = []
        for index in range(reps):
            if setup is not None:
                setup(index)
            started = time.monotonic()
            action(index)
            samples.append((time.monotonic() - started) * 1000)
        timings[name] = round(statistics.median(samples), 1)

    def quiet(argv: list[str]) -> None:
        subprocess.run(argv, capture_output=True, timeout=120, check=True)

    live.run(["info", *src.options()])  # warms the ControlMaster
    timed("ssh session, warm ControlMaster (`ssh true`)", lambda _i: quiet(live.command_argv(["true"])))
    timed("ssh + bash --norc (the CLI path's remote shell)", lambda _i: quiet(live.remote_shell_argv([["true"]])))
    timed("ssh + remote `rbd info` (process + cluster connect)", lambda _i: live.run(["info", *src.options()]))
    timed(
        "ssh + remote `rbd export-diff` 4 KiB | zstd (the CLI path's live side)",
        lambda _i: quiet(live.remote_shell_argv([export_words(live, src, S2, S1), ["zstd", "-q", "-1", "-c"]])),
    )
    timed("local `rbd --version` (process start only)", lambda _i: quiet(["rbd", "--version"]))
    timed(
        "local `rbd info` (process + cluster connect)",
        lambda _i: backup.run(["info", *ImageSpec(POOL, backup_ns, "d-0").options()]),
    )
    timed(
        "local `zstd -d` of an empty stream",
        lambda _i: subprocess.run(["zstd", "-q", "-d", "-c"], input=b"", capture_output=True, check=False),
    )
    names = [f"floor-{index}" for index in range(reps)]
    timed(
        "backup placeholder create, in process", lambda i: backup.create(ImageSpec(POOL, backup_ns, names[i]), 1 << 20)
    )
    lock_ttl = timedelta(hours=1)

    def lock_cycle(i: int) -> None:
        lock = try_acquire(backup, POOL, backup_ns, names[i], lock_ttl)
        release(backup, lock)  # type: ignore[arg-type]

    timed("backup lock take + release (cls_lock, in process)", lock_cycle)
    timed(
        "backup snapshot listing (omap, in process)",
        lambda i: backup.snapshot_names(ImageSpec(POOL, backup_ns, names[i])),
    )
    timed(
        "backup snapshot create (librbd, in process)",
        lambda i: backup.snap_create(ImageSpec(POOL, backup_ns, names[i], S1)),
    )
    engine = StreamEngine(live, backup, True, 300)
    try:
        engine.transfer(src, S1, None, ImageSpec(POOL, backup_ns, "d-0"), None, (None, 300))  # channel up
        timed(
            "engine: one 4 KiB incremental, request to end snapshot",
            lambda i: engine.transfer(src, S2, S1, ImageSpec(POOL, backup_ns, f"d-{i + 1}"), None, (None, 300)),
            setup=lambda i: engine_base(backup, engine, src, ImageSpec(POOL, backup_ns, f"d-{i + 1}")),
        )
    finally:
        engine.close()
    subprocess.run(ssh.exit_master_argv(), capture_output=True, timeout=30, check=False)
    print(json.dumps(timings))


def engine_base(backup: Any, engine: Any, src: Any, dest: Any) -> None:
    backup.create(dest, 1 << 20)
    engine.transfer(src, S1, None, dest, None, (None, 300))


def job_base(lab: Lab, name: str) -> dict[str, Any]:
    return {
        "ssh": {
            "host": lab.live_ip,
            "port": lab.ssh_port,
            "identity_file": str(lab.ssh_key),
            "known_hosts_file": str(lab.known_hosts),
            "control_dir": str(lab.lab_dir / f"cp-bench-engine-{name}"),
            "cipher": "aes128-gcm@openssh.com",
        },
        "live": {"ceph_client": "backurne", "keyring": str(lab.keyring("live")), "ceph_conf": str(lab.live_conf)},
        "backup": {"ceph_client": "backurne", "keyring": str(lab.keyring("backup")), "ceph_conf": str(lab.backup_conf)},
    }


def measure_floor(lab: Lab, reps: int) -> dict[str, float]:
    live_ns = lab.create_namespace("bench-floor")
    try:
        conf = ["--conf", str(lab.live_conf), "--namespace", live_ns, "--prefix", PREFIX, "--count", "1"]
        lab.bulk("create", *conf)
        lab.bulk("snap", *conf, "--snap", S1)
        lab.bulk("write", *conf, "--every", "1")
        lab.bulk("snap", *conf, "--snap", S2)
        lab.rbd("backup", "create", "--size", "1M", f"{POOL}/{live_ns}/d-0")
        job = {**job_base(lab, "floor"), "live_ns": live_ns, "backup_ns": live_ns, "reps": reps}
        env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
        cp = subprocess.run(
            [SYSTEM_PYTHON, __file__, "--floor-worker"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=3600,
            env=env,
            check=False,
        )
        if cp.returncode != 0:
            raise BenchError(f"floor worker exited {cp.returncode}: {cp.stderr[-3000:]}")
        return dict(json.loads(cp.stdout))
    finally:
        lab.purge_namespace(live_ns)


def run_job(
    lab: Lab, engine: str, live_ns: str, backup_ns: str, count: int, snap: str, base: str | None, workers: int
) -> dict[str, Any]:
    job = {
        "ssh": {
            "host": lab.live_ip,
            "port": lab.ssh_port,
            "identity_file": str(lab.ssh_key),
            "known_hosts_file": str(lab.known_hosts),
            "control_dir": str(lab.lab_dir / f"cp-bench-engine-{engine}"),
            "cipher": "aes128-gcm@openssh.com",
        },
        "live": {"ceph_client": "backurne", "keyring": str(lab.keyring("live")), "ceph_conf": str(lab.live_conf)},
        "backup": {"ceph_client": "backurne", "keyring": str(lab.keyring("backup")), "ceph_conf": str(lab.backup_conf)},
        "live_ns": live_ns,
        "backup_ns": backup_ns,
        "engine": engine,
        "workers": workers,
        "snap": snap,
        "base": base,
        "images": [f"{PREFIX}{index:05d}" for index in range(count)],
    }
    env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
    cp = subprocess.run(
        [SYSTEM_PYTHON, __file__, "--worker"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=7200,
        env=env,
        check=False,
    )
    if cp.returncode != 0:
        raise BenchError(f"worker ({engine}) exited {cp.returncode}: {cp.stderr[-3000:]}")
    found = json.loads(cp.stdout)
    if found["failed"] or found["transferred"] != count:
        raise BenchError(f"{engine}: {found['transferred']}/{count} transferred, failed: {found['failed']}")
    if engine == "librbd" and found["by_engine"]["librbd"] != count:
        raise BenchError(f"librbd: only {found['by_engine']['librbd']}/{count} through the engine: {found['notes']}")
    return found


def verify(lab: Lab, live_ns: str, backup_ns: dict[str, str], count: int) -> None:
    """Every image's snapshots on both backup namespaces, and a sample's data, against live."""
    for engine, namespace in backup_ns.items():
        listing = json.loads(
            subprocess.run(
                lab.rbd_argv(
                    "backup", "ls", "--long", "--format", "json", "--pool", POOL, "--namespace", namespace, admin=True
                ),
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            ).stdout
        )
        snaps: dict[str, list[str]] = {}
        for entry in listing:
            if entry.get("snapshot"):
                snaps.setdefault(entry["image"], []).append(entry["snapshot"])
        wrong = [name for name in (f"{PREFIX}{i:05d}" for i in range(count)) if snaps.get(name) != [S1, S2]]
        if wrong:
            raise BenchError(f"{engine}: {len(wrong)} images without exactly [{S1}, {S2}], e.g. {wrong[:3]}")
    for index in sorted({0, count // 2, count - 1}):
        name = f"{PREFIX}{index:05d}"
        for snap in (S1, S2):
            expected = lab.checksum("live", f"{POOL}/{live_ns}/{name}@{snap}")
            for engine, namespace in backup_ns.items():
                found = lab.checksum("backup", f"{POOL}/{namespace}/{name}@{snap}")
                if found != expected:
                    raise BenchError(f"{engine}: {name}@{snap} differs from live ({found} != {expected})")


def measure(lab: Lab, count: int, order: tuple[str, ...], workers: int) -> dict[str, Any]:
    live_ns = lab.create_namespace("bench-eng")
    backup_ns = {engine: lab.create_namespace(f"bench-eng-{engine}") for engine in ENGINES}
    try:
        log(f"N={count}: creating {count} images")
        lab.bulk(
            "create", "--conf", str(lab.live_conf), "--namespace", live_ns, "--prefix", PREFIX, "--count", str(count)
        )
        snap1 = lab.bulk(
            "snap",
            "--conf",
            str(lab.live_conf),
            "--namespace",
            live_ns,
            "--prefix",
            PREFIX,
            "--count",
            str(count),
            "--snap",
            S1,
        )
        times: dict[str, dict[str, float]] = {"first": {}, "daily": {}}
        for engine in order:
            log(f"N={count}: first run, {engine}")
            times["first"][engine] = run_job(lab, engine, live_ns, backup_ns[engine], count, S1, None, workers)[
                "seconds"
            ]
        lab.bulk(
            "write",
            "--conf",
            str(lab.live_conf),
            "--namespace",
            live_ns,
            "--prefix",
            PREFIX,
            "--count",
            str(count),
            "--every",
            "1",
        )
        snap2 = lab.bulk(
            "snap",
            "--conf",
            str(lab.live_conf),
            "--namespace",
            live_ns,
            "--prefix",
            PREFIX,
            "--count",
            str(count),
            "--snap",
            S2,
        )
        for engine in order:
            log(f"N={count}: daily run, {engine}")
            times["daily"][engine] = run_job(lab, engine, live_ns, backup_ns[engine], count, S2, S1, workers)["seconds"]
        verify(lab, live_ns, backup_ns, count)
        return {"count": count, "times": times, "snapshot_seconds": [snap1["seconds"], snap2["seconds"]]}
    finally:
        for namespace in (live_ns, *backup_ns.values()):
            try:
                lab.purge_namespace(namespace)
            except BenchError as exc:
                log(f"cleanup: {exc}")


def report(results: list[dict[str, Any]], workers: int) -> tuple[str, dict[str, Any]]:
    low, high = results[0], results[-1]
    span = high["count"] - low["count"]
    lines = [
        f"stream engine vs CLI pipeline, per changed small image (1 MiB, 4 KiB written), {workers} workers",
        machine_line(),
        "",
        "| run | engine | "
        + " | ".join(f"N={r['count']}" for r in results)
        + f" | per extra image | target <= {TARGET_MS:.0f} ms |",
        "|---|---|" + "---|" * len(results) + "---|---|",
    ]
    slopes: dict[str, dict[str, float]] = {}
    for kind in ("first", "daily"):
        for engine in ENGINES:
            slope = (high["times"][kind][engine] - low["times"][kind][engine]) / span * 1000
            slopes.setdefault(kind, {})[engine] = slope
            cells = " | ".join(f"{r['times'][kind][engine]:.1f} s" for r in results)
            verdict = "met" if slope <= TARGET_MS else "**missed**"
            lines.append(f"| {kind} | {engine} | {cells} | {slope:.0f} ms | {verdict} |")
    snap_ms = [(r["snapshot_seconds"][0] + r["snapshot_seconds"][1]) / 2 / r["count"] * 1000 for r in results]
    lines += [
        "",
        "cli/engine per-image ratio: "
        + ", ".join(
            f"{kind} {slopes[kind]['cli'] / slopes[kind]['librbd']:.1f}x"
            for kind in slopes
            if slopes[kind]["librbd"] > 0
        ),
        "live snapshot creation (librbd in process, 8 threads, not in the times above): "
        + ", ".join(f"{ms:.1f} ms/image at N={r['count']}" for ms, r in zip(snap_ms, results, strict=True)),
    ]
    return "\n".join(lines), {"results": results, "slopes_ms": slopes, "workers": workers}


def main() -> int:
    if "--worker" in sys.argv:
        worker()
        return 0
    if "--floor-worker" in sys.argv:
        floor_worker()
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,300", help="comma-separated N (at least two)")
    parser.add_argument("--workers", type=int, default=4, help="the transfer module's workers (playbook default 4)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-lab-up", action="store_true")
    parser.add_argument("--floor-reps", type=int, default=10, help="repetitions of each floor timing (0: skip)")
    parser.add_argument("--floor-only", action="store_true", help="only the part-by-part timing of one image")
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    if len(sizes) < 2:
        parser.error("--sizes needs at least two values")
    if not args.no_lab_up:
        lab_up()
    lab = Lab.load()
    if args.floor_only:
        floor = measure_floor(lab, args.floor_reps)
        print(machine_line())
        print("\n".join(f"- {name}: {ms:.1f} ms" for name, ms in floor.items()))
        return 0
    results = []
    for position, count in enumerate(sizes):
        order = ENGINES if position % 2 == 0 else tuple(reversed(ENGINES))
        results.append(measure(lab, count, order, args.workers))
    text, data = report(results, args.workers)
    if args.floor_reps > 0:
        log("timing the parts of one changed image")
        floor = measure_floor(lab, args.floor_reps)
        data["floor_ms"] = floor
        text += "\n\nwhat one changed small image costs, part by part (median of " + str(args.floor_reps) + "):\n"
        text += "\n".join(f"- {name}: {ms:.1f} ms" for name, ms in floor.items())
    print(text)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
