"""Scale-out for Proxmox VE live clusters: two backup nodes share one run of backup.yml.

The stand-in PVE API and its guests are test_proxmox_backup.py's (disks in three namespaces, one
of them served by a second live Ceph endpoint). Two inventory hosts in ``backup_nodes`` (both
reached through the lab's backup sshd, as in test_scale_out.py) each take the disks whose backup
image name hashes to their index (module_utils/policy/sharding.py): transfer, checksum and backup-side
expiry per node, discovery, snapshots, config save and live-side expiry once. Then verify.yml
hashes every disk of the Proxmox cluster, and catches a tampered backup.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from conftest import POOL
from playbook_helpers import REPO, T0, T_RETENTION_BACKUP, PlaybookRun, assert_ok, run_backup, run_playbook
from test_proxmox_backup import T_DISCOVER, T_PVE_SNAPSHOT, T_PVE_TRANSFER, UUID100, PveLab, expected_images
from test_proxmox_backup import pve as pve

from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import shard_of

NODES = ["lab-backup", "lab-backup-2"]
T_PVE_CHECKSUM = "Verify the transferred disks by checksum on both sides, per live Ceph endpoint"
T_CONFIG_SAVE = "Save the guests' configs beside their disks on the backup cluster"
T_RETENTION_LIVE = "Expire snapshots on the live clusters, per endpoint, pool and namespace"
T_VERIFY = "Hash the newest shared snapshot on both sides, per endpoint, pool and namespace"


def two_node_inventory(pve: PveLab) -> dict[str, Any]:
    inv = pve.inventory(plain=False)
    hosts = inv["all"]["children"]["backup_nodes"]["hosts"]
    assert list(hosts) == NODES[:1]
    hosts[NODES[1]] = dict(hosts[NODES[0]])  # one machine plays both nodes
    return inv


def owner(backup_image: str) -> str:
    return NODES[shard_of(backup_image, len(NODES))]


def per_node(run: PlaybookRun, task: str) -> dict[str, list[dict[str, Any]]]:
    """Each node's per-disk items of a per-endpoint loop task (every endpoint's result together)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in run.events:
        if event.task == task and event.status == "ok":
            assert event.host not in found, f"two {task!r} results for {event.host}"
            found[event.host] = [item for result in event.result["results"] for item in result.get("images", [])]
    return found


def ran_once(run: PlaybookRun, task: str) -> None:
    hosts = [e.host for e in run.events if e.task == task and e.status == "ok"]
    assert hosts == [NODES[0]], f"{task!r} ran on {hosts}"


def test_two_backup_nodes_share_the_disks_verify_them_and_verify_yml_covers_proxmox(
    pve: PveLab, tmp_path: Path
) -> None:
    disks = expected_images()
    # The disks really are split (else this test would prove nothing about sharding).
    assert {owner(name) for name in disks} == set(NODES)
    inv = two_node_inventory(pve)

    # -- backup.yml with two nodes and backurne_verify=true ---------------------------------
    run = assert_ok(run_backup(inv, tmp_path, now=T0, extra_vars={"backurne_verify": True}))
    for task in (T_DISCOVER, T_PVE_SNAPSHOT, T_CONFIG_SAVE, T_RETENTION_LIVE):
        ran_once(run, task)

    sent = per_node(run, T_PVE_TRANSFER)
    assert sorted(sent) == NODES, sent.keys()
    done: Counter[str] = Counter()
    for host, items in sent.items():
        for item in items:
            assert owner(item["backup_image"]) == host, f"{host} transferred {item['backup_image']}"
            assert item["status"] == "transferred" and item["kind"] == "full", item
            done[item["backup_image"]] += 1
    assert done == Counter(disks), done  # every disk exactly once

    # The config save (run once) saw every node's transfers, not only the first node's.
    assert sorted(run.result(T_CONFIG_SAVE)["meta_written"]) == sorted(disks)
    found = pve.backup_images()
    assert set(found) == disks and all(len(snaps) == 1 for snaps in found.values()), found

    # Each node hashed what it sent, on both sides, each disk read from its own pool/namespace.
    summed = per_node(run, T_PVE_CHECKSUM)
    assert sorted(summed) == NODES, summed.keys()
    checked: Counter[str] = Counter()
    for host, items in summed.items():
        for item in items:
            assert owner(item["backup_image"]) == host, f"{host} checked {item['backup_image']}"
            assert item["match"] is True and item["live"] and item["snapshot"] == found[item["backup_image"]][0], item
            checked[item["backup_image"]] += 1
    assert checked == Counter(disks), checked
    pools = {(item["source_pool"], item["source_namespace"]) for items in summed.values() for item in items}
    assert pools == {(POOL, pve.ns_vm), (POOL, pve.ns_ct), (POOL, pve.ns_b)}, pools

    # Backup-side expiry ran on both nodes (its share each).
    assert sorted(e.host for e in run.events if e.task == T_RETENTION_BACKUP and e.status == "ok") == NODES

    # -- verify.yml on the Proxmox cluster ---------------------------------------------------
    verify = REPO / "playbooks" / "verify.yml"
    checked_run = assert_ok(run_playbook(verify, inv, tmp_path, {}))
    items = [item for result in checked_run.result(T_VERIFY)["results"] for item in result["images"]]
    assert sorted(item["backup_image"] for item in items) == sorted(disks)
    assert all(item["match"] for item in items), items

    # A tampered backup (same snapshot name, other data) is caught, and named.
    bimage = f"{UUID100};scsi0;web1"
    (snap,) = found[bimage]
    where = f"{POOL}/{pve.ns}/{bimage}"
    pve.lab.overwrite("backup", where, 0.05, seed=99, admin=True)
    pve.lab.rbd("backup", "snap", "rm", "--no-progress", f"{where}@{snap}", admin=True)
    pve.lab.rbd("backup", "snap", "create", f"{where}@{snap}", admin=True)
    failed = run_playbook(verify, inv, tmp_path, {})
    assert failed.rc != 0, failed.describe()
    items = [item for result in failed.result(T_VERIFY)["results"] for item in result["images"]]
    assert [item["backup_image"] for item in items if not item["match"]] == [bimage], items
    assert "checksums differ" in failed.failure_text() and "vm-100-disk-0" in failed.failure_text()
