"""playbooks/check.yml and scripts/backurne-check (Nagios conventions) on the real lab."""

from __future__ import annotations

import copy
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from playbook_helpers import (
    ANSIBLE_PLAYBOOK,
    REPO,
    T_TRANSFER,
    assert_ok,
    backup_image,
    cluster_name,
    images,
    iso,
    make_inventory,
    run_backup,
    snaps,
    spec,
)
from test_proxmox_backup import UUID100, expected_images, pve  # noqa: F401 - pve is a fixture

SCRIPT = REPO / "scripts" / "backurne-check"
PROFILES = {"daily": {"count": 7}}


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    )
    return env


def _inventory_file(inventory: dict, workdir: Path) -> Path:
    path = workdir / "check-hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def run_check(inventory: dict, workdir: Path, *extra: str) -> tuple[int, str, int, str]:
    """ansible-playbook check.yml: (rc, output, status from the output file, line from it)."""
    out = workdir / "check-status.txt"
    out.unlink(missing_ok=True)
    argv = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        str(_inventory_file(inventory, workdir)),
        str(REPO / "playbooks" / "check.yml"),
        "-e",
        f"backurne_check_output={out}",
        *extra,
    ]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert out.exists(), output
    status, line = out.read_text().splitlines()
    return done.returncode, output, int(status), line


def run_script(inventory: dict, workdir: Path, *extra: str) -> tuple[int, str]:
    """scripts/backurne-check: (exit code, its whole stdout)."""
    argv = [str(SCRIPT), "-i", str(_inventory_file(inventory, workdir)), *extra]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout


def test_healthy_then_an_image_never_backed_up(lab, ns, tmp_path: Path) -> None:
    for seed, name in enumerate(("web", "db")):
        lab.write_image("live", spec(ns, name), 4, seed=60 + seed, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    name = cluster_name(inv)
    assert_ok(run_backup(inv, tmp_path))  # real clock: the snapshots are fresh

    rc, stdout = run_script(inv, tmp_path)
    assert (rc, stdout) == (0, "BACKURNE OK - 2 images checked\n")

    # Created just now: its first backup window (1 d x 1.25) has not passed, not reported.
    lab.rbd("live", "create", "--size=4M", spec(ns, "fresh"), admin=True)
    rc, output, status, line = run_check(inv, tmp_path)
    assert (rc, status, line) == (0, 0, "BACKURNE OK - 3 images checked"), output

    # Three days later it is critical, and so are the backups that stopped.
    later = iso(datetime.now(UTC).replace(tzinfo=None) + timedelta(days=3))
    rc, output, status, line = run_check(inv, tmp_path, "-e", f"backurne_now={later}")
    assert rc != 0 and status == 2, output
    assert line.startswith("BACKURNE CRITICAL - 3 critical, 0 warning of 3 images: "), line
    assert f"{name}/fresh no backup (created 3d ago)" in line
    assert f"{name}/web newest daily backup 3d old (limit 1d6h)" in line

    rc, stdout = run_script(inv, tmp_path, "-e", f"backurne_now={later}")
    assert rc == 2 and stdout == line + "\n"


def test_no_shared_snapshot_is_critical(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "web"), 4, seed=70, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    assert_ok(run_backup(inv, tmp_path))
    assert run_check(inv, tmp_path)[2] == 0

    # The backup's only snapshot is removed; an older one of ours (not on live) remains.
    bimage = backup_image(cluster_name(inv), "web")
    (shared,) = snaps(lab, "backup", ns, bimage)
    older = "backup;daily;7;" + (datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=2)).isoformat(
        timespec="microseconds"
    )
    lab.rbd("backup", "snap", "create", spec(ns, bimage, older), admin=True)
    lab.rbd("backup", "snap", "rm", "--no-progress", spec(ns, bimage, shared), admin=True)

    rc, stdout = run_script(inv, tmp_path)
    assert rc == 2, stdout
    assert stdout.startswith("BACKURNE CRITICAL - 1 critical, 0 warning of 1 image: ")
    assert f"{cluster_name(inv)}/web no snapshot shared with backup" in stdout


def test_unreachable_live_node_is_unknown(lab, ns, tmp_path: Path) -> None:
    inv = make_inventory(lab, ns, profiles=PROFILES)
    live = inv["all"]["children"]["live_clusters"]["hosts"]["lab-live"]
    live["ansible_host"] = "127.0.0.99"  # nothing listens there
    rc, stdout = run_script(inv, tmp_path)
    assert rc == 3, stdout
    assert stdout.startswith("BACKURNE UNKNOWN - "), stdout


def test_failed_transfer_is_reported_between_runs(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "web"), 4, seed=80, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    name = cluster_name(inv)
    assert_ok(run_backup(inv, tmp_path))
    assert run_script(inv, tmp_path) == (0, "BACKURNE OK - 1 image checked\n")

    # The backup node cannot reach the live node: the forced snapshot is taken, its transfer fails.
    broken = copy.deepcopy(inv)
    broken["all"]["children"]["backup_nodes"]["hosts"]["lab-backup"]["backurne_backup"]["ssh"]["port"] = 1
    run = run_backup(broken, tmp_path, extra_vars={"backurne_force": True})
    assert run.rc != 0 and run.image(T_TRANSFER, "web")["status"] == "failed", run.describe()

    # The backups are still recent: only the history tells.
    rc, stdout = run_script(inv, tmp_path)
    assert rc == 2, stdout
    assert stdout.startswith(f"BACKURNE CRITICAL - 1 critical, 0 warning of 1 image: {name}/web last transfer failed ")
    assert "ssh" in stdout

    # The next run sends the pending snapshot: healthy again.
    assert_ok(run_backup(inv, tmp_path))
    assert run_script(inv, tmp_path) == (0, "BACKURNE OK - 1 image checked\n")


def test_faded_out_backup_kept_past_its_time(lab, ns, tmp_path: Path) -> None:
    # "gone" was backed up 10 days ago (daily x 7: expired 3 days ago), then removed on live.
    lab.write_image("live", spec(ns, "gone"), 4, seed=81, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    name = cluster_name(inv)
    ten_days_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=10)
    assert_ok(run_backup(inv, tmp_path, now=ten_days_ago))
    lab.rbd("live", "snap", "purge", "--no-progress", spec(ns, "gone"), admin=True)
    lab.rbd("live", "rm", "--no-progress", spec(ns, "gone"), admin=True)
    # A healthy image, backed up now, without the cleanup that would remove "gone".
    lab.write_image("live", spec(ns, "web"), 4, seed=82, admin=True)
    assert_ok(run_backup(inv, tmp_path, extra_vars={"backurne_skip_cleanup": True}))
    assert backup_image(name, "gone") in images(lab, "backup", ns)

    rc, output, status, line = run_check(inv, tmp_path)
    assert (rc != 0, status) == (True, 2), output
    assert line.startswith(
        f"BACKURNE CRITICAL - 1 critical, 0 warning of 1 image: {name}/{name};gone;None source image gone, kept 3d past"
    ), line
    # Within extra_retention_time it is fine.
    rc, output, status, line = run_check(inv, tmp_path, "-e", "backurne_extra_retention_time=7d")
    assert (rc, status, line) == (0, 0, "BACKURNE OK - 1 image checked"), output


def test_proxmox_guests_are_checked_under_their_backup_names(pve, tmp_path: Path) -> None:  # noqa: F811
    """check.yml on a Proxmox cluster (stand-in API, disks on two live Ceph endpoints)."""
    inv = pve.inventory(plain=False)
    assert_ok(run_backup(inv, tmp_path))  # real clock
    rc, output, status, line = run_check(inv, tmp_path)
    assert (rc, status) == (0, 0), output
    assert line == f"BACKURNE OK - {len(expected_images())} images checked", output
    # web1's scsi0 loses its shared snapshot on the backup side: found under its IDENT;DISK;VMNAME.
    web = f"{UUID100};scsi0;web1"
    (snap,) = pve.backup_images()[web]
    older = "backup;daily;7;" + (datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=2)).isoformat(
        timespec="microseconds"
    )
    pve.lab.rbd("backup", "snap", "create", f"rbd/{pve.ns}/{web}@{older}", admin=True)
    pve.lab.rbd("backup", "snap", "rm", "--no-progress", f"rbd/{pve.ns}/{web}@{snap}", admin=True)
    rc, output, status, line = run_check(inv, tmp_path)
    assert status == 2, output
    # The line carries the summary of the endpoint with findings (lab-pve: every disk but ceph-b's one).
    on_lab_pve = len(expected_images()) - 1
    assert line.startswith(f"BACKURNE CRITICAL - 1 critical, 0 warning of {on_lab_pve} images: "), line
    assert f"{pve.pve_name}/vm-100-disk-0 no snapshot shared with backup" in line, line
