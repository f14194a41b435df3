#!/usr/bin/env python3
"""Restore speed: the product's restore_snapshot() vs the raw pipe, side by side in one run.

The first `--size-mib` (default 1024) of `tar c /usr` is imported on the backup cluster as a
backup image (`bench;disk;None`) with one backup snapshot. Each repetition restores that snapshot
as a new image on the live cluster twice:

  product  restore_snapshot() (module_utils/stream/restore.py, what the restore module and the
           CLI run): a clone of the snapshot, `rbd export-diff CLONE | zstd -1 -T0` on the backup
           node, relayed into `ssh live "zstd -d | rbd import-diff - TARGET"`, every stage checked,
           the clone removed; verify=False (the raw pipe hashes nothing either)
  raw      what an operator would type: `rbd export IMG@SNAP - | zstd -1 -T0 |
           ssh live "zstd -d | rbd import - TARGET"`, with the product's own ssh options
           (SshTarget.argv(): cipher from the lab inventory, ControlMaster); `rbd import` creates
           the target and leaves no snapshot on it, as the product does

The order alternates per repetition; after every restore the target is hashed on the live
cluster and compared with the data's checksum (a wrong copy aborts). Printed: medians and the
ratio raw_time / product_time (target >= 0.9: the product at least 90 % of the raw pipe's speed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (
    POOL,
    BenchError,
    GiB,
    Lab,
    MiB,
    lab_up,
    log,
    machine_line,
    median,
    run,
    run_pipeline,
    workdir,
)

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore import RestoreRequest, restore_snapshot
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, StreamOptions

BACKUP_IMAGE = "bench;disk;None"
SNAPSHOT = "backup;daily;7;2026-01-01T00:00:00.000000"
TARGET = 0.9


class RestoreBench:
    def __init__(self, lab: Lab, namespace: str, tmp: Path) -> None:
        self.lab = lab
        self.ns = namespace
        self.tmp = tmp
        self.cp_raw = tmp / "cp-raw"
        self.cp_raw.mkdir(mode=0o700)
        self.live, self.backup = lab.product_runners(tmp / "cp-product")
        assert self.live.ssh is not None
        self.raw_live = RbdRunner(
            self.live.access, ssh=dataclasses.replace(self.live.ssh, control_dir=str(self.cp_raw))
        )
        self.expected = ""

    def make_backup(self, size: int) -> None:
        data = self.tmp / "usr.tar"
        log(f"taking the first {size / GiB:g} GiB of `tar c /usr`")
        with data.open("wb") as out:
            tar = subprocess.Popen(["tar", "c", "/usr"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert tar.stdout is not None
            head = subprocess.run(["head", "-c", str(size)], stdin=tar.stdout, stdout=out, check=False)
            tar.stdout.close()
            tar.wait()
        if head.returncode != 0 or data.stat().st_size != size:
            raise BenchError(f"`tar c /usr | head -c {size}` gave {data.stat().st_size} bytes")
        self.expected = run(["xxhsum", str(data)]).split()[0]
        spec = f"{POOL}/{self.ns}/{BACKUP_IMAGE}"
        with data.open("rb") as stream:
            self.lab.rbd("backup", "import", "--no-progress", "-", spec, stdin=stream)
        data.unlink()
        self.lab.rbd("backup", "snap", "create", "--no-progress", f"{spec}@{SNAPSHOT}")
        got = self.lab.checksum("backup", f"{spec}@{SNAPSHOT}")
        if got != self.expected:
            raise BenchError(f"{spec}@{SNAPSHOT}: checksum {got} != {self.expected} of the data file")

    def warm_ssh(self) -> None:
        """Both ControlMasters up before anything is timed (a restore job reuses its master)."""
        for runner in (self.live, self.raw_live):
            assert runner.ssh is not None
            run(runner.ssh.argv("true"))

    def stop_ssh(self) -> None:
        for runner in (self.live, self.raw_live):
            assert runner.ssh is not None
            subprocess.run(
                runner.ssh.exit_master_argv(), stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
            )

    def product(self, target: str) -> float:
        started = time.monotonic()
        request = RestoreRequest(POOL, self.ns, BACKUP_IMAGE, SNAPSHOT, POOL, self.ns, target)
        stream = StreamOptions(compression=Compression(level=1, threads=0))
        result = restore_snapshot(self.backup, self.live, request, stream, verify=False)
        seconds = time.monotonic() - started
        if not result.ok:
            raise BenchError(f"product restore failed at {result.failed_stage}: {result.error}")
        return seconds

    def raw(self, target: str) -> float:
        importer = self.lab.rbd_argv("live", "import", "--no-progress", "-", f"{POOL}/{self.ns}/{target}")
        remote = "set -o pipefail; zstd -q -d -c | " + shlex.join(importer)
        source = f"{POOL}/{self.ns}/{BACKUP_IMAGE}@{SNAPSHOT}"
        assert self.raw_live.ssh is not None
        started = time.monotonic()
        run_pipeline(
            [
                self.lab.rbd_argv("backup", "export", "--no-progress", source, "-"),
                ["zstd", "-q", "-1", "-T0", "-c"],
                self.raw_live.ssh.argv(remote),
            ]
        )
        return time.monotonic() - started

    def check_and_remove(self, target: str) -> None:
        spec = f"{POOL}/{self.ns}/{target}"
        got = self.lab.checksum("live", spec)
        self.lab.rbd("live", "rm", "--no-progress", spec)
        if got != self.expected:
            raise BenchError(f"{spec}: checksum {got} != {self.expected}: a wrong restore")

    def measure(self, reps: int) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"product": [], "raw": []}
        for rep in range(reps):
            order = ("product", "raw") if rep % 2 == 0 else ("raw", "product")
            for who in order:
                target = f"restored-{who}-{rep}"
                seconds = self.product(target) if who == "product" else self.raw(target)
                self.check_and_remove(target)
                times[who].append(seconds)
                log(f"rep {rep + 1} {who}: {seconds:.2f} s")
        return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=4, help="repetitions (the order alternates)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--no-lab-up", action="store_true", help="do not run tests/lab/lab.sh up first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.reps < 1 or args.size_mib < 1:
        parser.error("--reps >= 1, --size-mib >= 1")
    if not args.no_lab_up:
        lab_up()
    lab = Lab.load()
    namespace = lab.create_namespace("bench-restore")
    bench: RestoreBench | None = None
    try:
        with workdir("backurne-bench-restore-") as tmp:
            bench = RestoreBench(lab, namespace, tmp)
            bench.make_backup(args.size_mib * MiB)
            bench.warm_ssh()
            times = bench.measure(args.reps)
            bench.stop_ssh()
            bench = None
    finally:
        if bench is not None:
            with contextlib.suppress(Exception):
                bench.stop_ssh()
        log(f"removing {POOL}/{namespace} on both clusters")
        lab.purge_namespace(namespace)
    product, raw = median(times["product"]), median(times["raw"])
    ratio = raw / product
    ratios = [r / p for p, r in zip(times["product"], times["raw"], strict=True)]
    print(f"== restore speed: product restore_snapshot() vs raw pipe ({machine_line()})")
    print(
        f"   {args.size_mib} MiB of `tar c /usr`, zstd -1 -T0, the product's ssh options on both, "
        f"{args.reps} reps, order alternated; medians"
    )
    print(
        f"   product {product:.2f} s ({args.size_mib / product:.0f} MiB/s), raw {raw:.2f} s: raw/product {ratio:.3f} "
        f"(median of ratios {median(ratios):.3f}; target >= {TARGET}: {'met' if ratio >= TARGET else 'MISSED'})"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine_line(), "size_mib": args.size_mib, "times": times, "ratio": ratio}, indent=2)
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"restore bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
