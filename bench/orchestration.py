#!/usr/bin/env python3
"""Orchestration floor: the real `ansible-playbook playbooks/backup.yml` on N small images.

For each N (default 50 and 200): N images of 1 MiB with 4 KiB written are created in bulk in a
fresh namespace of the live cluster (python3-rbd, one process), each namespace with its own
temporary inventory (the lab's, pointed at that namespace, profile
`daily: {count: 7, max_on_live: 1}`, its own live-cluster name). Then, all sizes side by side:

  1. first run (full)            backurne_now = T0: one snapshot + one full transfer per image
  2. no-op runs (x --noop-reps)  backurne_now = T0 + 10 min: nothing is due, nothing may change;
                                 the sizes are interleaved (50, 200, 200, 50, …) so that a change
                                 of load on a shared machine hits every size alike
  3. instrumented no-op run      the same, with PATH shims counting every process (see below)
  4. incremental run             10 % of the images rewritten (4 KiB each), backurne_now = T0 +
                                 1 day: the daily profile is due for every image (no
                                 backurne_force), so every image gets a snapshot and an
                                 incremental transfer (max_on_live 1 keeps one older snapshot on
                                 live: nothing expires yet)

Printed: wall time per run, the slope per extra image (t(N2) - t(N1)) / (N2 - N1) of the no-op
run (target <= 20 ms), the number of Ansible task results per run (must not depend on N), and
the processes spawned per image.

Counting processes: the modules run on the lab "nodes" through ssh as root, so the inventory's
`ansible_python_interpreter` is a wrapper that puts a shim directory first on the PATH of every
module (backup node and live node) and execs /usr/bin/python3; the shims (`rbd`, `rados`,
`ssh`, `zstd`, `xxhsum`, `bash`) log one line per call and exec the real binary. The
controller's own `ssh` (Ansible's connections) is shimmed through the PATH of ansible-playbook.
Not seen: what runs inside the product's ssh sessions to the live node (the `rbd export-diff |
zstd` of a transfer) — the logged ssh command line says what it ran, and those are counted
from it — and what the modules do in process through python3-rados/python3-rbd
(module_utils/ceph/rados_listing.py: pool listings, header lookups, backup locks, live snapshots):
those are library calls, not processes, and the counts show what is left. The first and
incremental runs are instrumented too (a shim costs ~1-2 ms per process, against ~70 ms for an
rbd call); the timed no-op runs are not.
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from benchlib import POOL, REPO, BenchError, Lab, lab_up, log, machine_line, median, workdir

PLAYBOOK = REPO / "playbooks" / "backup.yml"
LAB_INVENTORY = REPO / "inventories" / "lab"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
T0 = datetime(2026, 1, 1, 0, 0, 0)
PROFILES = {"daily": {"count": 7, "max_on_live": 1}}
SLOPE_TARGET_MS = 20.0
SHIMMED = ("rbd", "rados", "ssh", "zstd", "xxhsum", "bash")
RUN_TIMEOUT = 1800
REMOTE_RBD = re.compile(r"(?:^|[\s'\"|;&])rbd\s")

CALLBACK_NAME = "backurne_bench_json"
# A stdout callback recording each task result (status, time since the task started, image
# statuses) into $BACKURNE_BENCH_JSON_OUT.
CALLBACK_SOURCE = """
from __future__ import annotations

import collections
import json
import os
import re
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "backurne_bench_json"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []
        self.tasks_started = 0
        self.started = {}

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks_started += 1
        self.started[task._uuid] = time.monotonic()

    def _record(self, status, result):
        task = result._task
        data = result._result or {}
        images = data.get("images")
        statuses = None
        if isinstance(images, list):
            statuses = dict(collections.Counter(
                str(item.get("status", "planned" if item.get("new_snapshots") else "none"))
                for item in images if isinstance(item, dict)
            ))
        self.events.append({
            "task": task.get_name(),
            "host": result._host.get_name(),
            "status": status,
            "changed": bool(data.get("changed")),
            "elapsed": round(time.monotonic() - self.started.get(task._uuid, time.monotonic()), 3),
            "images": len(images) if isinstance(images, list) else None,
            "statuses": statuses,
            "failed_images": len(data.get("failed_images") or []),
            "msg": str(data.get("msg", ""))[:2000] if status in ("failed", "unreachable") else "",
        })
        self._display.display(f"[{status}] {result._host.get_name()}: {task.get_name()}")

    def v2_runner_on_ok(self, result):
        self._record("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        with open(os.environ["BACKURNE_BENCH_JSON_OUT"], "w", encoding="utf-8") as out:
            json.dump({"events": self.events, "stats": summary, "tasks_started": self.tasks_started}, out)
"""


@dataclass
class Run:
    n: int
    kind: str
    seconds: float
    task_results: int
    tasks_started: int
    changed: int
    events: list[dict[str, Any]] = field(repr=False)
    calls: dict[str, int] | None = None
    # Peak RSS (KiB) of the controller's ansible-playbook tree (its largest process), measured
    # by GNU time in the instrumented runs.
    controller_rss_kib: int | None = None

    def slowest(self, count: int = 4) -> list[tuple[str, float]]:
        ranked = sorted(self.events, key=lambda e: e["elapsed"], reverse=True)[:count]
        return [(e["task"], e["elapsed"]) for e in ranked]


class Shims:
    """A PATH directory whose rbd/rados/ssh/… log each call, and a python3 wrapper putting it first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node_dir = root / "node-bin"
        self.controller_dir = root / "controller-bin"
        self.node_log = root / "node-calls.log"
        self.controller_log = root / "controller-calls.log"
        self.interpreter = root / "python3"
        for directory, logfile, tools in (
            (self.node_dir, self.node_log, SHIMMED),
            (self.controller_dir, self.controller_log, ("ssh",)),
        ):
            directory.mkdir(parents=True)
            for tool in tools:
                real = subprocess.run(["which", tool], capture_output=True, text=True, check=True).stdout.strip()
                path = directory / tool
                # One line per call: tool, CEPH_CONF (which node), arguments; one printf, no extra process.
                path.write_text(
                    "#!/bin/sh\n"
                    f'printf \'{tool}\\t%s\\t%s\\n\' "${{CEPH_CONF:-}}" "$*" >> {shlex.quote(str(logfile))}\n'
                    f'exec {shlex.quote(real)} "$@"\n'
                )
                path.chmod(0o755)
        # Also logs each module run and its wall time on the node (python start-up included); the
        # lab's sshd sets CEPH_CONF per "host", which tells the live node's sessions from the
        # backup node's.
        # GNU time also gives each module run's peak RSS (its largest process: the module's python).
        self.interpreter.write_text(
            "#!/bin/sh\n"
            "started=$(date +%s%N)\n"
            f"PATH={shlex.quote(str(self.node_dir))}:$PATH\nexport PATH\n"
            "rss=$(mktemp)\n"
            '/usr/bin/time -f %M -o "$rss" /usr/bin/python3 "$@"\n'
            "rc=$?\n"
            "ended=$(date +%s%N)\n"
            f"printf 'python3\\t%s\\t%s\\n' \"${{CEPH_CONF:-}}\" $(((ended - started) / 1000000))"
            f" >> {shlex.quote(str(self.node_log))}\n"
            f'printf \'rss\\t%s\\t%s\\n\' "${{CEPH_CONF:-}}" "$(tail -n 1 "$rss")"'
            f" >> {shlex.quote(str(self.node_log))}\n"
            'rm -f "$rss"\n'
            'exit "$rc"\n'
        )
        self.interpreter.chmod(0o755)

    def reset(self) -> None:
        for logfile in (self.node_log, self.controller_log):
            logfile.write_text("")

    def counts(self) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for line in self.node_log.read_text().splitlines():
            fields = line.split("\t", 2)
            if len(fields) != 3 or fields[0] not in (*SHIMMED, "python3", "rss"):
                continue  # the continuation of an argument holding a newline
            tool, conf, args = fields
            node = "live" if "/live/" in conf else "backup" if "/backup/" in conf else "localhost"
            if tool == "rss":
                key = f"{node}: module peak RSS, KiB (max)"
                counts[key] = max(counts[key], int(args) if args.isdigit() else 0)
                continue
            if tool == "python3":
                counts[f"{node}: module runs"] += 1
                counts[f"{node}: module wall time, ms"] += int(args) if args.isdigit() else 0
                continue
            counts[f"{node}: {tool}"] += 1
            if tool == "ssh" and " -- " in args:
                # What the product ran on the live node through that ssh session.
                remote = args.split(" -- ", 1)[1]
                counts["live: rbd inside the product's ssh"] += len(REMOTE_RBD.findall(remote))
        for line in self.controller_log.read_text().splitlines():
            tool, tab, _ = line.partition("\t")
            if tab and tool == "ssh":
                counts["controller: ssh (Ansible)"] += 1
        return dict(sorted(counts.items()))


class Orchestration:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.plugin_dir = tmp / "callback_plugins"
        self.plugin_dir.mkdir()
        (self.plugin_dir / f"{CALLBACK_NAME}.py").write_text(CALLBACK_SOURCE)
        self.shims = Shims(tmp / "shims")

    def inventory(self, namespace: str, name: str, instrumented: bool) -> dict[str, Any]:
        hosts = yaml.safe_load((LAB_INVENTORY / "hosts.yml").read_text())
        group_vars = yaml.safe_load((LAB_INVENTORY / "group_vars" / "all.yml").read_text()) or {}
        inv = copy.deepcopy(hosts)
        variables = dict(group_vars)
        variables["backurne_lab_dir"] = str(self.lab.lab_dir)
        variables["backurne_profiles"] = PROFILES
        if instrumented:
            variables["ansible_python_interpreter"] = str(self.shims.interpreter)
        inv["all"]["vars"] = variables
        children = inv["all"]["children"]
        for host in children["live_clusters"]["hosts"].values():
            host["backurne_live"]["name"] = name
            host["backurne_live"]["namespace"] = namespace
        for host in children["backup_nodes"]["hosts"].values():
            host["backurne_backup"]["namespace"] = namespace
        return inv

    def playbook(
        self, n: int, kind: str, inventory: dict[str, Any], now: datetime, instrumented: bool, check: bool = False
    ) -> Run:
        run_dir = self.tmp / f"run-{n}-{kind.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir()
        inv_path = run_dir / "hosts.yml"
        inv_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        out_path = run_dir / "result.json"
        env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        path = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        if instrumented:
            path = f"{self.shims.controller_dir}:{path}"
            self.shims.reset()
        env.update(
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
            ANSIBLE_STDOUT_CALLBACK=CALLBACK_NAME,
            ANSIBLE_CALLBACK_PLUGINS=str(self.plugin_dir),
            ANSIBLE_NOCOLOR="1",
            BACKURNE_BENCH_JSON_OUT=str(out_path),
            PATH=path,
        )
        argv = [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(inv_path),
            str(PLAYBOOK),
            "-e",
            json.dumps({"backurne_now": now.isoformat(timespec="seconds")}),
        ]
        if check:
            argv.append("--check")
        rss_file = run_dir / "controller-rss"
        if instrumented:
            argv = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv]
        started = time.monotonic()
        cp = subprocess.run(
            argv, cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        seconds = time.monotonic() - started
        if cp.returncode != 0 or not out_path.exists():
            raise BenchError(
                f"N={n} {kind}: ansible-playbook rc={cp.returncode}\n{cp.stdout[-4000:]}\n{cp.stderr[-4000:]}"
            )
        data = json.loads(out_path.read_text())
        events = data["events"]
        bad = [e for e in events if e["status"] in ("failed", "unreachable") or e["failed_images"]]
        if bad:
            raise BenchError(f"N={n} {kind}: failures: {json.dumps(bad)[:4000]}")
        changed = sum(stats["changed"] for stats in data["stats"].values())
        result = Run(n, kind, seconds, len(events), data["tasks_started"], changed, events)
        if instrumented:
            result.calls = self.shims.counts()
            last = rss_file.read_text().split() if rss_file.exists() else []
            result.controller_rss_kib = int(last[-1]) if last and last[-1].isdigit() else None
        self.check(result)
        log(
            f"N={n} {kind}: {seconds:.2f} s, {result.task_results} task results, changed {changed}"
            + (f", calls {result.calls}" if result.calls else "")
        )
        return result

    @staticmethod
    def check(run: Run) -> None:
        """The run did what its kind says, for every image (a benchmark of a wrong run is worthless)."""
        transfer = [e for e in run.events if e["task"].startswith("Transfer the new snapshots")]
        statuses = transfer[0]["statuses"] if transfer and transfer[0]["statuses"] else {}
        if run.kind.startswith("plan"):
            if statuses.get("planned") != run.n:
                raise BenchError(f"N={run.n} {run.kind}: expected {run.n} planned transfers, got {statuses}")
        elif run.kind.startswith("no-op"):
            if run.changed or statuses.get("transferred"):
                raise BenchError(f"N={run.n} {run.kind}: not a no-op (changed {run.changed}, transfers {statuses})")
        elif statuses.get("transferred") != run.n:
            raise BenchError(f"N={run.n} {run.kind}: expected {run.n} transfers, got {statuses}")

    def all_sizes(self, sizes: list[int], noop_reps: int) -> list[Run]:
        """Every N side by side: one namespace each; the no-op runs interleave the sizes (the
        order alternating per round), so a change of load on a shared machine hits all of them."""
        lab = self.lab
        setups: dict[int, dict[str, Any]] = {}
        runs: list[Run] = []
        try:
            for n in sizes:
                namespace = lab.create_namespace("bench-orch")
                name = f"b{uuid.uuid4().hex[:6]}"
                setups[n] = {
                    "namespace": namespace,
                    "plain": self.inventory(namespace, name, instrumented=False),
                    "counted": self.inventory(namespace, name, instrumented=True),
                }
                started = time.monotonic()
                made = lab.bulk("create", "--conf", str(lab.live_conf), "--namespace", namespace, "--count", str(n))
                log(f"N={n}: {made['images']} images in {POOL}/{namespace} in {time.monotonic() - started:.1f} s")
            for n in sizes:
                runs.append(self.playbook(n, "first (full)", setups[n]["counted"], T0, instrumented=True))
            noop_at = T0 + timedelta(minutes=10)
            for rep in range(noop_reps):
                for n in sizes if rep % 2 == 0 else reversed(sizes):
                    runs.append(self.playbook(n, "no-op", setups[n]["plain"], noop_at, instrumented=False))
            for n in sizes:
                runs.append(self.playbook(n, "no-op (counted)", setups[n]["counted"], noop_at, instrumented=True))
            for n in sizes:
                namespace = setups[n]["namespace"]
                changed = lab.bulk(
                    "write", "--conf", str(lab.live_conf), "--namespace", namespace, "--count", str(n), "--every", "10"
                )
                log(f"N={n}: rewrote 4 KiB of {len(changed['images'])} images")
                runs.append(self.playbook(n, "incremental (day 2)", setups[n]["counted"], T0 + timedelta(days=1), True))
        finally:
            errors = []
            for n, setup in setups.items():
                log(f"N={n}: removing {POOL}/{setup['namespace']} on both clusters")
                try:
                    lab.purge_namespace(setup["namespace"])
                except BenchError as exc:
                    errors.append(str(exc))
            if errors:
                raise BenchError("; ".join(errors))
        return runs


def _per_image(low: Run | None, high: Run | None) -> dict[str, float]:
    if not low or not high or low.calls is None or high.calls is None:
        return {}
    keys = sorted(set(low.calls) | set(high.calls))
    return {key: (high.calls.get(key, 0) - low.calls.get(key, 0)) / (high.n - low.n) for key in keys}


def report(runs: list[Run], sizes: list[int], noop_reps: int) -> dict[str, Any]:
    kinds = ["first (full)", "no-op", "no-op (counted)", "incremental (day 2)"]

    def pick(n: int, kind: str) -> list[Run]:
        return [r for r in runs if r.n == n and r.kind == kind]

    def seconds(n: int, kind: str) -> float:
        return median([r.seconds for r in pick(n, kind)])

    print(f"== orchestration floor: ansible-playbook playbooks/backup.yml ({machine_line()})")
    print(
        f"   N images of 1 MiB (4 KiB written), profile {json.dumps(PROFILES)}; "
        f"no-op = median of {noop_reps} runs per N, interleaved"
    )
    print(f"   {'run':22}" + "".join(f"{'N=' + str(n):>10}" for n in sizes) + "   per extra image")
    low, high = sizes[0], sizes[-1]
    slopes: dict[str, float] = {}
    for kind in kinds:
        if kind == "no-op (counted)":
            continue
        row = f"   {kind:22}" + "".join(f"{seconds(n, kind):9.2f}s" for n in sizes)
        slope = (seconds(high, kind) - seconds(low, kind)) / (high - low) * 1000
        slopes[kind] = slope
        row += f"   {slope:7.1f} ms"
        if kind == "no-op":
            row += f"  (target <= {SLOPE_TARGET_MS:g} ms: {'met' if slope <= SLOPE_TARGET_MS else 'MISSED'})"
        print(row)
    if len(sizes) > 2:
        for a, b in itertools.pairwise(sizes):
            slope = (seconds(b, "no-op") - seconds(a, "no-op")) / (b - a) * 1000
            print(f"   no-op slope N={a}->{b}: {slope:.1f} ms per image")

    print("   Ansible task results per run (must not depend on N):")
    constant = True
    for kind in kinds:
        counts = [pick(n, kind)[0].task_results for n in sizes]
        started = [pick(n, kind)[0].tasks_started for n in sizes]
        same = len(set(counts)) == 1
        constant &= same
        print(
            f"     {kind:22}"
            + "".join(f"{c:>10}" for c in counts)
            + f"   (tasks started {'/'.join(map(str, started))}) {'constant' if same else 'DEPENDS ON N'}"
        )
    print(f"   task count independent of N: {'met' if constant else 'MISSED'}")

    print("   processes spawned (shims), per run and per extra image:")
    per_kind: dict[str, dict[str, float]] = {}
    for kind in ("no-op (counted)", "first (full)", "incremental (day 2)"):
        lo, hi = pick(low, kind)[0], pick(high, kind)[0]
        per = _per_image(lo, hi)
        per_kind[kind] = per
        keys = sorted(key for key in set(lo.calls or {}) | set(hi.calls or {}) if "RSS" not in key)
        print(f"     {kind}:")
        for key in keys:
            line = "".join(f"{(pick(n, kind)[0].calls or {}).get(key, 0):>8}" for n in sizes)
            print(f"       {key:28}{line}   {per.get(key, 0.0):6.2f} per image")
    print("   peak RSS, MiB (controller: ansible-playbook's largest process; modules: largest module run per node):")
    print(f"     {'run':22}{'':8}" + "".join(f"{'N=' + str(n):>10}" for n in sizes))
    memory: dict[str, dict[int, float | None]] = {}
    for kind in ("first (full)", "no-op (counted)", "incremental (day 2)"):
        for label, key in (
            ("controller", None),
            ("backup node module", "backup: module peak RSS, KiB (max)"),
            ("live node module", "live: module peak RSS, KiB (max)"),
        ):
            values: dict[int, float | None] = {}
            for n in sizes:
                found = pick(n, kind)[0]
                kib = found.controller_rss_kib if key is None else (found.calls or {}).get(key)
                values[n] = None if kib is None else kib / 1024
            memory[f"{kind} / {label}"] = values
            print(
                f"     {kind:22}{label:>20}"
                + "".join(f"{'?' if v is None else f'{v:.0f}':>10}" for v in values.values())
            )
    noops = sorted(pick(high, "no-op"), key=lambda r: r.seconds)
    noop = noops[len(noops) // 2]  # the median run
    in_tasks = sum(e["elapsed"] for e in noop.events)
    print(
        f"   where the median no-op run's time goes (N={high}): {noop.seconds:.2f} s wall, {in_tasks:.2f} s in "
        f"{noop.task_results} task results, {noop.seconds - in_tasks:.2f} s outside them (start-up, inventory, "
        "collection loading); slowest:"
    )
    for task, elapsed in noop.slowest(6):
        print(f"     {elapsed:7.2f} s  {task}")
    for n in sizes:
        counted = pick(n, "no-op (counted)")[0].calls or {}
        on_nodes = sum(value for key, value in counted.items() if key.endswith("module wall time, ms")) / 1000
        runs_on_nodes = sum(value for key, value in counted.items() if key.endswith("module runs"))
        print(
            f"   N={n} counted no-op: {on_nodes:.2f} s of module wall time on the nodes ({runs_on_nodes} module runs, "
            f"python start-up included) of {pick(n, 'no-op (counted)')[0].seconds:.2f} s"
        )
    return {
        "machine": machine_line(),
        "sizes": sizes,
        "slopes_ms": slopes,
        "per_image_processes": per_kind,
        "peak_rss_mib": {key: {str(n): v for n, v in values.items()} for key, values in memory.items()},
        "runs": [asdict(r) for r in runs],
    }


def plan_only(lab: Lab, tmp: Path, sizes: list[int]) -> None:
    """--plan-only: per N, fresh images and one instrumented `--check` run of the first backup.

    Nothing is transferred, but every step carries N images' plans, listings and results
    (1000 planned fulls, 1000 transfer results in check mode, both expiry predictions): the
    orchestration's time, process count and memory at large N without the data transfers that
    make a real first run take ~1 s per image on 2 cores.
    """
    bench = Orchestration(lab, tmp)
    runs: list[Run] = []
    namespaces = []
    try:
        for n in sizes:
            namespace = lab.create_namespace("bench-orch")
            namespaces.append(namespace)
            lab.bulk("create", "--conf", str(lab.live_conf), "--namespace", namespace, "--count", str(n))
            inventory = bench.inventory(namespace, f"b{uuid.uuid4().hex[:6]}", instrumented=True)
            runs.append(bench.playbook(n, "plan (check mode)", inventory, T0, instrumented=True, check=True))
    finally:
        for namespace in namespaces:
            lab.purge_namespace(namespace)
    print(f"== orchestration at large N: one `--check` first run per N ({machine_line()})")
    header = f"{'N':>6} {'wall s':>8} {'tasks':>6} {'rbd':>5} {'rados':>6} {'ssh':>5}"
    print(f"   {header} {'ctrl RSS MiB':>13} {'module RSS MiB':>15}")
    for run in runs:
        calls = run.calls or {}
        rbd = calls.get("backup: rbd", 0) + calls.get("live: rbd", 0)
        module_rss = max(
            calls.get("backup: module peak RSS, KiB (max)", 0), calls.get("live: module peak RSS, KiB (max)", 0)
        )
        print(
            f"   {run.n:>6} {run.seconds:>8.2f} {run.task_results:>6} {rbd:>5} {calls.get('backup: rados', 0):>6}"
            f" {calls.get('backup: ssh', 0):>5} {(run.controller_rss_kib or 0) / 1024:>13.0f}"
            f" {module_rss / 1024:>15.0f}"
        )
    for low, high in itertools.pairwise(runs):
        print(
            f"   slope N={low.n}->{high.n}: {(high.seconds - low.seconds) / (high.n - low.n) * 1000:.1f} ms per image"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,200", help="comma-separated N (e.g. 50,200,1000)")
    parser.add_argument("--noop-reps", type=int, default=5, help="no-op runs per N, interleaved across N")
    parser.add_argument("--no-lab-up", action="store_true", help="do not run tests/lab/lab.sh up first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--plan-only", action="store_true", help="only one instrumented --check first run per N")
    args = parser.parse_args()
    sizes = sorted({int(n) for n in args.sizes.split(",") if n.strip()})
    if args.plan_only:
        if not args.no_lab_up:
            lab_up()
        with workdir("backurne-bench-orch-") as tmp:
            plan_only(Lab.load(), tmp, sizes)
        return 0
    if len(sizes) < 2 or sizes[0] < 10 or args.noop_reps < 1:
        parser.error("at least two sizes >= 10, --noop-reps >= 1")
    if not args.no_lab_up:
        lab_up()
    lab = Lab.load()
    with workdir("backurne-bench-orch-") as tmp:
        runs = Orchestration(lab, tmp).all_sizes(sizes, args.noop_reps)
    result = report(runs, sizes, args.noop_reps)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"orchestration bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
