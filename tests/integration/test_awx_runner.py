# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The backup and a restore run the way AWX runs a job: ansible-runner on a private data dir
(project/, inventory/, env/extravars, env/envvars), results read back from the job events and the
artifacts (artifacts/<ident>/job_events, the set_stats artifact data). The Prometheus textfile is
written on the backup node and node_exporter's user (`nobody` here) can read it; a failed image
keeps its last success (docs/awx.md)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
import yaml
from playbook_helpers import (
    REPO,
    T_TRANSFER,
    backup_image,
    checksum,
    cluster_name,
    day,
    iso,
    make_inventory,
    snaps,
    spec,
)

from ansible_collections.backurne.rbd.plugins.module_utils.report.history import History

T_RESTORE = "Restore the snapshot as a new image"
IMAGES = ("awx1", "awx2")
# What a project's ansible.cfg holds under AWX (docs/awx.md): the report table in the job output.
PROJECT_CFG = """[defaults]
callbacks_enabled = backurne.rbd.report
host_key_checking = True
forks = 10
retry_files_enabled = False
[ssh_connection]
pipelining = True
"""


class Job:
    """One AWX-style job: the runner's result, its events, and its artifacts directory."""

    def __init__(self, runner: Any, artifacts: Path) -> None:
        self.rc = runner.rc
        self.status = runner.status
        self.events = list(runner.events)
        self.artifacts = artifacts

    def ok_results(self, task: str) -> list[dict[str, Any]]:
        return [
            event["event_data"]["res"]
            for event in self.events
            if event["event"] == "runner_on_ok" and event["event_data"].get("task") == task
        ]

    def artifact_data(self) -> dict[str, Any]:
        (stats,) = [event for event in self.events if event["event"] == "playbook_on_stats"]
        return stats["event_data"].get("artifact_data") or {}

    def describe(self) -> str:
        lines = [event.get("stdout", "") for event in self.events]
        return f"rc={self.rc} status={self.status}\n" + "\n".join(line for line in lines if line)[-6000:]


@pytest.fixture
def textfile_dir() -> Iterator[Path]:
    # node_exporter's textfile directory on the backup node (the lab's nodes share this host's
    # filesystem): one `nobody` may enter, unlike pytest's private tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="backurne-textfile-", dir="/tmp"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory)


def private_data_dir(root: Path, inventory: dict[str, Any], lab: Any) -> Path:
    """project/ (the playbooks, as AWX checks out the project), inventory/, env/envvars."""
    pdd = root / "pdd"
    project = pdd / "project"
    shutil.copytree(REPO / "playbooks", project / "playbooks")
    (project / "ansible.cfg").write_text(PROJECT_CFG)
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (pdd / "env").mkdir()
    envvars = {
        # The EE has the collection installed; here it is the repository's.
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        # What a credential's injector would set: where the lab's nodes are.
        "BACKURNE_LAB_DIR": str(lab.lab_dir),
        "BACKURNE_LAB_LIVE_IP": lab.live_ip,
        "BACKURNE_LAB_BACKUP_IP": lab.backup_ip,
    }
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    return pdd


def run_job(pdd: Path, playbook: str, ident: str, extravars: dict[str, Any]) -> Job:
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    runner = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, ident=ident, quiet=True, timeout=300)
    return Job(runner, pdd / "artifacts" / ident)


def job_event_files(job: Job) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((job.artifacts / "job_events").glob("*.json"))]


def samples(text: str, metric: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('image="', 1)[1].split('"', 1)[0]] = float(value)
    return found


def read_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")
    return subprocess.run(
        ["cat", str(path)],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(autouse=True)
def awx_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # AWX's job environment holds no ANSIBLE_* of this shell: the project's ansible.cfg and the
    # envvars decide.
    for key in list(os.environ):
        if key.startswith("ANSIBLE_"):
            monkeypatch.delenv(key)


def test_backup_restore_and_a_failed_run_as_awx_runs_them(lab, ns, tmp_path: Path, textfile_dir: Path) -> None:
    for seed, image in enumerate(IMAGES):
        lab.write_image("live", spec(ns, image), 4, seed=300 + seed, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 3}})
    name = cluster_name(inv)
    prom = textfile_dir / "backurne.prom"
    pdd = private_data_dir(tmp_path, inv, lab)

    # -- the backup ----------------------------------------------------------------------------
    backup = run_job(
        pdd, "playbooks/backup.yml", "backup", {"backurne_now": iso(day(0)), "backurne_prometheus_file": str(prom)}
    )
    assert (backup.rc, backup.status) == (0, "successful"), backup.describe()
    (transfer,) = backup.ok_results(T_TRANSFER)
    sent = {item["image"]: item for item in transfer["images"]}
    assert {image: sent[image]["status"] for image in IMAGES} == dict.fromkeys(IMAGES, "transferred")
    for image in IMAGES:
        assert sent[image]["snapshots"] == snaps(lab, "backup", ns, backup_image(name, image))

    artifacts = backup.artifact_data()
    summary, records = artifacts["backurne_summary"], artifacts["backurne_images"]
    assert (summary["transferred"], summary["failed"], summary["ok"]) == (2, 0, True), artifacts
    assert {rec["image"]: rec["status"] for rec in records} == dict.fromkeys(IMAGES, "transferred")
    assert {rec["image"]: rec["snapshots"] for rec in records} == {image: sent[image]["snapshots"] for image in IMAGES}
    # The same, as AWX reads them back from the artifacts directory.
    on_disk = job_event_files(backup)
    assert len(on_disk) == len(backup.events)
    (stats_file,) = [event for event in on_disk if event["event"] == "playbook_on_stats"]
    assert stats_file["event_data"]["artifact_data"] == artifacts
    assert (backup.artifacts / "rc").read_text().strip() == "0"
    assert (backup.artifacts / "status").read_text().strip() == "successful"
    # The report callback's table is in the job's output (stdout), as AWX shows it.
    assert "BACKURNE REPORT" in (backup.artifacts / "stdout").read_text()

    # The textfile on the backup node: 0644, readable by node_exporter's user, every image.
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    read = read_as_nobody(prom)
    assert read.returncode == 0, read.stderr
    first_success = samples(read.stdout, "backurne_image_last_success_timestamp_seconds")
    assert set(first_success) == set(IMAGES)
    assert first_success == {rec["image"]: rec["last_success"] for rec in records}
    assert samples(read.stdout, "backurne_image_failed") == dict.fromkeys(IMAGES, 0)

    # -- a restore -----------------------------------------------------------------------------
    restore = run_job(
        pdd,
        "playbooks/restore.yml",
        "restore",
        {"backurne_restore_image": {"cluster": name, "image": "awx1"}, "backurne_restore_target_image": "awx1-back"},
    )
    assert (restore.rc, restore.status) == (0, "successful"), restore.describe()
    (result,) = restore.ok_results(T_RESTORE)
    (item,) = result["restores"]
    assert item["status"] == "restored" and item["target"] == f"rbd/{ns}/awx1-back"
    (snapshot,) = snaps(lab, "backup", ns, backup_image(name, "awx1"))
    restored = checksum(lab, "live", ns, "awx1-back")
    assert restored == checksum(lab, "backup", ns, backup_image(name, "awx1"), snapshot) == item["checksum_target"]
    assert restore.artifact_data()["backurne_restores"] == result["restores"]

    # -- a failed run: the backup node cannot reach the live node (ssh port 1) -----------------
    broken = yaml.safe_load((pdd / "inventory" / "hosts.yml").read_text())
    broken["all"]["children"]["backup_nodes"]["hosts"]["lab-backup"]["backurne_backup"]["ssh"]["port"] = 1
    (pdd / "inventory" / "hosts.yml").write_text(yaml.safe_dump(broken, sort_keys=False))
    failed = run_job(
        pdd,
        "playbooks/backup.yml",
        "backup-failed",
        {"backurne_now": iso(day(1)), "backurne_prometheus_file": str(prom)},
    )
    assert failed.rc != 0 and failed.status == "failed", failed.describe()
    # Every live image of the namespace failed: the two, and the restored one (new to backups).
    live = [*IMAGES, "awx1-back"]
    summary = failed.artifact_data()["backurne_summary"]
    assert (summary["failed"], summary["ok"]) == (len(live), False)
    assert sorted(summary["failed_images"]) == sorted(f"rbd/{ns}/{image}" for image in live)
    text = read_as_nobody(prom).stdout
    assert samples(text, "backurne_image_failed") == dict.fromkeys(live, 1)
    # Each failed image keeps a last_success sample: its last successful transfer (history), or
    # 0 for the one never backed up.
    with History(str(lab.lab_dir / "state")) as history:
        states = history.transfer_states([backup_image(name, image) for image in live])
    assert states[backup_image(name, "awx1-back")].last_success is None
    remembered = {
        image: round(states[backup_image(name, image)].last_success.replace(tzinfo=UTC).timestamp(), 3)  # type: ignore[union-attr]
        for image in IMAGES
    }
    assert samples(text, "backurne_image_last_success_timestamp_seconds") == {**remembered, "awx1-back": 0.0}
    assert all(0 < remembered[image] <= first_success[image] for image in IMAGES)
