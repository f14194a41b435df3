#!/usr/bin/env python3
"""Transfer efficiency: the product's data path vs the raw shell pipe, side by side in one run.

Two identical 1 GiB images of compressible real data (the first GiB of `tar c /usr`), A and B,
with identical snapshots, on the live cluster. A goes through the product's
`transfer_snapshot()` (module_utils/stream/transfer.py: ssh export-diff | zstd, relayed through Python
threads into zstd -d and rbd import-diff, every stage checked); B through the raw pipe

    rbd create DEST
    ssh -c aes128-gcm@openssh.com … "rbd export-diff … - | zstd -1 -T0" | zstd -d | rbd import-diff - DEST

run by subprocess with the same ssh options: the raw pipe's ssh command line is the product's own
(`SshTarget.argv()`, cipher from the lab inventory's `backurne_backup.ssh.cipher`), with a
ControlMaster of its own (one warm master each).
Cases: full with zstd -1 -T0, full without compression, incremental after rewriting 10 % of both
images identically (same offsets, same bytes: one hand-made diff stream fed to both), with and
without compression. The order alternates (product first / raw first) across repetitions;
medians are reported, with the ratio raw_time / product_time (target >= 0.95). Every transfer is
followed by a checksum of the destination snapshot against the source's: a wrong copy aborts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import resource
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchlib import (
    POOL,
    REPO,
    BenchError,
    GiB,
    Lab,
    MiB,
    lab_ssh_cipher,
    lab_up,
    log,
    machine_line,
    median,
    run,
    run_pipeline,
    workdir,
)

sys.path.insert(0, str(REPO / "collections"))
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import SshTarget
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, transfer_snapshot

CIPHER = lab_ssh_cipher()
OBJECT = 4 * MiB
TARGET = 0.95
SRC_PRODUCT, SRC_RAW = "a", "b"
DST_PRODUCT, DST_RAW = "a-dst", "b-dst"
S1, S2 = "bench-s1", "bench-s2"


@dataclass(frozen=True)
class Case:
    name: str
    compress: bool
    incremental: bool


CASES = (
    Case("full, zstd -1 -T0", compress=True, incremental=False),
    Case("full, no compression", compress=False, incremental=False),
    Case("incremental 10 %, zstd -1 -T0", compress=True, incremental=True),
    Case("incremental 10 %, no compression", compress=False, incremental=True),
)


@dataclass(frozen=True)
class Timing:
    """One transfer: wall time, and the CPU time spent on this (backup) node: by the processes
    it started (rbd create, ssh client, zstd -d, rbd import-diff) and by this Python process
    itself (the product's relay threads; ~0 for the raw pipe)."""

    wall: float
    cpu_children: float
    cpu_self: float
    bytes_wire: int = 0
    bytes_logical: int = 0


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """Yields a list that receives [wall, cpu of waited-for children, cpu of this process]."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out: list[float] = []
    yield out
    wall = time.monotonic() - started
    own2, children2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out += [
        wall,
        children2.ru_utime + children2.ru_stime - children.ru_utime - children.ru_stime,
        own2.ru_utime + own2.ru_stime - own.ru_utime - own.ru_stime,
    ]


@dataclass
class Sample:
    case: str
    rep: int
    first: str
    product: float
    raw: float
    bytes_wire: int
    bytes_logical: int
    product_cpu_children: float
    product_cpu_self: float
    raw_cpu: float

    @property
    def ratio(self) -> float:
        return self.raw / self.product


@dataclass
class Summary:
    case: str
    product_median: float
    raw_median: float
    ratio_of_medians: float
    median_ratio: float
    met: bool
    bytes_wire: int
    bytes_logical: int
    product_cpu_children: float
    product_cpu_self: float
    raw_cpu: float
    samples: list[dict[str, object]] = field(default_factory=list)


class Bench:
    def __init__(self, lab: Lab, namespace: str, tmp: Path) -> None:
        self.lab = lab
        self.ns = namespace
        self.tmp = tmp
        self.cp_product = tmp / "cp-product"
        self.cp_raw = tmp / "cp-raw"
        self.cp_raw.mkdir(mode=0o700)
        self.live, self.backup = lab.product_runners(self.cp_product)
        self.expected: dict[str, str] = {}

    # -- the two contenders --------------------------------------------------------------------

    def raw_ssh(self) -> SshTarget:
        """The product's ssh options exactly (cipher and all: the same SshTarget), with a
        ControlMaster of the raw pipe's own, so that the two compare the same work."""
        ssh = self.live.ssh
        assert ssh is not None
        return dataclasses.replace(ssh, control_dir=str(self.cp_raw))

    def raw_ssh_argv(self, remote: str) -> list[str]:
        return self.raw_ssh().argv(remote)

    def raw(self, case: Case, src: str, dest: str) -> Timing:
        lab = self.lab
        snap = S2 if case.incremental else S1
        export = lab.rbd_argv("live", "export-diff", "--no-progress")
        if case.incremental:
            export += ["--from-snap", S1]
        export += [f"{POOL}/{self.ns}/{src}@{snap}", "-"]
        remote = shlex.join(export)
        if case.compress:
            remote = f"set -o pipefail; {remote} | zstd -q -1 -T0 -c"
        stages = [self.raw_ssh_argv(remote)]
        if case.compress:
            stages.append(["zstd", "-q", "-d", "-c"])
        stages.append(lab.rbd_argv("backup", "import-diff", "--no-progress", "-", f"{POOL}/{self.ns}/{dest}"))
        with timed() as measured:
            if not case.incremental:
                run(lab.rbd_argv("backup", "create", "--size", "1M", f"{POOL}/{self.ns}/{dest}"))
            run_pipeline(stages)
        return Timing(*measured)

    def product(self, case: Case, src: str, dest: str) -> Timing:
        compression = Compression(enabled=case.compress, level=1, threads=0)
        with timed() as measured:
            result = transfer_snapshot(
                self.live,
                self.backup,
                POOL,
                self.ns,
                src,
                S2 if case.incremental else S1,
                S1 if case.incremental else None,
                POOL,
                self.ns,
                dest,
                compression,
                timeout=900,
            )
        if not result.ok:
            raise BenchError(f"product transfer failed: {result.failed_stage}: {result.error}")
        return Timing(*measured, bytes_wire=result.bytes_wire, bytes_logical=result.bytes_logical)

    def remote_start_cost(self, reps: int = 7) -> tuple[float, float]:
        """Median wall time of an empty remote command: the product's wrapper, the raw pipe's."""

        def timed(action: Callable[[], object]) -> float:
            started = time.monotonic()
            action()
            return time.monotonic() - started

        product = [timed(lambda: self.live.run_pipeline([["true"]], timeout=60, action="true")) for _ in range(reps)]
        raw = [timed(lambda: run(self.raw_ssh_argv("set -o pipefail; true"))) for _ in range(reps)]
        return median(product), median(raw)

    # -- fixtures --------------------------------------------------------------------------------

    def warm_ssh(self) -> None:
        """Start both ControlMasters before anything is timed (steady state: a run reuses them)."""
        ssh = self.live.ssh
        assert ssh is not None
        run(ssh.argv("true"))
        run(self.raw_ssh_argv("true"))

    def stop_ssh(self) -> None:
        ssh = self.live.ssh
        assert ssh is not None
        for argv in (ssh.exit_master_argv(), self.raw_ssh().exit_master_argv()):
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)

    def make_images(self, size: int) -> Path:
        data = self.tmp / "usr.tar"
        log(f"taking the first {size / GiB:g} GiB of `tar c /usr`")
        with data.open("wb") as out:
            tar = subprocess.Popen(["tar", "c", "/usr"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert tar.stdout is not None
            head = subprocess.run(["head", "-c", str(size)], stdin=tar.stdout, stdout=out, check=False)
            tar.stdout.close()
            tar.kill()
            tar.wait()
        if head.returncode != 0 or data.stat().st_size != size:
            raise BenchError(f"`tar c /usr | head -c {size}` gave {data.stat().st_size} bytes")
        expected = run(["xxhsum", str(data)]).split()[0]
        for image in (SRC_PRODUCT, SRC_RAW):
            log(f"rbd import - {POOL}/{self.ns}/{image}")
            with data.open("rb") as stream:
                self.lab.rbd("live", "import", "--no-progress", "-", f"{POOL}/{self.ns}/{image}", stdin=stream)
            self.lab.rbd("live", "snap", "create", "--no-progress", f"{POOL}/{self.ns}/{image}@{S1}")
        for image in (SRC_PRODUCT, SRC_RAW):
            got = self.lab.checksum("live", f"{POOL}/{self.ns}/{image}@{S1}")
            if got != expected:
                raise BenchError(f"{image}@{S1}: checksum {got} != {expected} of the data file")
        self.expected[S1] = expected
        return data

    def rewrite(self, data: Path, size: int, fraction: float, seed: int) -> int:
        """Overwrite `fraction` of both images identically: whole objects at seeded offsets, with
        real data taken from elsewhere in the tar; one hand-made `rbd diff v1` stream, fed to both."""
        objects = size // OBJECT
        count = max(1, round(objects * fraction))
        chosen = sorted(random.Random(seed).sample(range(objects), count))
        parts = [b"rbd diff v1\n"]
        with data.open("rb") as source:
            for index in chosen:
                # 97*i+13 != i (mod 2^k) for every i: the new content always differs from the old.
                source.seek(((index * 97 + 13) % objects) * OBJECT)
                chunk = source.read(OBJECT)
                parts.append(b"w" + struct.pack("<QQ", index * OBJECT, len(chunk)) + chunk)
        parts.append(b"e")
        stream_path = self.tmp / "rewrite.diff"
        stream_path.write_bytes(b"".join(parts))
        for image in (SRC_PRODUCT, SRC_RAW):
            with stream_path.open("rb") as stream:
                self.lab.rbd("live", "import-diff", "--no-progress", "-", f"{POOL}/{self.ns}/{image}", stdin=stream)
            self.lab.rbd("live", "snap", "create", "--no-progress", f"{POOL}/{self.ns}/{image}@{S2}")
        sums = {image: self.lab.checksum("live", f"{POOL}/{self.ns}/{image}@{S2}") for image in (SRC_PRODUCT, SRC_RAW)}
        if len(set(sums.values())) != 1 or self.expected[S1] in sums.values():
            raise BenchError(f"rewritten images differ or did not change: {sums}")
        self.expected[S2] = sums[SRC_PRODUCT]
        return count * OBJECT

    def verify(self, dest: str, snap: str) -> None:
        got = self.lab.checksum("backup", f"{POOL}/{self.ns}/{dest}@{snap}")
        if got != self.expected[snap]:
            raise BenchError(f"{dest}@{snap} on backup: checksum {got} != {self.expected[snap]} on live")

    def reset(self, case: Case, dest: str, keep: bool) -> None:
        spec = f"{POOL}/{self.ns}/{dest}"
        if case.incremental:
            # Back to "the backup holds S1 only"; HEAD already holds S2's data, which
            # import-diff overwrites with the same bytes (same cost for both contenders).
            self.lab.rbd("backup", "snap", "rm", "--no-progress", f"{spec}@{S2}")
        elif not keep:
            self.lab.rbd("backup", "snap", "purge", "--no-progress", spec)
            self.lab.rbd("backup", "rm", "--no-progress", spec)

    # -- the measurement ---------------------------------------------------------------------------

    def one(self, who: str, case: Case, keep: bool) -> Timing:
        """One timed transfer by `who` ("product" or "raw"), then its checksum and the reset."""
        if who == "product":
            dest = DST_PRODUCT
            timing = self.product(case, SRC_PRODUCT, dest)
        else:
            dest = DST_RAW
            timing = self.raw(case, SRC_RAW, dest)
        self.verify(dest, S2 if case.incremental else S1)
        self.reset(case, dest, keep)
        return timing

    def measure(self, case: Case, reps: int, keep_last: bool) -> list[Sample]:
        samples = []
        for rep in range(reps):
            order = ("product", "raw") if rep % 2 == 0 else ("raw", "product")
            keep = keep_last and rep == reps - 1
            done = {who: self.one(who, case, keep) for who in order}
            product, raw = done["product"], done["raw"]
            sample = Sample(
                case.name,
                rep + 1,
                order[0],
                product.wall,
                raw.wall,
                product.bytes_wire,
                product.bytes_logical,
                product.cpu_children,
                product.cpu_self,
                raw.cpu_children + raw.cpu_self,
            )
            log(
                f"{case.name} #{sample.rep} ({sample.first} first): product {sample.product:.2f} s, "
                f"raw {sample.raw:.2f} s, raw/product {sample.ratio:.3f}; local CPU product "
                f"{sample.product_cpu_children:.2f}+{sample.product_cpu_self:.2f} s, raw {sample.raw_cpu:.2f} s"
            )
            samples.append(sample)
        return samples

    def warmup(self) -> None:
        """One untimed full transfer each: the backup OSD's memstore grows into fresh memory once."""
        case = CASES[0]
        log("warm-up: one untimed full transfer per contender")
        for who in ("product", "raw"):
            self.one(who, case, keep=False)


def summarise(samples: list[Sample]) -> Summary:
    product = median([s.product for s in samples])
    raw = median([s.raw for s in samples])
    ratio = raw / product
    return Summary(
        case=samples[0].case,
        product_median=round(product, 3),
        raw_median=round(raw, 3),
        ratio_of_medians=round(ratio, 3),
        median_ratio=round(median([s.ratio for s in samples]), 3),
        met=ratio >= TARGET,
        bytes_wire=samples[-1].bytes_wire,
        bytes_logical=samples[-1].bytes_logical,
        product_cpu_children=round(median([s.product_cpu_children for s in samples]), 3),
        product_cpu_self=round(median([s.product_cpu_self for s in samples]), 3),
        raw_cpu=round(median([s.raw_cpu for s in samples]), 3),
        samples=[{**asdict(s), "ratio": round(s.ratio, 3)} for s in samples],
    )


def report(summaries: list[Summary], reps: int, size: int, rewritten: int, start_cost: tuple[float, float]) -> None:
    print(f"== transfer efficiency: product transfer_snapshot() vs raw pipe ({machine_line()})")
    print(
        f"   {size / GiB:g} GiB of `tar c /usr`; {rewritten / MiB:.0f} MiB rewritten for the incremental; "
        f"the product's ssh options on both ({'-c ' + CIPHER if CIPHER else 'default cipher'}, ControlMaster, warm); "
        f"{reps} reps, order alternated; medians"
    )
    print(f"   {'case':34} {'product s':>9} {'raw s':>7} {'raw/product':>11} {'median of ratios':>16}  target")
    for item in summaries:
        verdict = "met" if item.met else "MISSED"
        print(
            f"   {item.case:34} {item.product_median:9.2f} {item.raw_median:7.2f} {item.ratio_of_medians:11.3f} "
            f"{item.median_ratio:16.3f}  >= {TARGET}: {verdict}"
        )
    print(
        f"   {'':34} {'logical':>9} {'wire':>7} {'product':>11} {'CPU s here:':>16}  product (processes + relays) / raw"
    )
    for item in summaries:
        mib_s = item.bytes_logical / MiB / item.product_median if item.product_median else 0.0
        logical, wire = item.bytes_logical / MiB, item.bytes_wire / MiB
        print(
            f"   {item.case:34} {logical:5.0f} MiB {wire:3.0f} MiB {mib_s:5.0f} MiB/s "
            f"{'':16}  {item.product_cpu_children:.2f} + {item.product_cpu_self:.2f} / {item.raw_cpu:.2f}"
        )
    print(
        f"   fixed cost of one remote command (median of 7, warm master): product `ssh … bash -o pipefail -c true` "
        f"{start_cost[0] * 1000:.0f} ms, raw `ssh … 'set -o pipefail; true'` {start_cost[1] * 1000:.0f} ms"
    )
    met = all(item.met for item in summaries)
    print(f"   target raw/product >= {TARGET} in every case: {'MET' if met else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=6, help="repetitions per case (even: half product-first)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--fraction", type=float, default=0.10, help="part of the image rewritten (incremental)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--no-lab-up", action="store_true", help="do not run tests/lab/lab.sh up first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.reps < 1 or args.size_mib * MiB % OBJECT:
        parser.error("--reps >= 1 and --size-mib a multiple of 4")
    size = args.size_mib * MiB

    if not args.no_lab_up:
        lab_up()
    lab = Lab.load()
    namespace = lab.create_namespace("bench-xfer")
    log(f"namespace {POOL}/{namespace} on both clusters")
    bench: Bench | None = None
    try:
        with workdir("backurne-bench-xfer-") as tmp:
            bench = Bench(lab, namespace, tmp)
            data = bench.make_images(size)
            bench.warm_ssh()
            start_cost = bench.remote_start_cost()
            if not args.no_warmup:
                bench.warmup()
            summaries = []
            full_cases = [case for case in CASES if not case.incremental]
            for index, case in enumerate(full_cases):
                # The last full case leaves both destinations (with S1) in place: the base of
                # the incremental cases.
                samples = bench.measure(case, args.reps, keep_last=index == len(full_cases) - 1)
                summaries.append(summarise(samples))
            rewritten = bench.rewrite(data, size, args.fraction, args.seed)
            log(f"rewrote {rewritten / MiB:.0f} MiB of both images identically; snapshot {S2}")
            data.unlink()
            for case in CASES:
                if case.incremental:
                    summaries.append(summarise(bench.measure(case, args.reps, keep_last=False)))
            bench.stop_ssh()
            bench = None
    finally:
        if bench is not None:
            with contextlib.suppress(Exception):
                bench.stop_ssh()
        log(f"removing {POOL}/{namespace} on both clusters")
        lab.purge_namespace(namespace)
    report(summaries, args.reps, size, rewritten, start_cost)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_line(),
                    "reps": args.reps,
                    "remote_command_seconds": {"product": start_cost[0], "raw": start_cost[1]},
                    "cases": [asdict(s) for s in summaries],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"transfer bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
