"""playbooks/verify.yml on the real lab: equal backups pass, a tampered backup snapshot is caught."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from playbook_helpers import (
    ANSIBLE_PLAYBOOK,
    REPO,
    assert_ok,
    backup_image,
    cluster_name,
    day,
    make_inventory,
    run_backup,
    snaps,
    spec,
)


def run_verify(inventory: dict, workdir: Path) -> tuple[int, str, dict]:
    inv_path, report = workdir / "verify-hosts.yml", workdir / "verify-report.json"
    inv_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_NOCOLOR="1",
        BACKURNE_REPORT_JSON=str(report),
    )
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inv_path), str(REPO / "playbooks" / "verify.yml")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr, json.loads(report.read_text())


def test_verify_passes_then_catches_a_tampered_backup(lab, ns, tmp_path: Path) -> None:
    for seed, name in enumerate(("good", "tampered")):
        lab.write_image("live", spec(ns, name), 8, seed=40 + seed, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 3}})
    assert_ok(run_backup(inv, tmp_path, now=day(0)))

    rc, output, report = run_verify(inv, tmp_path)
    assert rc == 0, output
    assert {rec["image"]: rec["status"] for rec in report["images"]} == {"good": "verified", "tampered": "verified"}

    # Tamper with the backup: same snapshot name, different content.
    bimage = backup_image(cluster_name(inv), "tampered")
    (snap,) = snaps(lab, "backup", ns, bimage)
    lab.overwrite("backup", spec(ns, bimage), 0.05, seed=99, admin=True)
    lab.rbd("backup", "snap", "rm", "--no-progress", spec(ns, bimage, snap), admin=True)
    lab.rbd("backup", "snap", "create", spec(ns, bimage, snap), admin=True)

    rc, output, report = run_verify(inv, tmp_path)
    assert rc != 0
    assert "tampered" in output and "checksums differ" in output
    statuses = {rec["image"]: rec["status"] for rec in report["images"]}
    assert statuses == {"good": "verified", "tampered": "failed"}
