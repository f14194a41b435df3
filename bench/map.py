#!/usr/bin/env python3
"""File-level access: from `backurne map` to the first directory listing of a backup snapshot.

An ext4 filesystem of `--size-mib` (default 1024; a copy of /usr/share/doc inside) is imported on
the backup cluster as the backup image `lab;web;None` with one backup snapshot, in a fresh
namespace. Each repetition runs, as an operator does (a separate process, the lab's CLI
configuration from scripts/lab-cli-config.sh):

    backurne map web latest --json      (clone v2 of the snapshot, rbd-fuse, a read-only loop
                                         device, mount; the lab kernel has no NBD)
    os.listdir(MOUNTPOINT)              the first directory listing (its contents are checked)
    backurne unmap web latest           timed apart (not part of the goal)

Printed: the median time from starting `backurne map` to the listing, and of the unmap. Needs
root (loop devices, mounts), like `backurne map` itself. No target is set by the issue: the
number is recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import REPO, BenchError, Lab, lab_up, log, machine_line, median, workdir

POOL = "rbd"
CLUSTER = "lab"
SNAPSHOT = "backup;daily;30;2026-01-01T00:00:00.000000"


def cli(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    done = subprocess.run(
        [sys.executable, "-m", "backurne_cli.main", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"backurne {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def make_filesystem(tmp: Path, size_mib: int) -> tuple[Path, list[str]]:
    src = tmp / "src"
    src.mkdir()
    subprocess.run(["cp", "-a", "/usr/share/doc", str(src / "doc")], check=True, timeout=600)
    (src / "hostname").write_text("web1.example\n")
    fs = tmp / "fs.img"
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(fs)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(fs)], check=True, timeout=600)
    return fs, sorted(os.listdir(src))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--no-lab-up", action="store_true", help="do not run tests/lab/lab.sh up first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.reps < 1 or args.size_mib < 16:
        parser.error("--reps >= 1, --size-mib >= 16")
    if os.geteuid() != 0:
        raise BenchError("backurne map needs root (loop devices, mounts)")
    if not args.no_lab_up:
        lab_up()
    lab = Lab.load()
    namespace = lab.create_namespace("bench-map")
    maps: list[float] = []
    unmaps: list[float] = []
    try:
        with workdir("backurne-bench-map-") as tmp:
            text = subprocess.run(
                ["bash", str(REPO / "scripts" / "lab-cli-config.sh"), namespace],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
            document = json.loads(text.split("\n", 1)[1])
            document["state_dir"] = str(tmp / "state")
            config = tmp / "backurne.yml"
            config.write_text(json.dumps(document))
            try:
                fs, expected = make_filesystem(tmp, args.size_mib)
                spec = f"{POOL}/{namespace}/{CLUSTER};web;None"
                lab.rbd("backup", "import", "--no-progress", str(fs), spec)
                lab.rbd("backup", "snap", "create", "--no-progress", f"{spec}@{SNAPSHOT}")
                fs.unlink()
                for rep in range(args.reps):
                    started = time.monotonic()
                    mapped = json.loads(cli(config, "map", "web", "latest", "--json").stdout)
                    mountpoint = Path(mapped["filesystems"][0]["mountpoint"])
                    listing = sorted(os.listdir(mountpoint))
                    maps.append(time.monotonic() - started)
                    if not set(expected) <= set(listing):
                        raise BenchError(f"{mountpoint}: listed {listing}, expected {expected}")
                    started = time.monotonic()
                    cli(config, "unmap", "web", "latest")
                    unmaps.append(time.monotonic() - started)
                    log(f"rep {rep + 1}: map to first listing {maps[-1]:.2f} s, unmap {unmaps[-1]:.2f} s")
            finally:
                # Whatever an aborted repetition left mapped, so that the namespace can go.
                subprocess.run(
                    [sys.executable, "-m", "backurne_cli.main", "--config", str(config), "unmap", "--all"],
                    env=dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}"),
                    capture_output=True,
                    timeout=600,
                    check=False,
                )
    finally:
        log(f"removing {POOL}/{namespace} on both clusters")
        lab.purge_namespace(namespace)
    print(f"== file-level access: `backurne map` to the first directory listing ({machine_line()})")
    print(
        f"   ext4 of {args.size_mib} MiB, clone v2 + rbd-fuse + read-only loop device; {args.reps} reps; "
        f"map to listing median {median(maps):.2f} s ({', '.join(f'{t:.2f}' for t in maps)}), "
        f"unmap median {median(unmaps):.2f} s"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "map_s": maps, "unmap_s": unmaps}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"map bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
