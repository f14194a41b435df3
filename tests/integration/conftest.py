"""Fixtures for the integration tests against the two-cluster Ceph lab.

The lab (tests/lab/lab.sh) runs two real Ceph clusters, ``live`` and
``backup``, each behind its own sshd.  The venv running these tests has no
``rados``/``rbd`` Python modules: everything goes through the ``rbd``/``ceph``
CLIs, always with argument lists (never a local shell) and a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shlex
import struct
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAB_SH = REPO / "tests" / "lab" / "lab.sh"
CLUSTERS = ("live", "backup")
POOL = "rbd"
MiB = 1024 * 1024

# How long `lab.sh up` may take: packages on a fresh machine + bootstrap.
LAB_UP_TIMEOUT = int(os.environ.get("BACKURNE_LAB_UP_TIMEOUT", "1800"))
# Seconds the slowest tests took in a measured run ({node id: seconds}, from `pytest
# --durations=N` of a serial run), to send the slowest files first to the pytest-xdist workers.
# A test not listed counts as DEFAULT_DURATION: the mean of the unlisted ones in that run
# (2389 s for 253 tests, the 25 listed ~1200 s of it). Only the order depends on these numbers.
DURATIONS_FILE = HERE / "durations.json"
DEFAULT_DURATION = 5.0


def worker_lab(worker: str, labs: str) -> dict[str, str]:
    """The BACKURNE_LAB_* variables of pytest-xdist worker ``gwN``: entry N of ``labs``.

    ``labs`` (BACKURNE_LABS) lists one lab per worker, space-separated, each
    ``LAB_DIR:LIVE_IP:BACKUP_IP``.  A worker never shares a lab: fault tests break
    cluster-wide things (caps, quotas, stopped daemons) that would hit a neighbour's test.
    """
    entries = labs.split()
    index = int(worker.removeprefix("gw"))
    if index >= len(entries):
        raise pytest.UsageError(
            f"pytest-xdist worker {worker} has no lab of its own: BACKURNE_LABS lists {len(entries)} "
            f"({labs!r}); run at most that many workers (-n)"
        )
    lab_dir, live_ip, backup_ip = entries[index].split(":")
    return {"BACKURNE_LAB_DIR": lab_dir, "BACKURNE_LAB_LIVE_IP": live_ip, "BACKURNE_LAB_BACKUP_IP": backup_ip}


def _use_this_workers_lab() -> None:
    """Point this process (and every playbook it starts) at its worker's lab, before any test
    module reads the environment.  Without xdist nothing changes: the BACKURNE_LAB_* variables."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    labs = os.environ.get("BACKURNE_LABS", "")
    if not labs.strip():
        raise pytest.UsageError(
            "pytest-xdist workers need one lab each: set BACKURNE_LABS='DIR:LIVE_IP:BACKUP_IP ...' "
            "(scripts/test.sh integration does)"
        )
    os.environ.update(worker_lab(worker, labs))


_use_this_workers_lab()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lab: needs the two-cluster Ceph lab (tests/lab/lab.sh); deselect with -m 'not lab'",
    )


def _slowest_files_first(items: list[pytest.Item]) -> None:
    """Order the test files for ``--dist loadfile`` (scripts/test.sh): a file runs whole in one
    worker (its module fixtures are built once, and its tests keep their order), and the files
    go out slowest first (measured seconds, durations.json), so no long file starts last."""
    measured: dict[str, float] = {}
    if DURATIONS_FILE.exists():
        measured = json.loads(DURATIONS_FILE.read_text())
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def cost(tests: list[pytest.Item]) -> float:
        return sum(measured.get(item.nodeid, DEFAULT_DURATION) for item in tests)

    items[:] = [item for tests in sorted(files.values(), key=cost, reverse=True) for item in tests]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.lab)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _slowest_files_first(items)


class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError whose message carries the command's stderr."""

    def __str__(self) -> str:
        err = self.stderr
        if isinstance(err, bytes):
            err = err.decode("utf-8", "replace")
        return f"{shlex.join(str(a) for a in self.cmd)} exited {self.returncode}: {(err or '').strip()}"


@dataclass
class PipelineResult:
    argvs: list[list[str]]
    returncodes: list[int]
    stderrs: list[str]
    stdout: bytes

    @property
    def ok(self) -> bool:
        return all(rc == 0 for rc in self.returncodes)

    def describe(self) -> str:
        lines = []
        for argv, rc, err in zip(self.argvs, self.returncodes, self.stderrs, strict=True):
            lines.append(f"  [rc={rc}] {shlex.join(argv)}")
            if err.strip():
                lines.extend("      " + line for line in err.strip().splitlines()[-10:])
        return "\n".join(lines)

    def check(self) -> PipelineResult:
        if not self.ok:
            raise AssertionError("pipeline failed:\n" + self.describe())
        return self


def run_pipeline(*argvs: Sequence[str], input: bytes | None = None, timeout: float = 120) -> PipelineResult:
    """Run argv1 | argv2 | ... without a shell; return every stage's code.

    stdin of the first stage is ``input`` (or /dev/null), the stdout of the
    last stage is returned.  Each stage's stderr goes to its own temp file
    (never into the data stream, see lab-facts gotcha 8).  On timeout every
    stage is killed and TimeoutError is raised.
    """
    argvs_l = [[str(a) for a in argv] for argv in argvs]
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        errfiles = [stack.enter_context(tempfile.TemporaryFile()) for _ in argvs_l]
        prev_stdout: Any = subprocess.DEVNULL
        if input is not None:
            infile = stack.enter_context(tempfile.TemporaryFile())
            infile.write(input)
            infile.seek(0)
            prev_stdout = infile
        try:
            for i, argv in enumerate(argvs_l):
                p = subprocess.Popen(argv, stdin=prev_stdout, stdout=subprocess.PIPE, stderr=errfiles[i])
                if procs:
                    # only the next stage may hold the read end
                    procs[-1].stdout.close()  # type: ignore[union-attr]
                procs.append(p)
                prev_stdout = p.stdout
            try:
                out, _ = procs[-1].communicate(timeout=timeout)
                for p in procs[:-1]:
                    p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError(
                    f"pipeline timed out after {timeout}s: " + " | ".join(shlex.join(a) for a in argvs_l)
                ) from None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        stderrs = []
        for f in errfiles:
            f.seek(0)
            stderrs.append(f.read().decode("utf-8", "replace"))
    return PipelineResult(argvs_l, [p.returncode for p in procs], stderrs, out)


def diff_stream(
    writes: Sequence[tuple[int, bytes]],
    size: int | None = None,
    from_snap: str | None = None,
    to_snap: str | None = None,
) -> bytes:
    """Build an `rbd diff v1` stream (the export-diff format) by hand.

    Fed to `rbd import-diff`, it writes ``data`` at each ``offset``: the only
    way to overwrite part of an image with chosen bytes through the rbd CLI.
    """
    out = [b"rbd diff v1\n"]
    if from_snap is not None:
        name = from_snap.encode()
        out.append(b"f" + struct.pack("<I", len(name)) + name)
    if to_snap is not None:
        name = to_snap.encode()
        out.append(b"t" + struct.pack("<I", len(name)) + name)
    if size is not None:
        out.append(b"s" + struct.pack("<Q", size))
    for offset, data in writes:
        out.append(b"w" + struct.pack("<QQ", offset, len(data)) + data)
    out.append(b"e")
    return b"".join(out)


@dataclass(frozen=True)
class Lab:
    lab_dir: Path
    live_conf: Path
    backup_conf: Path
    ssh_key: Path
    known_hosts: Path
    ssh_config: Path
    live_ip: str
    backup_ip: str
    port: int
    # Ceph major version per cluster and, for a version other than the host's (16), the
    # chroot its daemons and its node's sshd run in (BACKURNE_LAB_CEPH_LIVE/BACKUP)
    ceph_versions: tuple[tuple[str, str], ...] = (("live", "16"), ("backup", "16"))
    node_roots: tuple[tuple[str, str], ...] = (("live", ""), ("backup", ""))

    # -- paths ------------------------------------------------------------
    def conf(self, cluster: str) -> Path:
        if cluster == "live":
            return self.live_conf
        if cluster == "backup":
            return self.backup_conf
        raise ValueError(f"unknown cluster {cluster!r}")

    def keyring(self, cluster: str, user: str = "backurne") -> Path:
        return self.conf(cluster).parent / f"ceph.client.{user}.keyring"

    def ip(self, cluster: str) -> str:
        return {"live": self.live_ip, "backup": self.backup_ip}[cluster]

    def ceph_version(self, cluster: str) -> str:
        """The cluster's Ceph major version ("16", "18", "20")."""
        return dict(self.ceph_versions)[cluster]

    def node_argv(self, cluster: str, **env: str) -> list[str]:
        """Prefix running a command where that cluster's node runs its tools, with ``env``.

        The host for Ceph 16; the cluster's chroot otherwise (its rbd, its python3 with its
        python3-rados): what a module on that node would run. The repository is mounted
        read-only at its own path inside.
        """
        root = dict(self.node_roots)[cluster]
        assignments = [f"{key}={value}" for key, value in env.items()]
        if not root:
            return ["env", *assignments]
        clean_env = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
        return ["chroot", root, *clean_env, *assignments]

    # -- local CLI helpers ------------------------------------------------
    def rbd_argv(self, cluster: str, *args: Any, admin: bool = False) -> list[str]:
        user = "admin" if admin else "backurne"
        return ["rbd", "-c", str(self.conf(cluster)), "--id", user, *map(str, args)]

    def ceph_argv(self, cluster: str, *args: Any, admin: bool = True) -> list[str]:
        user = "admin" if admin else "backurne"
        return ["ceph", "-c", str(self.conf(cluster)), "--id", user, *map(str, args)]

    @staticmethod
    def _run(argv: list[str], input: bytes | str | None, timeout: float) -> str:
        if isinstance(input, str):
            input = input.encode()
        try:
            cp = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"{shlex.join(argv)} timed out after {timeout}s") from e
        if cp.returncode != 0:
            raise CommandFailed(cp.returncode, argv, cp.stdout, cp.stderr)
        return cp.stdout.decode("utf-8", "replace")

    def rbd(
        self,
        cluster: str,
        *args: Any,
        admin: bool = False,
        input: bytes | str | None = None,
        timeout: float = 60,
    ) -> str:
        """Run `rbd -c CONF --id backurne|admin ARGS` locally, return stdout."""
        return self._run(self.rbd_argv(cluster, *args, admin=admin), input, timeout)

    def rbd_json(self, cluster: str, *args: Any, **kwargs: Any) -> Any:
        return json.loads(self.rbd(cluster, *args, "--format", "json", **kwargs) or "null")

    def ceph(self, cluster: str, *args: Any, admin: bool = True, timeout: float = 60) -> str:
        """`ceph` CLI (~0.5 s per call: prefer rbd in hot paths)."""
        return self._run(self.ceph_argv(cluster, *args, admin=admin), None, timeout)

    # -- ssh ----------------------------------------------------------------
    def ssh_argv(self, cluster: str) -> list[str]:
        """`ssh -F ssh_config <alias>`: append ONE remote command string."""
        if cluster not in CLUSTERS:
            raise ValueError(f"unknown cluster {cluster!r}")
        return ["ssh", "-F", str(self.ssh_config), cluster]

    def ssh(self, cluster: str, command: str, timeout: float = 60) -> str:
        """Run a remote shell command (build it with shlex.quote)."""
        return self._run([*self.ssh_argv(cluster), command], None, timeout)

    def pipeline(self, *argvs: Sequence[str], input: bytes | None = None, timeout: float = 120) -> PipelineResult:
        return run_pipeline(*argvs, input=input, timeout=timeout)

    # -- data -----------------------------------------------------------------
    def checksum(self, cluster: str, spec: str, admin: bool = False, timeout: float = 300) -> str:
        """xxhsum (XXH64) of `rbd export SPEC -` (SPEC may be img@snap)."""
        res = run_pipeline(
            self.rbd_argv(cluster, "export", "--no-progress", spec, "-", admin=admin),
            ["xxhsum"],
            timeout=timeout,
        ).check()
        return res.stdout.decode().split()[0]

    def write_image(
        self,
        cluster: str,
        spec: str,
        size_mb: int,
        seed: int,
        admin: bool = False,
        timeout: float = 300,
    ) -> None:
        """Create SPEC filled with deterministic pseudo-random data.

        Chunk i (4 MiB) is SHAKE-128("backurne-lab:<seed>:<i>"): same seed,
        same content; incompressible.  Generated one chunk ahead in a thread
        while `rbd import - SPEC` consumes the previous one (1 GiB ~5 s).
        """
        argv = self.rbd_argv(cluster, "import", "--no-progress", "-", spec, admin=admin)
        total = size_mb * MiB
        chunks = [(i, min(4 * MiB, total - off)) for i, off in enumerate(range(0, total, 4 * MiB))]

        def gen(i: int, n: int) -> bytes:
            return hashlib.shake_128(f"backurne-lab:{seed}:{i}".encode()).digest(n)

        with tempfile.TemporaryFile() as err, ThreadPoolExecutor(max_workers=1) as ex:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
            watchdog = threading.Timer(timeout, p.kill)  # a stuck rbd blocks write()
            watchdog.start()
            try:
                nxt = ex.submit(gen, *chunks[0]) if chunks else None
                for k in range(len(chunks)):
                    data = nxt.result()  # type: ignore[union-attr]
                    if k + 1 < len(chunks):
                        nxt = ex.submit(gen, *chunks[k + 1])
                    p.stdin.write(data)  # type: ignore[union-attr]
                p.stdin.close()  # type: ignore[union-attr]
                rc = p.wait(timeout=timeout)
            except BrokenPipeError:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise TimeoutError(f"{shlex.join(argv)} timed out after {timeout}s") from None
            finally:
                watchdog.cancel()
            if rc != 0:
                err.seek(0)
                raise CommandFailed(rc, argv, b"", err.read())

    def overwrite(
        self,
        cluster: str,
        spec: str,
        fraction: float,
        seed: int,
        block: int = 64 * 1024,
        admin: bool = False,
        timeout: float = 300,
    ) -> int:
        """Overwrite ~fraction of SPEC in random BLOCK-sized blocks.

        Deterministic (seeded): builds a diff stream of writes and feeds it to
        `rbd import-diff - SPEC`.  Returns the number of bytes rewritten.
        """
        size = int(self.rbd_json(cluster, "info", spec, admin=admin)["size"])
        nblocks = size // block
        count = max(1, round(nblocks * fraction))
        rng = random.Random(seed)
        offsets = sorted(rng.sample(range(nblocks), count))
        stream = diff_stream([(o * block, rng.randbytes(block)) for o in offsets], size=size)
        self.rbd(cluster, "import-diff", "--no-progress", "-", spec, admin=admin, input=stream, timeout=timeout)
        return count * block

    # -- namespaces -------------------------------------------------------------
    def purge_namespace(self, cluster: str, namespace: str) -> None:
        """Remove every image (snapshots, clones, trash) of POOL/NAMESPACE, then it."""
        where = ["--pool", POOL, "--namespace", namespace]
        existing = self.rbd_json(cluster, "namespace", "ls", POOL, admin=True) or []
        if namespace not in {n["name"] for n in existing}:
            return
        for entry in self.rbd_json(cluster, "trash", "ls", *where, admin=True) or []:
            self.rbd(cluster, "trash", "restore", *where, "--image-id", entry["id"], admin=True)
        errors: list[str] = []
        for _ in range(5):  # clones before their parents: retry in rounds
            images = self.rbd_json(cluster, "ls", *where, admin=True) or []
            if not images:
                break
            errors = []
            for name in images:
                img = f"{POOL}/{namespace}/{name}"
                try:
                    for snap in self.rbd_json(cluster, "snap", "ls", img, admin=True) or []:
                        if str(snap.get("protected")).lower() == "true":
                            self.rbd(cluster, "snap", "unprotect", f"{img}@{snap['name']}", admin=True)
                    self.rbd(cluster, "snap", "purge", "--no-progress", img, admin=True)
                    self.rbd(cluster, "rm", "--no-progress", img, admin=True)
                except CommandFailed as e:
                    errors.append(str(e))
        if errors:
            raise RuntimeError(f"{cluster}: could not empty {POOL}/{namespace}: {errors}")
        self.rbd(cluster, "namespace", "rm", f"{POOL}/{namespace}", admin=True)


def _lab_dir() -> Path:
    return Path(os.environ.get("BACKURNE_LAB_DIR", "/tmp/backurne-lab"))


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The running lab (started by `tests/lab/lab.sh up`, a no-op if it runs)."""
    try:
        cp = subprocess.run(
            [str(LAB_SH), "up"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LAB_UP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{LAB_SH} up did not finish within {LAB_UP_TIMEOUT}s", pytrace=False)
    if cp.returncode != 0:
        pytest.fail(
            f"{LAB_SH} up failed (rc={cp.returncode}):\n{cp.stdout}\n{cp.stderr[-8000:]}",
            pytrace=False,
        )
    facts = json.loads((_lab_dir() / "lab.json").read_text())
    return Lab(
        lab_dir=Path(facts["lab_dir"]),
        live_conf=Path(facts["live_conf"]),
        backup_conf=Path(facts["backup_conf"]),
        ssh_key=Path(facts["ssh_key"]),
        known_hosts=Path(facts["known_hosts"]),
        ssh_config=Path(facts["ssh_config"]),
        live_ip=facts["live_ip"],
        backup_ip=facts["backup_ip"],
        port=int(facts["ssh_port"]),
        ceph_versions=tuple((c, str(facts["clusters"][c].get("ceph", "16"))) for c in CLUSTERS),
        node_roots=tuple((c, str(facts["clusters"][c].get("root", ""))) for c in CLUSTERS),
    )


@pytest.fixture
def ns(lab: Lab) -> Any:
    """A fresh rbd namespace `t-<uuid8>` in pool rbd on BOTH clusters."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    created = []
    try:
        for cluster in CLUSTERS:
            lab.rbd(cluster, "namespace", "create", f"{POOL}/{name}", admin=True)
            created.append(cluster)
        yield name
    finally:
        errors = []
        with ThreadPoolExecutor(max_workers=2) as pool:  # both clusters at once
            futures = {c: pool.submit(lab.purge_namespace, c, name) for c in created}
            for cluster, fut in futures.items():
                try:
                    fut.result()
                except Exception as e:  # report all clusters, not just the first
                    errors.append(f"{cluster}: {e}")
        if errors:
            raise RuntimeError("namespace teardown failed: " + "; ".join(errors))
