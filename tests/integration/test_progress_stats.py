"""Progress of a real transfer (status file) and the stats module, on the lab."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from playbook_helpers import (
    ANSIBLE_PLAYBOOK,
    REPO,
    T_TRANSFER,
    assert_ok,
    backup_image,
    cluster_name,
    make_inventory,
    run_backup,
    spec,
)

from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import read_status

IMAGE_MB = 256
STATS_PLAYBOOK = """
- name: Stats of the backup pool
  hosts: backup_nodes[0]
  gather_facts: false
  tasks:
    - name: Space used by the backups
      vars:
        cfg: "{{ backurne_backup }}"
      backurne.rbd.stats:
        ceph_client: "{{ cfg.ceph.ceph_client }}"
        ceph_conf: "{{ cfg.ceph.ceph_conf }}"
        keyring: "{{ cfg.ceph.keyring }}"
        pool: "{{ cfg.pool }}"
        namespace: "{{ cfg.namespace }}"
      register: usage
      check_mode: true

    - name: Hand the result to the test
      ansible.builtin.copy:
        content: "{{ usage | to_json }}"
        dest: "{{ stats_out }}"
        mode: "0644"
      delegate_to: localhost
"""


class StatusPoller(threading.Thread):
    """Reads the state directory's status files every 50 ms, keeping the rows of one image."""

    def __init__(self, directory: Path, image: str) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.image = image
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for row in read_status(str(self.directory)):
                if row["image"] == self.image and (not self.samples or row != self.samples[-1]):
                    self.samples.append(row)
            time.sleep(0.05)


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    )
    return env


def test_status_file_during_a_transfer_then_stats(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "big"), IMAGE_MB, seed=310, admin=True)
    lab.rbd("live", "create", "--size=8M", spec(ns, "empty"), admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    bimage = backup_image(cluster_name(inv), "big")
    state_dir = Path(lab.lab_dir) / "state"  # backurne_state_dir of the lab inventory

    poller = StatusPoller(state_dir, "big")
    poller.start()
    try:
        # The size estimate starts only for a transfer still running after 1 s, and a quiet
        # machine moves 256 MiB in about 1 s: the bandwidth limit makes it last >= 3 s anywhere.
        run = assert_ok(run_backup(inv, tmp_path, extra_vars={"backurne_bwlimit": "64M"}))
    finally:
        poller.stop.set()
        poller.join()
    sent = run.image(T_TRANSFER, "big")
    assert sent["status"] == "transferred", sent

    # While it ran: the image, its destination and snapshot, a growing count, the expected size.
    samples = poller.samples
    done = [row["bytes_done"] for row in samples]
    print(f"{len(samples)} samples over {samples[-1]['updated'] - samples[0]['started']:.1f} s: {done}")
    assert len(set(done)) >= 2, samples
    assert done == sorted(done), done
    assert all(row["dest"] == bimage and row["snapshot"] == sent["snapshot"] for row in samples)
    assert all(row["kind"] == "full" for row in samples)
    expected = {row["bytes_expected"] for row in samples} - {None}
    # rbd diff lists every allocated extent; the stream adds only its record headers.
    assert len(expected) == 1 and 0 <= sent["bytes_logical"] - expected.pop() < 64 * 1024, (samples, sent)
    with_percent = [row for row in samples if row["percent"] is not None]
    assert with_percent and all(0 <= row["percent"] < 100 for row in with_percent)
    assert any(row["rate"] > 0 for row in samples)

    # Finished: nothing left for this run's process; no status file of a dead process counted.
    assert [row for row in read_status(str(state_dir)) if row["image"] == "big"] == []
    pids = {row["pid"] for row in samples}
    assert all(not (state_dir / f"progress-{pid}.json").exists() for pid in pids)

    # stats: one rbd du on the backup pool, its totals equal what rbd du says.
    playbook = tmp_path / "stats.yml"
    playbook.write_text(STATS_PLAYBOOK)
    hosts = tmp_path / "stats-hosts.yml"
    hosts.write_text(yaml.safe_dump(inv, sort_keys=False))
    out = tmp_path / "stats.json"
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(hosts), str(playbook), "-e", f"stats_out={out}"]
    done_run = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done_run.returncode == 0, done_run.stdout + done_run.stderr
    usage = json.loads(out.read_text())
    du = lab.rbd_json("backup", "du", "--pool", "rbd", "--namespace", ns, admin=True)
    assert usage["changed"] is False
    assert usage["total_used"] == du["total_used_size"] > 0
    assert usage["total_provisioned"] == du["total_provisioned_size"]
    by_name = {image["name"]: image for image in usage["images"]}
    assert set(by_name) == {bimage, backup_image(cluster_name(inv), "empty")}
    assert by_name[bimage]["snapshots"] == 1 and by_name[bimage]["provisioned"] == IMAGE_MB * 1024 * 1024
    assert by_name[bimage]["used"] >= IMAGE_MB * 1024 * 1024
