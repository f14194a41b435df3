"""The collection as a user gets it: the tarball `make build` makes, installed with
`ansible-galaxy collection install` into an EMPTY collections path, runs
`ansible-playbook backurne.rbd.backup` against the lab from a directory outside the repository,
with neither the repository's collections nor its ansible.cfg in sight."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from playbook_helpers import backup_image, checksum, make_inventory, snaps, spec

VENV_BIN = Path(sys.executable).parent


def _isolated_env(home: Path, collections: Path, config: Path) -> dict[str, str]:
    """The caller's environment minus anything that leads to the repository's collection."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ANSIBLE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PWD")
    }
    env.update(
        {
            "HOME": str(home),  # no ~/.ansible collections or config of whoever runs the tests
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        }
    )
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def short_home() -> Iterator[Path]:
    """A HOME of its own, short: ssh's ControlPath socket (~/.ansible/cp/...) must fit in 108 bytes."""
    home = Path(tempfile.mkdtemp(prefix="bkg-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_built_tarball_installed_alone_backs_up_the_lab(lab, ns, tmp_path: Path, short_home: Path) -> None:
    # 1. The tarball, built the way `make build` builds it.
    built = subprocess.run(["make", "-s", "build"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = (REPO / "build").glob("backurne-rbd-*.tar.gz")

    # 2. An empty collections path, a home and a working directory of their own, a config that
    #    names only that path (interpreter and host key checking as a user would set them).
    work = tmp_path / "site"
    collections = work / "collections"
    home = short_home
    collections.mkdir(parents=True)
    config = work / "ansible.cfg"
    config.write_text(
        f"[defaults]\ncollections_path = {collections}\ninterpreter_python = /usr/bin/python3\n"
        "host_key_checking = True\nretry_files_enabled = False\n"
    )
    env = _isolated_env(home, collections, config)
    installed = _run(
        ["ansible-galaxy", "collection", "install", "--offline", "-p", str(collections), str(tarball)], env, work, 300
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = _run(["ansible-galaxy", "collection", "list", "backurne.rbd", "--format", "json"], env, work, 120)
    assert listed.returncode == 0, listed.stderr
    assert list(json.loads(listed.stdout)) == [str(collections / "ansible_collections")]
    installed_root = collections / "ansible_collections" / "backurne" / "rbd"
    for shipped in (
        "playbooks/backup.yml",
        "playbooks/tasks/backup_cluster.yml",
        "LICENSE",
        "meta/execution-environment.yml",
    ):
        assert (installed_root / shipped).is_file(), shipped

    # 3. The lab inventory, rendered into the directory (namespace ns on both clusters).
    inventory = make_inventory(lab, ns)
    inventory_file = work / "hosts.yml"
    inventory_file.write_text(yaml.safe_dump(inventory))
    lab.write_image("live", spec(ns, "galaxy1"), 8, seed=1515, admin=True)

    # 4. The playbook by its collection name, as a user of the installed collection runs it.
    ran = _run(["ansible-playbook", "-i", str(inventory_file), "backurne.rbd.backup"], env, work, 900)
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-3000:]
    assert "failed=0" in ran.stdout and "unreachable=0" in ran.stdout, ran.stdout[-3000:]

    # 5. The backup exists on the backup cluster, equal to the live snapshot by checksum.
    cluster = inventory["all"]["children"]["live_clusters"]["hosts"]["lab-live"]["backurne_live"]["name"]
    bimage = backup_image(cluster, "galaxy1")
    live_snaps = snaps(lab, "live", ns, "galaxy1")
    backup_snaps = snaps(lab, "backup", ns, bimage)
    assert live_snaps and live_snaps[-1] in backup_snaps, (live_snaps, backup_snaps)
    assert checksum(lab, "backup", ns, bimage, live_snaps[-1]) == checksum(lab, "live", ns, "galaxy1", live_snaps[-1])
