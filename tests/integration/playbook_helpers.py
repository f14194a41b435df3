"""Drive `playbooks/backup.yml` end to end against the lab, and read what it did.

Every test gets its own RBD namespace (fixture ``ns``) on both clusters and its own live
cluster name, so backup image names (``NAME;IMAGE;None``) never collide between tests or with
other suites sharing the lab.  The inventory is the lab inventory (``inventories/lab``) with the
namespace, the name and the profiles of the test; ``run_backup`` writes it under the test's
``tmp_path`` and runs ``ansible-playbook`` on it with a small stdout callback (written next to
it) that records every task result and the recap as JSON.  Time is injected with
``backurne_now``: tests never sleep to age snapshots.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "backup.yml"
LAB_INVENTORY = REPO / "inventories" / "lab"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
POOL = "rbd"
MiB = 1024 * 1024

# Names of the tasks of the collection's playbooks/tasks/backup_cluster.yml whose results the tests read.
T_BACKUP_BEFORE = "List the backup pool"
T_SNAPSHOT = "Snapshot the images whose profiles are due"
T_TRANSFER = "Transfer the new snapshots from the live node"
T_CHECKSUM = "Verify the transferred snapshots by checksum on both sides"
T_RETENTION_LIVE = "Expire snapshots on the live cluster"
T_RETENTION_BACKUP = "Expire snapshots on the backup cluster"
T_PREFLIGHT = "Check profiles, prefix, live clusters and backup nodes"

T0 = datetime(2026, 1, 1, 0, 0, 0)

CALLBACK_NAME = "backurne_test_json"
# A stdout callback recording every task result (per host, in order) and the recap into the
# file named by $BACKURNE_TEST_JSON_OUT; it prints one line per task result for the logs.
# (ansible.builtin has no json callback; ansible.posix is not installed.)
CALLBACK_SOURCE = """
from __future__ import annotations

import json
import os
import time

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase


class _Encoder(AnsibleJSONEncoder):
    def default(self, o):
        try:
            return super().default(o)
        except TypeError:
            return str(o)


def _get(obj, *names):
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "backurne_test_json"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []
        self.play = None
        self.started = time.monotonic()
        self.last = self.started

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()

    def _record(self, status, result):
        task = _get(result, "task", "_task")
        host = _get(result, "host", "_host")
        data = _get(result, "result", "_result") or {}
        try:
            data = json.loads(json.dumps(dict(data), cls=_Encoder))
        except Exception as exc:  # keep going: a test will say what is missing
            data = {"_unserialisable": str(exc)}
        name = task.get_name() if task is not None else "?"
        now = time.monotonic()
        self.events.append(
            {
                "play": self.play,
                "task": name,
                "host": host.get_name(),
                "status": status,
                "result": data,
                "elapsed": round(now - self.last, 3),
            }
        )
        line = f"[{status}] {now - self.last:6.2f}s {host.get_name()}: {name}"
        self.last = now
        if status in ("failed", "unreachable") and data.get("msg"):
            line += f": {data['msg']}"
        self._display.display(line)

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
        with open(os.environ["BACKURNE_TEST_JSON_OUT"], "w", encoding="utf-8") as out:
            json.dump({"events": self.events, "stats": summary}, out, cls=_Encoder)
"""


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def snap_name(profile: str, count: int, created: datetime, prefix: str = "backup") -> str:
    """Our snapshot name as written on disk (backurne 2.x: microseconds always shown)."""
    return f"{prefix};{profile};{count};{created.isoformat(timespec='microseconds')}"


def backup_image(cluster_name: str, image: str) -> str:
    return f"{cluster_name};{image};None"


def new_cluster_name() -> str:
    return f"t{uuid.uuid4().hex[:6]}"


# -- inventory ---------------------------------------------------------------------------------


def load_lab_inventory() -> tuple[dict[str, Any], dict[str, Any]]:
    hosts = yaml.safe_load((LAB_INVENTORY / "hosts.yml").read_text())
    group_vars = yaml.safe_load((LAB_INVENTORY / "group_vars" / "all.yml").read_text()) or {}
    return hosts, group_vars


def make_inventory(
    lab: Any,
    ns: str,
    *,
    name: str | None = None,
    profiles: dict[str, Any] | None = None,
    live_overrides: dict[str, Any] | None = None,
    extra_live_clusters: dict[str, dict[str, Any]] | None = None,
    extra_live_first: bool = False,
    backup_nodes: bool = True,
    group_vars: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lab inventory with namespace ``ns`` on both sides, live cluster ``name`` and ``profiles``.

    ``extra_live_clusters`` adds live nodes: {inventory host: host vars}, after (or, with
    ``extra_live_first``, before) the lab's live node.  ``backup_nodes=False`` drops the group.
    """
    hosts, gvars = load_lab_inventory()
    inv = copy.deepcopy(hosts)
    children = inv["all"]["children"]
    vars_ = dict(gvars)
    vars_["backurne_lab_dir"] = str(lab.lab_dir)
    if profiles is not None:
        vars_["backurne_profiles"] = profiles
    vars_.update(group_vars or {})
    inv["all"]["vars"] = vars_

    live_hosts = children["live_clusters"]["hosts"]
    (live_host,) = list(live_hosts)
    live = live_hosts[live_host]["backurne_live"]
    live["name"] = name or new_cluster_name()
    live["namespace"] = ns
    live.update(live_overrides or {})
    if extra_live_clusters:
        merged = dict(extra_live_clusters) if extra_live_first else {}
        merged[live_host] = live_hosts[live_host]
        if not extra_live_first:
            merged.update(extra_live_clusters)
        children["live_clusters"]["hosts"] = merged

    if backup_nodes:
        for host in children["backup_nodes"]["hosts"].values():
            host["backurne_backup"]["namespace"] = ns
    else:
        del children["backup_nodes"]
    return inv


def lab_live_host_vars(inv: dict[str, Any]) -> dict[str, Any]:
    hosts = inv["all"]["children"]["live_clusters"]["hosts"]
    return hosts["lab-live"]


def cluster_name(inv: dict[str, Any]) -> str:
    return lab_live_host_vars(inv)["backurne_live"]["name"]


# -- running the playbook -----------------------------------------------------------------------


@dataclass
class Event:
    play: str
    task: str
    host: str
    status: str
    result: dict[str, Any]
    elapsed: float = 0.0


@dataclass
class PlaybookRun:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    events: list[Event]
    stats: dict[str, dict[str, int]] | None
    duration: float
    extra_vars: dict[str, Any] = field(default_factory=dict)

    def describe(self, limit: int = 6000) -> str:
        text = f"rc={self.rc} argv={' '.join(self.argv)}\n--- stdout ---\n{self.stdout[-limit:]}"
        if self.stderr.strip():
            text += f"\n--- stderr ---\n{self.stderr[-limit:]}"
        return text

    # -- task results ----------------------------------------------------------------------
    def results(self, task: str, *, statuses: tuple[str, ...] = ("ok", "failed", "ignored")) -> list[dict[str, Any]]:
        """Registered results of ``task`` that ran (one per live cluster), in run order."""
        return [e.result for e in self.events if e.task == task and e.status in statuses]

    def result(self, task: str) -> dict[str, Any]:
        """The one result of ``task`` (single live cluster run)."""
        found = self.results(task)
        assert len(found) == 1, f"expected one result of {task!r}, got {len(found)}\n{self.describe()}"
        return found[0]

    def image(self, task: str, image: str, key: str = "image") -> dict[str, Any]:
        """The per-image item of ``task``'s ``images`` list (single live cluster run)."""
        items = [item for item in self.result(task).get("images", []) if item.get(key) == image]
        assert len(items) == 1, f"{task!r}: expected one item for {image!r}, got {items}"
        return items[0]

    def failed_events(self) -> list[Event]:
        return [e for e in self.events if e.status in ("failed", "unreachable")]

    def failure_text(self) -> str:
        """Every failure message of the run (tasks that failed, rescued or not)."""
        return "\n".join(str(e.result.get("msg", "")) for e in self.failed_events())

    def changed(self) -> dict[str, int]:
        assert self.stats is not None, self.describe()
        return {host: s["changed"] for host, s in self.stats.items()}

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _prepare_callback(directory: Path) -> Path:
    plugin_dir = directory / "callback_plugins"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    (plugin_dir / f"{CALLBACK_NAME}.py").write_text(CALLBACK_SOURCE)
    return plugin_dir


def start_backup(
    inventory: dict[str, Any],
    workdir: Path,
    *,
    now: datetime | str | None = None,
    check: bool = False,
    extra_vars: dict[str, Any] | None = None,
    extra_args: list[str] | None = None,
    playbook: Path = PLAYBOOK,
) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start ansible-playbook (backup.yml unless told); ``finish_backup`` waits for it and parses the result."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / f"run-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    inv_path = run_dir / "hosts.yml"
    inv_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    evars = dict(extra_vars or {})
    if now is not None:
        evars["backurne_now"] = now if isinstance(now, str) else iso(now)
    ev_path = run_dir / "extra_vars.json"
    ev_path.write_text(json.dumps(evars))
    out_path = run_dir / "result.json"
    plugin_dir = _prepare_callback(run_dir)
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inv_path), str(playbook), "-e", f"@{ev_path}"]
    if check:
        argv.append("--check")
    argv += extra_args or []
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("ANSIBLE_"):
            del env[key]
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_STDOUT_CALLBACK=CALLBACK_NAME,
        ANSIBLE_CALLBACK_PLUGINS=str(plugin_dir),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        BACKURNE_TEST_JSON_OUT=str(out_path),
        PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    proc = subprocess.Popen(
        argv,
        cwd=str(REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, {"argv": argv, "out_path": out_path, "extra_vars": evars, "started": time.monotonic()}


def run_playbook(
    playbook: Path, inventory: dict[str, Any], workdir: Path, extra_vars: dict[str, Any], check: bool = False
) -> PlaybookRun:
    """Any playbook (restore.yml, …) on the test inventory, run and parsed like run_backup's runs."""
    proc, info = start_backup(inventory, workdir, check=check, extra_vars=extra_vars, playbook=playbook)
    return finish_backup(proc, info, timeout=300)


def finish_backup(proc: subprocess.Popen, info: dict[str, Any], timeout: float = 300) -> PlaybookRun:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"ansible-playbook timed out after {timeout}s:\n{stdout[-4000:]}\n{stderr[-4000:]}"
        ) from None
    out_path: Path = info["out_path"]
    events: list[Event] = []
    stats = None
    if out_path.exists():
        data = json.loads(out_path.read_text())
        events = [Event(**e) for e in data["events"]]
        stats = data["stats"]
    return PlaybookRun(
        argv=info["argv"],
        rc=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        events=events,
        stats=stats,
        duration=time.monotonic() - info["started"],
        extra_vars=info["extra_vars"],
    )


def run_backup(
    inventory: dict[str, Any],
    workdir: Path,
    *,
    now: datetime | str | None = None,
    check: bool = False,
    extra_vars: dict[str, Any] | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 300,
) -> PlaybookRun:
    """Run backup.yml on ``inventory`` (with ``backurne_now=now``) and parse what it did."""
    proc, info = start_backup(inventory, workdir, now=now, check=check, extra_vars=extra_vars, extra_args=extra_args)
    return finish_backup(proc, info, timeout=timeout)


def assert_ok(run: PlaybookRun) -> PlaybookRun:
    assert run.rc == 0, f"backup run failed:\n{run.failure_text()}\n{run.describe()}"
    assert run.stats is not None, run.describe()
    return run


# -- cluster state -------------------------------------------------------------------------------


def spec(ns: str, image: str, snap: str | None = None) -> str:
    text = f"{POOL}/{ns}/{image}"
    return text if snap is None else f"{text}@{snap}"


def images(lab: Any, cluster: str, ns: str) -> list[str]:
    return sorted(lab.rbd_json(cluster, "ls", "--pool", POOL, "--namespace", ns, admin=True) or [])


def snaps(lab: Any, cluster: str, ns: str, image: str) -> list[str]:
    """Snapshot names of one image, in creation (id) order."""
    entries = lab.rbd_json(cluster, "snap", "ls", f"--pool={POOL}", f"--namespace={ns}", f"--image={image}", admin=True)
    return [e["name"] for e in sorted(entries or [], key=lambda e: e["id"])]


def state(lab: Any, cluster: str, ns: str) -> dict[str, list[str]]:
    """{image: sorted snapshot names} of a whole namespace."""
    return {image: sorted(snaps(lab, cluster, ns, image)) for image in images(lab, cluster, ns)}


def ours(names: list[str], prefix: str = "backup") -> list[str]:
    return sorted(n for n in names if n.startswith(prefix + ";"))


def checksum(lab: Any, cluster: str, ns: str, image: str, snap: str | None = None) -> str:
    return lab.checksum(cluster, spec(ns, image, snap), admin=True)


def assert_same_data(lab: Any, ns: str, image: str, bimage: str, snapshots: list[str]) -> dict[str, str]:
    """xxhsum of every given snapshot equal on live (image) and backup (bimage)."""
    assert snapshots, "no snapshot to compare"
    sums = {}
    for snap in snapshots:
        live = checksum(lab, "live", ns, image, snap)
        backup = checksum(lab, "backup", ns, bimage, snap)
        assert live == backup, f"{image}@{snap}: live {live} != backup {backup}"
        sums[snap] = live
    return sums


def day(n: float, minutes: int = 0) -> datetime:
    return T0 + timedelta(days=n, minutes=minutes)
