"""backup.yml against a backup cluster that cannot take writes, and configuration errors that must
name their culprit (issue 12): a pool over its quota, a nearly full OSD, a keyring path that does
not exist (backup node and live cluster), a garbage ``backurne_now``.

Each case asserts the exit code, the failing task and its message, that nothing changed on either
cluster (snapshot listings, and checksums of the backups that existed), and, once the fault is
removed, that the next run converges by itself.

The quota and the nearfull ratio are cluster-wide settings of the lab's backup cluster: every
test that changes one restores it in a ``finally`` and waits until the monitor has dropped the
flags it raised, so that the tests after it see a writable cluster. While the quota is exceeded
the tests read nothing from the backup pool themselves: on 16.2 even `rbd ls --namespace` blocks
then.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playbook_helpers import (
    T_PREFLIGHT,
    T_SNAPSHOT,
    T_TRANSFER,
    assert_ok,
    assert_same_data,
    backup_image,
    checksum,
    cluster_name,
    day,
    make_inventory,
    run_backup,
    snap_name,
    spec,
    state,
)

T_CAPACITY = "Check that the backup cluster can take writes into the backup pool"
PROFILES = {"daily": {"count": 7}}
POOL = "rbd"
# How long the monitor may take to raise or drop a flag (it follows the OSD/PG stats, every
# second in the lab): a readiness wait, not an assertion on time.
SETTLE_TIMEOUT = 60


def _osd_dump(lab: Any) -> dict[str, Any]:
    return json.loads(lab.ceph("backup", "osd", "dump", "--format", "json"))


def _pool_flags(lab: Any) -> list[str]:
    pool = next(p for p in _osd_dump(lab)["pools"] if p["pool_name"] == POOL)
    return [flag for flag in pool["flags_names"].split(",") if flag]


def _osd_states(lab: Any) -> set[str]:
    return {word for osd in _osd_dump(lab)["osds"] for word in osd["state"]}


def _wait_until(what: str, predicate: Any) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"the backup cluster did not settle: {what}")
        time.sleep(0.5)


def _quota(lab: Any) -> dict[str, Any]:
    return json.loads(lab.ceph("backup", "osd", "pool", "get-quota", POOL, "--format", "json"))


@contextmanager
def pool_quota(lab: Any, max_bytes: int) -> Iterator[None]:
    """The backup pool's max_bytes quota set to ``max_bytes`` (admin key), removed afterwards."""
    try:
        lab.ceph("backup", "osd", "pool", "set-quota", POOL, "max_bytes", str(max_bytes))
        _wait_until("pool flagged full_quota", lambda: "full_quota" in _pool_flags(lab))
        yield
    finally:
        lab.ceph("backup", "osd", "pool", "set-quota", POOL, "max_bytes", "0")
        _wait_until("full_quota flag dropped", lambda: "full_quota" not in _pool_flags(lab))


@contextmanager
def nearfull_ratio(lab: Any, ratio: float) -> Iterator[None]:
    """The backup cluster's nearfull ratio lowered (the one OSD becomes nearfull), then restored."""
    try:
        lab.ceph("backup", "osd", "set-nearfull-ratio", str(ratio))
        _wait_until("osd nearfull", lambda: "nearfull" in _osd_states(lab))
        yield
    finally:
        lab.ceph("backup", "osd", "set-nearfull-ratio", "0.85")
        _wait_until("osd no longer nearfull", lambda: "nearfull" not in _osd_states(lab))


def _snapshot_of_both(lab: Any, ns: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    return state(lab, "live", ns), state(lab, "backup", ns)


def _backup_checksums(lab: Any, ns: str, listing: dict[str, list[str]]) -> dict[str, str]:
    return {
        f"{image}@{snap}": checksum(lab, "backup", ns, image, snap)
        for image, names in listing.items()
        for snap in names
    }


def _nothing_ran_after(run: Any, task: str) -> None:
    names = [event.task for event in run.events]
    assert task in names, names
    assert T_SNAPSHOT not in names and T_TRANSFER not in names, names


# -- (a) pool over its quota ----------------------------------------------------------------------


def test_pool_over_quota_fails_fast_and_changes_nothing(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "q1"), 8, seed=1201, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    bimg = backup_image(cluster_name(inv), "q1")
    s0, s1 = snap_name("daily", 7, day(0)), snap_name("daily", 7, day(1))
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    lab.overwrite("live", spec(ns, "q1"), 0.1, seed=1202, admin=True)

    used = int(_quota(lab)["current_num_bytes"])
    assert used > 2, "the backup pool holds the first backup"
    limit = used // 2
    live_before, backup_before = _snapshot_of_both(lab, ns)
    sums_before = _backup_checksums(lab, ns, backup_before)
    with pool_quota(lab, limit):
        run = run_backup(inv, tmp_path, now=day(1))
        assert run.rc != 0, run.describe()
        failed = run.failed_events()
        assert failed and failed[0].task == T_CAPACITY, [(e.task, e.status) for e in run.events]
        message = failed[0].result["msg"]
        assert f"pool {POOL} is over its quota (max_bytes {limit} " in message, message
        reported = failed[0].result["state"]
        assert reported["quota_max_bytes"] == limit and reported["used_bytes"] > limit, reported
        assert f"used {reported['used_bytes']} " in message, message
        # Before any snapshot: nothing taken on live, nothing written on backup.
        _nothing_ran_after(run, T_CAPACITY)

        # An expiry-only run frees space: the full pool is a warning there, not a stop.
        cleanup = run_backup(inv, tmp_path, now=day(1), extra_vars={"backurne_cleanup_only": True})
        assert cleanup.rc == 0, cleanup.failure_text()
        warnings = cleanup.result(T_CAPACITY)["capacity_warnings"]
        assert any(f"pool {POOL} is over its quota" in text for text in warnings), warnings
    # Read once the quota is gone: on a full pool even `rbd ls --namespace` blocks (16.2).
    assert _snapshot_of_both(lab, ns) == (live_before, backup_before)
    assert _backup_checksums(lab, ns, backup_before) == sums_before

    # Quota removed: the next run converges by itself.
    run = assert_ok(run_backup(inv, tmp_path, now=day(1)))
    sent = run.image(T_TRANSFER, "q1")
    assert (sent["status"], sent["kind"], sent["base"]) == ("transferred", "incremental", s0), sent
    assert state(lab, "backup", ns)[bimg] == sorted([s0, s1])
    assert_same_data(lab, ns, "q1", bimg, [s1])  # s0 has left live (max_on_live 0)
    assert checksum(lab, "backup", ns, bimg, s0) == sums_before[f"{bimg}@{s0}"]


# -- nearfull: the policy ------------------------------------------------------------------------------


def test_nearfull_warns_by_default_and_fails_when_told(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "n1"), 8, seed=1204, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    bimg = backup_image(cluster_name(inv), "n1")
    s0, s1 = snap_name("daily", 7, day(0)), snap_name("daily", 7, day(1))
    with nearfull_ratio(lab, 0.000001):
        warned = assert_ok(run_backup(inv, tmp_path, now=day(0)))
        capacity = warned.result(T_CAPACITY)
        assert capacity["capacity_warnings"] == ["OSD(s) osd.0 of the backup cluster are nearfull"], capacity
        assert state(lab, "backup", ns) == {bimg: [s0]}
        assert_same_data(lab, ns, "n1", bimg, [s0])

        live_before, backup_before = _snapshot_of_both(lab, ns)
        refused = run_backup(inv, tmp_path, now=day(1), extra_vars={"backurne_nearfull": "fail"})
        assert refused.rc != 0
        failed = refused.failed_events()
        assert failed and failed[0].task == T_CAPACITY, [(e.task, e.status) for e in refused.events]
        assert "osd.0 of the backup cluster are nearfull (backurne_nearfull=fail)" in failed[0].result["msg"]
        _nothing_ran_after(refused, T_CAPACITY)
        assert _snapshot_of_both(lab, ns) == (live_before, backup_before)

    run = assert_ok(run_backup(inv, tmp_path, now=day(1), extra_vars={"backurne_nearfull": "fail"}))
    assert run.result(T_CAPACITY)["capacity_warnings"] == []
    assert state(lab, "backup", ns) == {bimg: sorted([s0, s1])}
    assert_same_data(lab, ns, "n1", bimg, [s1])


# -- (b) a keyring path that does not exist -------------------------------------------------------


def _with_backup_keyring(inv: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(inv)
    changed["all"]["children"]["backup_nodes"]["hosts"]["lab-backup"]["backurne_backup"]["ceph"]["keyring"] = path
    return changed


def test_missing_backup_keyring_is_named(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "k1"), 8, seed=1205, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    live_before, backup_before = _snapshot_of_both(lab, ns)
    missing = str(tmp_path / "no-such.keyring")

    run = run_backup(_with_backup_keyring(inv, missing), tmp_path, now=day(1))
    assert run.rc != 0
    failed = run.failed_events()
    assert failed and failed[0].task == T_CAPACITY, [(e.task, e.status) for e in run.events]
    message = failed[0].result["msg"]
    assert f"keyring {missing} (option keyring of the backup node) does not exist" in message, message
    assert "No such file or directory" not in message
    _nothing_ran_after(run, T_CAPACITY)
    assert _snapshot_of_both(lab, ns) == (live_before, backup_before)


def test_missing_live_keyring_is_named(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "k2"), 8, seed=1206, admin=True)
    missing = str(tmp_path / "live-no-such.keyring")
    inv = make_inventory(lab, ns, profiles=PROFILES)
    name = cluster_name(inv)
    bad = copy.deepcopy(inv)
    live = bad["all"]["children"]["live_clusters"]["hosts"]["lab-live"]["backurne_live"]
    live["ceph"] = {**live["ceph"], "keyring": missing}

    run = run_backup(bad, tmp_path, now=day(0))
    assert run.rc != 0
    text = run.failure_text()
    assert f"keyring {missing} (option keyring of live cluster {name}) does not exist" in text, text
    assert "rbd: listing images failed" not in text
    # The live node's snapshot step is what failed (its files are checked where they live).
    snapshot = [e for e in run.failed_events() if e.task == T_SNAPSHOT]
    assert snapshot, [(e.task, e.status) for e in run.events]
    assert state(lab, "live", ns) == {"k2": []}
    assert state(lab, "backup", ns) == {}

    # The inventory fixed: converges.
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 7, day(0))
    assert_same_data(lab, ns, "k2", backup_image(name, "k2"), [s0])


# -- (c) a garbage backurne_now -------------------------------------------------------------------------


def test_bad_backurne_now_fails_in_preflight(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "t1"), 8, seed=1207, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    run = run_backup(inv, tmp_path, now="last tuesday")
    assert run.rc != 0
    failed = run.failed_events()
    assert failed and failed[0].task == T_PREFLIGHT, [(e.task, e.status) for e in run.events]
    message = failed[0].result["msg"]
    assert "backurne_now 'last tuesday' is not an ISO 8601 time" in message, message
    assert "Invalid isoformat" not in message
    assert T_SNAPSHOT not in [e.task for e in run.events]
    assert state(lab, "live", ns) == {"t1": []} and state(lab, "backup", ns) == {}
