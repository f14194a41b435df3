"""Scale-out: several backup nodes share one run of backup.yml.

Two inventory hosts in ``backup_nodes`` (both reached through the lab's backup sshd, so both
write the same backup cluster) take one shard each of the images: the shard of a backup image
is ``sha256(name)[:8] mod node count`` (module_utils/policy/sharding.py) and the node's index is its
position among the play's hosts. Snapshots and live-side expiry run once per cluster, not once
per node. A lock left by a node that died (its process gone) does not block the next run, and
what that node left undone is finished then.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from playbook_helpers import (
    POOL,
    T_RETENTION_BACKUP,
    T_RETENTION_LIVE,
    T_SNAPSHOT,
    T_TRANSFER,
    assert_ok,
    assert_same_data,
    backup_image,
    cluster_name,
    day,
    make_inventory,
    new_cluster_name,
    run_backup,
    snap_name,
    snaps,
    spec,
    state,
)

from ansible_collections.backurne.rbd.plugins.module_utils.policy.sharding import shard_of

NODES = ["lab-backup", "lab-backup-2"]
IMAGES = [f"so{index}" for index in range(8)]
PROFILES = {"daily": {"count": 3}}


def split_cluster_name() -> str:
    """A fresh cluster name under which each node owns at least two of IMAGES.

    The shard hashes the backup image name, which holds the (random) cluster name: with 8 images
    one node owns fewer than two about once in 28 names, and the dead-node test needs two.
    """
    while True:
        name = new_cluster_name()
        shares = Counter(NODES[shard_of(backup_image(name, image), len(NODES))] for image in IMAGES)
        if all(shares[node] >= 2 for node in NODES):
            return name


def two_node_inventory(lab: Any, ns: str) -> dict[str, Any]:
    inv = make_inventory(lab, ns, profiles=PROFILES, name=split_cluster_name())
    hosts = inv["all"]["children"]["backup_nodes"]["hosts"]
    (first,) = list(hosts)
    assert first == NODES[0]
    # A second "node": another inventory host on the same backup sshd (one machine plays both).
    hosts[NODES[1]] = dict(hosts[first])
    return inv


def owner(name: str, image: str) -> str:
    return NODES[shard_of(backup_image(name, image), len(NODES))]


def transfers_by_host(run: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in run.events:
        if event.task == T_TRANSFER and event.status == "ok":
            assert event.host not in found, f"two transfer results for {event.host}"
            found[event.host] = event.result["images"]
    return found


def take_lock(lab: Any, ns: str, image: str, cookie: str) -> None:
    info = lab.rbd_json("backup", "info", spec(ns, image), admin=True)
    header = f"rbd_header.{info['id']}"
    base = ["rados", "-c", str(lab.conf("backup")), "--id", "admin", f"--pool={POOL}", f"--namespace={ns}"]
    subprocess.run([*base, "lock", "get", header, "backurne", f"--lock-cookie={cookie}"], check=True, timeout=60)


def lock_cookies(lab: Any, ns: str, image: str) -> list[str]:
    info = lab.rbd_json("backup", "info", spec(ns, image), admin=True)
    base = ["rados", "-c", str(lab.conf("backup")), "--id", "admin", f"--pool={POOL}", f"--namespace={ns}"]
    out = subprocess.run(
        [*base, "lock", "info", f"rbd_header.{info['id']}", "backurne", "--format=json"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return [entry["cookie"] for entry in json.loads(out).get("lockers", [])]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def shared(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One namespace and its first two-node run, shared by the tests of this module (in order)."""
    ns = f"t-so-{uuid.uuid4().hex[:8]}"
    for cluster in ("live", "backup"):
        lab.rbd(cluster, "namespace", "create", f"--pool={POOL}", f"--namespace={ns}", admin=True)
    for index, image in enumerate(IMAGES):
        lab.write_image("live", spec(ns, image), 4, seed=700 + index, admin=True)
    inv = two_node_inventory(lab, ns)
    work = tmp_path_factory.mktemp("scale-out")
    first = assert_ok(run_backup(inv, work, now=day(0)))
    yield {"ns": ns, "inv": inv, "work": work, "first": first}
    for cluster in ("live", "backup"):
        lab.purge_namespace(cluster, ns)


def test_each_image_backed_up_once_each_node_its_share(lab: Any, shared: dict[str, Any]) -> None:
    ns, inv, run = shared["ns"], shared["inv"], shared["first"]
    name = cluster_name(inv)
    owners = {image: owner(name, image) for image in IMAGES}
    # The images really are split (else this test would prove nothing about sharding).
    assert set(owners.values()) == set(NODES), owners

    # Snapshots once per cluster, not once per node: one snapshot task result, one snapshot each.
    assert len([e for e in run.events if e.task == T_SNAPSHOT and e.status == "ok"]) == 1
    live = state(lab, "live", ns)
    assert all(len(live[image]) == 1 for image in IMAGES), live

    by_host = transfers_by_host(run)
    assert sorted(by_host) == NODES, by_host.keys()
    done = Counter()
    for host, items in by_host.items():
        for item in items:
            assert owners[item["image"]] == host, f"{host} handled {item['image']} of {owners[item['image']]}"
            assert item["status"] == "transferred", item
            done[item["image"]] += 1
    assert done == Counter(IMAGES), done  # every image exactly once

    backup = state(lab, "backup", ns)
    assert sorted(backup) == sorted(backup_image(name, image) for image in IMAGES)
    for image in IMAGES:
        assert backup[backup_image(name, image)] == live[image]
    assert_same_data(lab, ns, IMAGES[0], backup_image(name, IMAGES[0]), live[IMAGES[0]])

    # Live-side expiry once per cluster; backup-side expiry on every node (its share).
    assert len([e for e in run.events if e.task == T_RETENTION_LIVE and e.status == "ok"]) == 1
    assert sorted(e.host for e in run.events if e.task == T_RETENTION_BACKUP and e.status == "ok") == NODES


def test_noop_run_changes_nothing_on_any_node(lab: Any, shared: dict[str, Any]) -> None:
    before_live, before_backup = state(lab, "live", shared["ns"]), state(lab, "backup", shared["ns"])
    run = assert_ok(run_backup(shared["inv"], shared["work"], now=day(0, minutes=30)))
    assert all(count == 0 for count in run.changed().values()), run.changed()
    assert state(lab, "live", shared["ns"]) == before_live
    assert state(lab, "backup", shared["ns"]) == before_backup


def test_dead_node_leaves_no_blocking_lock_and_its_share_is_done_next_run(lab: Any, shared: dict[str, Any]) -> None:
    ns, inv = shared["ns"], shared["inv"]
    name = cluster_name(inv)
    # A node died in the middle of day 1's run: the snapshots were made on live (run-wide step),
    # and one of its images is still locked by its dead process (same host name, pid gone).
    pending = snap_name("daily", 3, day(1))
    victim = next(image for image in IMAGES if owner(name, image) == NODES[1])
    for image in IMAGES:
        lab.rbd("live", "snap", "create", "--no-progress", spec(ns, image, pending), admin=True)
    dead = f"backurne;{socket.gethostname()};{dead_pid()};{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S')}"
    take_lock(lab, ns, backup_image(name, victim), dead)
    # A second image of the same node is locked by a holder on another host whose lock is
    # older than lock_ttl (6 h): the holder cannot be checked, its age breaks it.
    aged = next(image for image in IMAGES if owner(name, image) == NODES[1] and image != victim)
    take_lock(lab, ns, backup_image(name, aged), "backurne;other-node;4242;2020-01-01T00:00:00")

    run = assert_ok(run_backup(inv, shared["work"], now=day(1, minutes=5)))
    by_host = transfers_by_host(run)
    items = {item["image"]: item for host_items in by_host.values() for item in host_items}
    for image in IMAGES:
        # The pending snapshot is sent first; no new snapshot was due (it counts as backed up).
        assert items[image]["status"] == "transferred", items[image]
        assert items[image]["snapshots"] == [pending], items[image]
        assert snaps(lab, "backup", ns, backup_image(name, image))[-1] == pending
    for image, holder in ((victim, "is gone"), (aged, "ttl")):
        assert holder in items[image].get("note", ""), items[image]
        assert lock_cookies(lab, ns, backup_image(name, image)) == []
    assert_same_data(lab, ns, victim, backup_image(name, victim), [pending])


def test_live_holder_blocks_only_its_image(lab: Any, shared: dict[str, Any]) -> None:
    ns, inv = shared["ns"], shared["inv"]
    name = cluster_name(inv)
    # A lock held by a live process on another node: that image is skipped (not failed), the
    # others go on, and the lock is left alone.
    held = IMAGES[0]
    cookie = f"backurne;other-node;4242;{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S')}"
    take_lock(lab, ns, backup_image(name, held), cookie)
    run = assert_ok(run_backup(inv, shared["work"], now=day(2, minutes=5)))
    items = {item["image"]: item for host_items in transfers_by_host(run).values() for item in host_items}
    assert items[held]["status"] == "locked", items[held]
    assert all(items[image]["status"] == "transferred" for image in IMAGES if image != held)
    assert lock_cookies(lab, ns, backup_image(name, held)) == [cookie]


def test_shard_function_is_stable_and_spreads() -> None:
    # Fixed values (documented in docs/performance.md): a change of the function would silently
    # move every image to another node, so it must show up here.
    assert [shard_of(f"prod;vm-{index};None", 3) for index in range(8)] == [2, 2, 1, 1, 1, 2, 1, 1]
    assert shard_of("anything", 1) == 0
    counts = Counter(shard_of(f"prod;vm-{index}-disk-0;None", 4) for index in range(400))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 60, counts
