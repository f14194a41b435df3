"""Shared helpers of the benchmarks: the lab's facts, rbd/ssh argv, pipelines, checksums, cleanup.

Everything runs against the two-cluster lab (tests/lab/lab.sh). Fixture work (creating and
removing images, writing chosen bytes, checksums) uses the admin key; what is measured uses
the restricted client.backurne, as the product does.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
LAB_SH = REPO / "tests" / "lab" / "lab.sh"
POOL = "rbd"
CLUSTERS = ("live", "backup")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: the only one with python3-rbd / python3-rados
BULK = BENCH / "rbd_bulk.py"
MiB = 1024 * 1024
GiB = 1024 * MiB


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Lab:
    lab_dir: Path
    live_conf: Path
    backup_conf: Path
    live_ip: str
    backup_ip: str
    ssh_port: int
    ssh_key: Path
    known_hosts: Path

    @classmethod
    def load(cls) -> Lab:
        lab_dir = Path(os.environ.get("BACKURNE_LAB_DIR", "/tmp/backurne-lab"))
        facts_path = lab_dir / "lab.json"
        if not facts_path.exists():
            raise BenchError(f"{facts_path} missing: start the lab with {LAB_SH} up")
        facts = json.loads(facts_path.read_text())
        return cls(
            lab_dir=Path(facts["lab_dir"]),
            live_conf=Path(facts["live_conf"]),
            backup_conf=Path(facts["backup_conf"]),
            live_ip=facts["live_ip"],
            backup_ip=facts["backup_ip"],
            ssh_port=int(facts["ssh_port"]),
            ssh_key=Path(facts["ssh_key"]),
            known_hosts=Path(facts["known_hosts"]),
        )

    def conf(self, cluster: str) -> Path:
        return {"live": self.live_conf, "backup": self.backup_conf}[cluster]

    def product_runners(self, control_dir: Path) -> tuple[Any, Any]:
        """(live, backup): the product's RbdRunners as the transfer module builds them on the lab.

        The live node over ssh with the lab inventory's options (lab_ssh_cipher(), a ControlMaster
        in `control_dir`), the backup node local. The caller has put the collection on sys.path.
        """
        from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import (
            CephAccess,
            RbdRunner,
            SshTarget,
        )

        ssh = SshTarget(
            host=self.live_ip,
            user="root",
            port=self.ssh_port,
            identity_file=str(self.ssh_key),
            known_hosts_file=str(self.known_hosts),
            cipher=lab_ssh_cipher(),
            control_master=True,
            control_dir=str(control_dir),
        )

        def access(cluster: str) -> Any:
            return CephAccess(
                ceph_client="backurne", keyring=str(self.keyring(cluster)), ceph_conf=str(self.conf(cluster))
            )

        return RbdRunner(access("live"), ssh=ssh), RbdRunner(access("backup"))

    def keyring(self, cluster: str, user: str = "backurne") -> Path:
        return self.conf(cluster).parent / f"ceph.client.{user}.keyring"

    def rbd_argv(self, cluster: str, *args: str, admin: bool = False) -> list[str]:
        user = "admin" if admin else "backurne"
        return ["rbd", "-c", str(self.conf(cluster)), "--id", user, *args]

    def rbd(self, cluster: str, *args: str, admin: bool = True, stdin: IO[bytes] | None = None) -> str:
        return run(self.rbd_argv(cluster, *args, admin=admin), stdin=stdin)

    def checksum(self, cluster: str, spec: str) -> str:
        """xxhsum (XXH64) of `rbd export SPEC -`, computed here with the admin key."""
        out = run_pipeline([self.rbd_argv(cluster, "export", "--no-progress", spec, "-", admin=True), ["xxhsum"]])
        return out.split()[0]

    def bulk(self, *args: str, timeout: float = 1800) -> Any:
        """Run bench/rbd_bulk.py (python3-rbd, in process) with the system python; its JSON answer."""
        argv = [SYSTEM_PYTHON, str(BULK), *args]
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if cp.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} exited {cp.returncode}: {cp.stdout[-1500:]} {cp.stderr[-1500:]}")
        return json.loads(cp.stdout)

    def create_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        for cluster in CLUSTERS:
            self.rbd(cluster, "namespace", "create", f"{POOL}/{name}")
        return name

    def purge_namespace(self, namespace: str) -> None:
        """Remove every image (and snapshot) of POOL/namespace on both clusters, then the namespace."""
        errors = []
        for cluster in CLUSTERS:
            try:
                self.bulk("purge", "--conf", str(self.conf(cluster)), "--namespace", namespace)
            except Exception as exc:  # clean the other cluster anyway; report both
                errors.append(f"{cluster}: {exc}")
        if errors:
            raise BenchError(f"could not remove namespace {POOL}/{namespace}: {'; '.join(errors)}")


def lab_ssh_cipher() -> str | None:
    """The cipher the product uses from the backup node to the live node on the lab: the lab
    inventory's `backurne_backup.ssh.cipher` (None: OpenSSH's default). Every raw pipe of the
    benchmarks uses it too, so that both sides of a ratio do the same work."""
    import yaml  # the venv's; only the benchmarks that compare against a raw pipe need it

    hosts = yaml.safe_load((REPO / "inventories" / "lab" / "hosts.yml").read_text())
    for host in hosts["all"]["children"]["backup_nodes"]["hosts"].values():
        cipher = ((host.get("backurne_backup") or {}).get("ssh") or {}).get("cipher")
        return str(cipher) if cipher else None
    return None


def lab_up() -> None:
    started = time.monotonic()
    cp = subprocess.run([str(LAB_SH), "up"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
    if cp.returncode != 0:
        raise BenchError(f"{LAB_SH} up failed (rc={cp.returncode}):\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    log(f"lab up ({time.monotonic() - started:.1f} s)")


def run(argv: Sequence[str], *, stdin: IO[bytes] | None = None, timeout: float = 600) -> str:
    cp = subprocess.run(
        list(argv),
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    if cp.returncode != 0:
        err = cp.stderr.decode("utf-8", "replace").strip()
        raise BenchError(f"{shlex.join(argv)} exited {cp.returncode}: {err[-2000:]}")
    return cp.stdout.decode("utf-8", "replace")


def run_pipeline(argvs: Sequence[Sequence[str]], *, stdin: IO[bytes] | None = None, timeout: float = 600) -> str:
    """argv1 | argv2 | … without a shell, every stage's status checked, stderr never in the stream."""
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in argvs]
        upstream: Any = stdin if stdin is not None else subprocess.DEVNULL
        try:
            for index, argv in enumerate(argvs):
                proc = subprocess.Popen(list(argv), stdin=upstream, stdout=subprocess.PIPE, stderr=errs[index])
                if procs and procs[-1].stdout is not None:
                    procs[-1].stdout.close()  # only the next stage holds the read end
                procs.append(proc)
                upstream = proc.stdout
            out, _ = procs[-1].communicate(timeout=timeout)
            for proc in procs[:-1]:
                proc.wait(timeout=timeout)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        failed = []
        for argv, proc, err in zip(argvs, procs, errs, strict=True):
            if proc.returncode != 0:
                err.seek(0)
                text = err.read().decode("utf-8", "replace").strip()[-1000:]
                failed.append(f"[rc={proc.returncode}] {shlex.join(argv)}: {text}")
        if failed:
            raise BenchError("pipeline failed:\n" + "\n".join(failed))
    return out.decode("utf-8", "replace")


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
    }


def machine_line() -> str:
    facts = machine()
    return f"{facts['date']}; nproc {facts['nproc']}; {facts['cpu']}; RAM {facts['memory']}; kernel {facts['kernel']}"
