"""In-process RADOS access (module_utils/ceph/rados_listing.py) against the CLIs on real Ceph.

The modules list a pool by reading `rbd_directory` and the images' `rbd_header.<id>` omaps
through python3-rados (one omap read per image instead of a librbd image open); it must give
exactly what `rbd ls -l` gives, for the snapshot kinds a pool really holds: user snapshots,
protected ones, a snapshot moved to the trash namespace because a clone still uses it, a group
snapshot, a clone with snapshots of its own, an image without snapshots. The backup lock taken
in process must be the very lock `rados lock` sees and breaks. The venv running the tests has
no python3-rados: that code runs under the nodes' /usr/bin/python3, as the modules do.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import POOL, REPO, Lab

NODE_PYTHON = "/usr/bin/python3"

COMPARE = r"""
import json, sys
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner
conf, user, pool, namespace = sys.argv[1:5]
access = CephAccess(ceph_client=user, ceph_conf=conf)
found = {}
for key, runner in (("fast", RbdRunner(access)), ("cli", RbdRunner(access, in_process=False))):
    try:
        found[key] = runner.list_images(pool, namespace or None)
    except Exception as exc:
        found[key] = "error: " + str(exc)
    found[key + "_by"] = runner.last_listing
print(json.dumps(found))
"""


def listings(lab: Lab, cluster: str, namespace: str, user: str = "backurne") -> dict:
    """Both listings, computed on that cluster's node (its python3, rados and rbd CLI)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
    node = lab.node_argv(cluster, PYTHONPATH=str(REPO / "collections"))
    cp = subprocess.run(
        [*node, NODE_PYTHON, "-c", COMPARE, str(lab.conf(cluster)), user, POOL, namespace],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return json.loads(cp.stdout)


@pytest.fixture(scope="module")
def node_has_rados() -> None:
    cp = subprocess.run([NODE_PYTHON, "-c", "import rados"], capture_output=True, timeout=30)
    # The lab installs python3-rados (Debian's ceph-common depends on it); without it this file
    # would test nothing, so that is a failure, not a skip.
    assert cp.returncode == 0, f"{NODE_PYTHON} cannot import rados: {cp.stderr!r}"


def test_same_listing_as_rbd_ls_for_every_snapshot_kind(lab: Lab, ns: str, node_has_rados: None) -> None:
    def rbd(*args: str) -> None:
        lab.rbd("live", *args, admin=True)

    where = f"{POOL}/{ns}"
    rbd("create", "--size", "4M", f"{where}/plain")
    plain_snaps = ["backup;daily;30;2026-01-01T00:00:00.000000", "operator-snap", "backup;daily;30;2026-01-02T00:00:00"]
    for snap in plain_snaps:
        rbd("snap", "create", f"{where}/plain@{snap}")
    rbd("create", "--size", "4M", f"{where}/no-snaps")
    # A snapshot that a clone uses, then removed: Ceph moves it to the trash namespace.
    rbd("create", "--size", "4M", f"{where}/parent")
    rbd("snap", "create", f"{where}/parent@base")
    rbd("snap", "create", f"{where}/parent@kept")
    rbd("snap", "protect", f"{where}/parent@kept")
    rbd("clone", "--rbd-default-clone-format", "2", f"{where}/parent@base", f"{where}/child")
    rbd("snap", "create", f"{where}/child@child-snap")
    rbd("snap", "rm", f"{where}/parent@base")
    # A group snapshot (group namespace) between two user snapshots.
    rbd("create", "--size", "4M", f"{where}/grouped")
    rbd("snap", "create", f"{where}/grouped@before")
    rbd("group", "create", f"{where}/grp")
    rbd("group", "image", "add", f"{where}/grp", f"{where}/grouped")
    rbd("group", "snap", "create", f"{where}/grp@gsnap")
    rbd("snap", "create", f"{where}/grouped@after")
    try:
        all_kinds = lab.rbd_json("live", "snap", "ls", "--all", f"{where}/parent", admin=True)
        assert {s["namespace"]["type"] for s in all_kinds} == {"user", "trash"}, all_kinds

        for user in ("backurne", "admin"):
            found = listings(lab, "live", ns, user)
            assert found["fast_by"] == "rados", found
            assert found["cli_by"] == "rbd"
            assert found["fast"] == found["cli"]
            assert found["fast"] == {
                "plain": [
                    "backup;daily;30;2026-01-01T00:00:00.000000",
                    "operator-snap",
                    "backup;daily;30;2026-01-02T00:00:00",
                ],
                "no-snaps": [],
                "parent": ["kept"],
                "child": ["child-snap"],
                "grouped": ["before", "after"],
            }
    finally:
        # purge_namespace does not know groups.
        rbd("group", "snap", "rm", f"{where}/grp@gsnap")
        rbd("group", "rm", f"{where}/grp")
        rbd("snap", "unprotect", f"{where}/parent@kept")


def test_bulk_namespace_and_the_cli_fallback(lab: Lab, ns: str, node_has_rados: None) -> None:
    # 40 images with one snapshot each on the backup cluster, listed by the restricted client.
    for index in range(40):
        lab.rbd("backup", "create", "--size", "1M", f"{POOL}/{ns}/img-{index:03d}", admin=True)
    lab.rbd("backup", "snap", "create", f"{POOL}/{ns}/img-007@only", admin=True)
    found = listings(lab, "backup", ns)
    assert found["fast_by"] == "rados"
    assert found["fast"] == found["cli"]
    assert len(found["fast"]) == 40 and found["fast"]["img-007"] == ["only"]

    # An empty namespace: its rbd_directory exists (created with the namespace) and is empty.
    empty = f"{ns}-e"
    lab.rbd("backup", "namespace", "create", f"{POOL}/{empty}", admin=True)
    try:
        assert listings(lab, "backup", empty) == {"fast": {}, "fast_by": "rados", "cli": {}, "cli_by": "rbd"}
    finally:
        lab.rbd("backup", "namespace", "rm", f"{POOL}/{empty}", admin=True)

    # A namespace that does not exist has no rbd_directory: the in-process reader gives up and
    # the rbd CLI reports the error an operator can act on, the same one either way.
    found = listings(lab, "backup", f"{ns}-missing")
    assert found["fast_by"] == found["cli_by"] == "rbd"
    assert found["fast"] == found["cli"]
    assert "does not exist" in found["fast"] or "No such file" in found["fast"], found


LOCKING = r"""
import json, sys
from datetime import timedelta
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.ceph import lock
conf, pool, namespace, image, step = sys.argv[1:6]
access = CephAccess(ceph_client="backurne", ceph_conf=conf)
ttl = timedelta(hours=1)
mine = RbdRunner(access)
cli = RbdRunner(access, in_process=False)
out = {}
taken = lock.try_acquire(mine, pool, namespace, image, ttl)
out["taken"] = [taken.in_process, taken.locker, taken.lock_id, taken.size, taken.header_object]
spec = lock.ImageSpec(pool, namespace, image)
out["holders_seen_by_cli"] = [[h.lock_id, h.locker] for h in lock.holders(cli, spec, taken.header_object)]
other = lock.try_acquire(cli, pool, namespace, image, ttl)
out["other_node"] = type(other).__name__
out["snapshots"] = mine.snapshot_names(f"{pool}/{namespace}/{image}")
if step == "release":
    lock.release(mine, taken)
    again = lock.try_acquire(cli, pool, namespace, image, ttl)
    out["after_release"] = [type(again).__name__, again.in_process]
    lock.release(cli, again)
print(json.dumps(out))
"""


def run_node_python(script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
    cp = subprocess.run([NODE_PYTHON, "-c", script, *args], capture_output=True, text=True, timeout=120, env=env)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_in_process_lock_is_the_lock_rados_sees(lab: Lab, ns: str, node_has_rados: None) -> None:
    image = "locked;img"
    lab.rbd("backup", "create", "--size", "3M", f"{POOL}/{ns}/{image}", admin=True)
    lab.rbd("backup", "snap", "create", f"{POOL}/{ns}/{image}@backup;daily;7;2026-01-01T00:00:00", admin=True)
    conf = str(lab.conf("backup"))
    found = run_node_python(LOCKING, conf, POOL, ns, image, "release")
    in_process, locker, lock_id, size, header = found["taken"]
    assert in_process and locker.startswith("client.") and size == 3 * 1024 * 1024
    assert header == "rbd_header." + lab.rbd_json("backup", "info", f"{POOL}/{ns}/{image}", admin=True)["id"]
    assert found["holders_seen_by_cli"] == [[lock_id, locker]]
    assert found["other_node"] == "LockBusy"  # another node (the CLI path) cannot take it
    assert found["snapshots"] == ["backup;daily;7;2026-01-01T00:00:00"]
    assert found["after_release"] == ["Lock", False]
    assert (
        json.loads(lab.rbd("backup", "lock", "ls", "--format=json", f"{POOL}/{ns}/{image}", admin=True) or "[]") == []
    )

    # A process that dies holding the lock: the next run breaks it as stale (its pid is gone).
    found = run_node_python(LOCKING, conf, POOL, ns, image, "keep")
    lock_id = found["taken"][2]
    info = subprocess.run(
        [
            "rados",
            "-c",
            conf,
            "--id",
            "admin",
            "-p",
            POOL,
            "--namespace",
            ns,
            "lock",
            "info",
            found["taken"][4],
            "backurne",
            "--format=json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [entry["cookie"] for entry in json.loads(info.stdout)["lockers"]] == [lock_id]
    after = run_node_python(LOCKING, conf, POOL, ns, image, "release")
    assert after["taken"][0] is False  # held by the dead process: taken through the CLI, stale lock broken
    assert after["holders_seen_by_cli"] == [[after["taken"][2], after["taken"][1]]]


SNAPSHOTS = r"""
import json, sys
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdError, RbdRunner
conf, spec = sys.argv[1:3]
runner = RbdRunner(CephAccess(ceph_client="backurne", ceph_conf=conf))
out = {"in_process": runner.rados_session() is not None}
runner.snap_create(spec + "@backup;daily;7;2026-01-02T00:00:00")
for again in (spec + "@backup;daily;7;2026-01-02T00:00:00", spec + "-missing@s"):
    try:
        runner.snap_create(again)
        out[again] = "created"
    except RbdError as exc:
        out[again] = [exc.is_exists, exc.is_not_found, str(exc)]
print(json.dumps(out))
"""


def test_snapshot_created_in_process(lab: Lab, ns: str, node_has_rados: None) -> None:
    spec = f"{POOL}/{ns}/vm 7;disk"
    lab.rbd("live", "create", "--size", "4M", spec, admin=True)
    found = run_node_python(SNAPSHOTS, str(lab.conf("live")), spec)
    assert found["in_process"] is True
    names = [snap["name"] for snap in lab.rbd_json("live", "snap", "ls", spec, admin=True)]
    assert names == ["backup;daily;7;2026-01-02T00:00:00"]
    exists = found[spec + "@backup;daily;7;2026-01-02T00:00:00"]
    assert exists[:2] == [True, False] and "snap create" in exists[2] and "vm 7;disk" in exists[2], exists
    missing = found[spec + "-missing@s"]
    assert missing[:2] == [False, True], missing


METADATA = r"""
import json, sys
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner
conf, spec = sys.argv[1:3]
access = CephAccess(ceph_client="backurne", ceph_conf=conf)
fast, cli = RbdRunner(access), RbdRunner(access, in_process=False)
found = {"fast": fast.image_meta(spec), "cli": cli.image_meta(spec)}
print(json.dumps({**found, "session": fast.rados_session() is not None}))
"""


def test_image_meta_in_process_equals_the_cli(lab: Lab, ns: str, node_has_rados: None) -> None:
    spec = f"{POOL}/{ns}/uuid;scsi0;web"
    lab.rbd("backup", "create", "--size", "1M", spec, admin=True)
    lab.rbd("backup", "image-meta", "set", spec, "backurne.pve.cluster", "pve-a", admin=True)
    lab.rbd("backup", "image-meta", "set", spec, "backurne.pve.config", '{"name": "h\u00e9", "x": 1}', admin=True)
    found = run_node_python(METADATA, str(lab.conf("backup")), spec)
    assert found["session"] is True
    assert (
        found["fast"]
        == found["cli"]
        == {"backurne.pve.cluster": "pve-a", "backurne.pve.config": '{"name": "h\u00e9", "x": 1}'}
    )
