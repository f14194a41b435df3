#!/usr/bin/env python3
"""Verification: hashing a shared snapshot on both sides at once vs one side after the other.

One image (default 512 MiB, `--size-mib`) of the first MiBs of `tar c /usr` is imported on the live
cluster, snapshotted, and copied to the backup cluster through the product's transfer_snapshot()
(then checked byte-equal with an xxhsum of each side). Then, `--reps` times (default 5), the
order alternating:

  concurrent   the product's compare_snapshot() (module_utils/stream/checksum.py, what the checksum
               module runs): `ssh live "rbd export … | xxhsum"` and the local
               `rbd export … | xxhsum` started together, in two threads;
  sequential   the same two snapshot_checksum() calls, one after the other.

Printed: medians and the ratio sequential / concurrent (> 1: concurrency pays; 2.0 would be
perfect overlap). On a 2-core machine whose two "sides" share the cores, the overlap is bounded
by the CPU: each side is rbd export (librbd, messenger) + xxhsum, both CPU-bound here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchlib import POOL, REPO, BenchError, Lab, MiB, lab_up, log, machine_line, median, workdir

sys.path.insert(0, str(REPO / "collections"))
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.stream.checksum import compare_snapshot, snapshot_checksum
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, transfer_snapshot

SNAP = "bench-v1"
IMAGE, DEST = "v", "v-dst"


def runners(lab: Lab, tmp: Path) -> tuple[RbdRunner, RbdRunner]:
    return lab.product_runners(tmp / "cp")


def make_image(lab: Lab, namespace: str, size: int) -> None:
    log(f"importing the first {size // MiB} MiB of `tar c /usr` as {POOL}/{namespace}/{IMAGE}")
    tar = subprocess.Popen(["tar", "c", "/usr"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    head = subprocess.Popen(["head", "-c", str(size)], stdin=tar.stdout, stdout=subprocess.PIPE)
    assert tar.stdout is not None
    tar.stdout.close()
    lab.rbd("live", "import", "--no-progress", "-", f"{POOL}/{namespace}/{IMAGE}", stdin=head.stdout)
    head.wait()
    tar.kill()
    tar.wait()
    lab.rbd("live", "snap", "create", "--no-progress", f"{POOL}/{namespace}/{IMAGE}@{SNAP}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-lab-up", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.no_lab_up:
        lab_up()
    lab = Lab.load()
    namespace = lab.create_namespace("bench-verify")
    concurrent: list[float] = []
    sequential: list[float] = []
    sides: dict[str, list[float]] = {"live": [], "backup": []}
    try:
        with workdir("backurne-bench-verify") as tmp:
            live, backup = runners(lab, tmp)
            make_image(lab, namespace, args.size_mib * MiB)
            sent = transfer_snapshot(
                live, backup, POOL, namespace, IMAGE, SNAP, None, POOL, namespace, DEST, Compression(enabled=False)
            )
            if not sent.ok:
                raise BenchError(f"transfer failed: {sent.error}")
            expected = lab.checksum("live", f"{POOL}/{namespace}/{IMAGE}@{SNAP}")
            if lab.checksum("backup", f"{POOL}/{namespace}/{DEST}@{SNAP}") != expected:
                raise BenchError("the copy differs from the source")
            # Warm-up (ControlMaster, page cache of the OSDs' memstore): not timed.
            compare_snapshot(live, backup, f"{POOL}/{namespace}/{IMAGE}", f"{POOL}/{namespace}/{DEST}", SNAP)

            def both() -> None:
                result = compare_snapshot(
                    live, backup, f"{POOL}/{namespace}/{IMAGE}", f"{POOL}/{namespace}/{DEST}", SNAP
                )
                if not result.match:
                    raise BenchError(f"concurrent checksum mismatch: {result.error}")

            def one_then_other() -> None:
                started = time.monotonic()
                a = snapshot_checksum(live, POOL, namespace, IMAGE, SNAP)
                sides["live"].append(time.monotonic() - started)
                started = time.monotonic()
                b = snapshot_checksum(backup, POOL, namespace, DEST, SNAP)
                sides["backup"].append(time.monotonic() - started)
                if a != b:
                    raise BenchError(f"sequential checksum mismatch: {a} != {b}")

            for rep in range(args.reps):
                order = [(both, concurrent), (one_then_other, sequential)]
                for action, times in order if rep % 2 == 0 else reversed(order):
                    started = time.monotonic()
                    action()
                    times.append(time.monotonic() - started)
                log(f"rep {rep + 1}: concurrent {concurrent[-1]:.2f} s, sequential {sequential[-1]:.2f} s")
            ssh = live.ssh
            assert ssh is not None
            subprocess.run(ssh.exit_master_argv(), capture_output=True, timeout=30, check=False)
    finally:
        lab.purge_namespace(namespace)
    ratio = median(sequential) / median(concurrent)
    per_rep = sorted(s / c for s, c in zip(sequential, concurrent, strict=True))
    print(f"== verification: hash one shared snapshot on both sides ({machine_line()})")
    print(f"   {args.size_mib} MiB of `tar c /usr`, xxhsum over `rbd export`, {args.reps} reps alternated, medians")
    print(f"   concurrent (compare_snapshot)   {median(concurrent):6.2f} s")
    print(
        f"   sequential (live, then backup)  {median(sequential):6.2f} s"
        f"   (live side {median(sides['live']):.2f} s + backup side {median(sides['backup']):.2f} s)"
    )
    print(f"   sequential / concurrent = {ratio:.2f} (per rep {per_rep[0]:.2f}..{per_rep[-1]:.2f}; 2.0 = full overlap)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_line(),
                    "size_mib": args.size_mib,
                    "concurrent": concurrent,
                    "sequential": sequential,
                    "sides": sides,
                    "ratio": ratio,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)
