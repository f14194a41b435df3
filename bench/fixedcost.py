#!/usr/bin/env python3
"""Fixed cost of a backup run: `ansible-playbook playbooks/backup.yml` over N images, phase by phase.

N images (default 50) of 1 MiB with 4 KiB written are created in a fresh namespace of the live
cluster (python3-rbd, one process), with a temporary inventory (the lab's, pointed at that
namespace, profile `daily: {count: 7, max_on_live: 1}`). One untimed first run (full) at T0, then
`--reps` rounds (default 3), each:

  daily   `--changed` images (default 5) rewritten (4 KiB each), backurne_now = T0 + k days: the
          daily profile is due for every image, so every image gets a snapshot and an incremental
          transfer (N - changed of them empty) and live-side expiry starts deleting from day 2
  no-op   backurne_now = T0 + k days + 10 min: nothing is due, nothing may change (checked)
  warm    the same no-op again right away, with the ssh ControlMaster connections of the no-op
          still open

`daily` and `no-op` start with a fresh ControlPath directory, as a scheduled run does (its
ControlPersist connections of an hour ago are gone): they pay for the ssh connections. `warm`
shows what is left without that.

With `--baseline DIR` (another checkout of backurne, e.g. `git archive COMMIT | tar -x -C DIR`),
every round runs each kind with both trees, the order alternating from round to round (each tree's
daily run on a day of its own), so that a change of load on a shared machine hits both alike:
the two columns are comparable, the absolute times much less so.

Printed: the median wall time of each kind, and its split into phases from a timing callback
(bench/callback_plugins/backurne_timing.py): start-up (process start to the first playbook event:
Python and Ansible start-up, config, inventory, playbook parsing), each task from its start to the
next task's (its round trips and the templating around it), the end (the stats callbacks, the
report, exit). Per phase, the median over the reps.
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from benchlib import POOL, REPO, BenchError, Lab, lab_up, log, machine_line, median, workdir

LAB_INVENTORY = REPO / "inventories" / "lab"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
CALLBACK_DIR = REPO / "bench" / "callback_plugins"
T0 = datetime(2026, 1, 1, 0, 0, 0)
PROFILES = {"daily": {"count": 7, "max_on_live": 1}}
TARGET_S = 5.0
RUN_TIMEOUT = 1800
KINDS = ("no-op", "warm no-op", "daily")


def inventory(lab: Lab, namespace: str, name: str) -> dict[str, Any]:
    """The lab inventory, pointed at NAMESPACE on both clusters, live cluster named NAME."""
    inv = copy.deepcopy(yaml.safe_load((LAB_INVENTORY / "hosts.yml").read_text()))
    variables = dict(yaml.safe_load((LAB_INVENTORY / "group_vars" / "all.yml").read_text()) or {})
    variables["backurne_lab_dir"] = str(lab.lab_dir)
    variables["backurne_profiles"] = PROFILES
    inv["all"]["vars"] = variables
    children = inv["all"]["children"]
    for host in children["live_clusters"]["hosts"].values():
        host["backurne_live"]["name"] = name
        host["backurne_live"]["namespace"] = namespace
    for host in children["backup_nodes"]["hosts"].values():
        host["backurne_backup"]["namespace"] = namespace
    return inv


def phases(started: float, ended: float, events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per phase: start-up, each task (start to the next marker), the end."""
    markers = [e for e in events if e["kind"] in ("playbook", "task", "stats")]
    split: dict[str, float] = collections.defaultdict(float)
    if not markers:
        return {"total": ended - started}
    split["start-up (python, ansible, inventory, playbook parsing)"] = markers[0]["t"] - started
    for here, after in itertools.pairwise(markers):
        if here["kind"] == "task":
            split[f"task: {here['name']}"] += after["t"] - here["t"]
        elif here["kind"] == "playbook":
            split["first play's set-up"] += after["t"] - here["t"]
    split["end (stats callbacks, report table, exit)"] = ended - markers[-1]["t"]
    return dict(split)


class FixedCost:
    def __init__(self, lab: Lab, tmp: Path, n: int, trees: dict[str, Path]) -> None:
        self.lab = lab
        self.trees = trees
        self.tmp = tmp
        self.n = n
        self.inventory_path = tmp / "hosts.yml"
        self.control_dir = ""

    def playbook(self, tree: str, kind: str, now: datetime, fresh_connections: bool) -> dict[str, Any]:
        root = self.trees[tree]
        out_path = self.tmp / f"timing-{uuid.uuid4().hex[:8]}.json"
        if fresh_connections or not self.control_dir:
            self.control_dir = tempfile.mkdtemp(prefix="cp-", dir=self.tmp)
        env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_CONFIG=str(root / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=str(root / "collections"),
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
            ANSIBLE_CALLBACKS_ENABLED="backurne.rbd.report,backurne_timing",
            ANSIBLE_SSH_CONTROL_PATH_DIR=self.control_dir,
            ANSIBLE_NOCOLOR="1",
            BACKURNE_TIMING_OUT=str(out_path),
            PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        )
        argv = [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(self.inventory_path),
            str(root / "playbooks" / "backup.yml"),
            "-e",
            json.dumps({"backurne_now": now.isoformat(timespec="seconds")}),
        ]
        started = time.time()
        cp = subprocess.run(
            argv, cwd=str(root), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        ended = time.time()
        if cp.returncode != 0 or not out_path.exists():
            raise BenchError(
                f"{tree} {kind}: ansible-playbook rc={cp.returncode}\n{cp.stdout[-4000:]}\n{cp.stderr[-4000:]}"
            )
        events = json.loads(out_path.read_text())["events"]
        self.check(kind, events)
        split = phases(started, ended, events)
        log(f"{tree} {kind}: {ended - started:.2f} s")
        return {
            "tree": tree,
            "kind": kind,
            "seconds": ended - started,
            "phases": split,
            "results": len([e for e in events if e["kind"] == "result"]),
        }

    def check(self, kind: str, events: list[dict[str, Any]]) -> None:
        """The run did what its kind says (a benchmark of a wrong run is worthless)."""
        results = [e for e in events if e["kind"] == "result"]
        bad = [e for e in results if e["status"] in ("failed", "unreachable")]
        if bad:
            raise BenchError(f"{kind}: failed tasks: {bad}")
        transfer = [e for e in results if e["name"].startswith("Transfer the new snapshots")]
        statuses = transfer[0]["statuses"] if transfer else {}
        changed = [e["name"] for e in results if e["changed"]]
        if kind == "first" or kind == "daily":
            if statuses.get("transferred") != self.n:
                raise BenchError(f"{kind}: expected {self.n} transfers, got {statuses}")
        elif changed or statuses.get("transferred"):
            raise BenchError(f"{kind}: not a no-op (changed: {changed}, transfers {statuses})")

    def run(self, reps: int, changed: int) -> list[dict[str, Any]]:
        lab = self.lab
        namespace = lab.create_namespace("bench-fixed")
        runs: list[dict[str, Any]] = []
        try:
            self.inventory_path.write_text(yaml.safe_dump(inventory(lab, namespace, f"f{uuid.uuid4().hex[:6]}")))
            lab.bulk("create", "--conf", str(lab.live_conf), "--namespace", namespace, "--count", str(self.n))
            first = next(iter(self.trees))
            self.playbook(first, "first", T0, fresh_connections=True)
            every = max(1, self.n // changed)
            day = T0
            for rep in range(reps):
                order = list(self.trees) if rep % 2 == 0 else list(reversed(self.trees))
                for tree in order:
                    day += timedelta(days=1)
                    written = lab.bulk(
                        "write",
                        "--conf",
                        str(lab.live_conf),
                        "--namespace",
                        namespace,
                        "--count",
                        str(self.n),
                        "--every",
                        str(every),
                    )
                    log(f"{day:%Y-%m-%d}: rewrote 4 KiB of {len(written['images'])} images")
                    runs.append(self.playbook(tree, "daily", day, fresh_connections=True))
                for tree in order:
                    runs.append(self.playbook(tree, "no-op", day + timedelta(minutes=10), fresh_connections=True))
                    runs.append(self.playbook(tree, "warm no-op", day + timedelta(minutes=11), fresh_connections=False))
        finally:
            log(f"removing {POOL}/{namespace} on both clusters")
            lab.purge_namespace(namespace)
        return runs


def report(runs: list[dict[str, Any]], n: int, changed: int, load: tuple[str, str]) -> dict[str, Any]:
    trees = list(dict.fromkeys(r["tree"] for r in runs))
    print(f"== fixed cost of a run: ansible-playbook playbooks/backup.yml, N = {n} ({machine_line()})")
    print(f"   load average (1, 5, 15 min) before: {load[0]}; after: {load[1]}")
    print(f"   medians per tree: {' | '.join(trees)}")
    summary: dict[str, Any] = {}
    for kind in KINDS:
        label = {"daily": f"daily run ({changed} images changed, every image due)"}.get(kind, kind)
        per_tree = {tree: [r for r in runs if r["kind"] == kind and r["tree"] == tree] for tree in trees}
        if not any(per_tree.values()):
            continue
        walls = {tree: median([r["seconds"] for r in picked]) for tree, picked in per_tree.items()}
        names = list(dict.fromkeys(name for picked in per_tree.values() for r in picked for name in r["phases"]))
        split = {
            tree: {name: median([r["phases"].get(name, 0.0) for r in picked]) for name in names}
            for tree, picked in per_tree.items()
        }

        def had(tree: str, name: str, per_tree: dict[str, list[dict[str, Any]]] = per_tree) -> bool:
            return any(name in r["phases"] for r in per_tree[tree])

        print(f"   {label}:")
        for tree, picked in per_tree.items():
            verdict = ""
            if kind == "no-op":
                verdict = f"  (target <= {TARGET_S:g} s: {'met' if walls[tree] <= TARGET_S else 'MISSED'})"
            runs_text = ", ".join(f"{r['seconds']:.2f}" for r in picked)
            print(f"     {tree}: median {walls[tree]:.2f} s of {len(picked)} runs ({runs_text}){verdict}")
        for name in names:
            # A task one tree does not have: "-".
            row = "".join(f"{split[tree][name]:9.2f} s" if had(tree, name) else f"{'-':>11}" for tree in trees)
            print(f"     {row}  {name}")
        summary[kind] = {tree: {"median_s": walls[tree], "phases_median_s": split[tree]} for tree in trees}
    return {"machine": machine_line(), "load": load, "n": n, "changed": changed, "kinds": summary, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50, help="N images (default 50)")
    parser.add_argument("--changed", type=int, default=5, help="images rewritten before each daily run (default 5)")
    parser.add_argument("--reps", type=int, default=3, help="rounds of daily + no-op + warm no-op (default 3)")
    parser.add_argument("--no-lab-up", action="store_true", help="do not run tests/lab/lab.sh up first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--baseline", type=Path, help="another backurne tree, run side by side (see above)")
    args = parser.parse_args()
    if args.images < 1 or not 1 <= args.changed <= args.images or args.reps < 1:
        parser.error("--images >= 1, 1 <= --changed <= --images, --reps >= 1")
    if not args.no_lab_up:
        lab_up()
    trees = {"this tree": REPO}
    if args.baseline:
        if not (args.baseline / "playbooks" / "backup.yml").exists():
            parser.error(f"--baseline {args.baseline}: no playbooks/backup.yml there")
        trees = {"baseline": args.baseline.resolve(), "this tree": REPO}
    load_before = " ".join(Path("/proc/loadavg").read_text().split(" ", 3)[:3])
    with workdir("backurne-bench-fixed-") as tmp:
        runs = FixedCost(Lab.load(), tmp, args.images, trees).run(args.reps, args.changed)
    load_after = " ".join(Path("/proc/loadavg").read_text().split(" ", 3)[:3])
    result = report(runs, args.images, args.changed, (load_before, load_after))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"fixed-cost bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
