"""backurne_window_end and backurne_bwlimit through playbooks/backup.yml on the real lab.

Window: a window already past when the transfers would start defers every image (exit 0, the
report says deferred, retention ran, the backup unchanged); the next run without a window
starts the deferred images first (the order the transfer module returns) and converges by
checksum. The snapshot the deferred run created on live is live-only: never a base.

Bandwidth: a low limit makes the transfer take at least (wire bytes - one burst) / limit - a
one-sided bound, load only makes it slower - per transfer and as a per-node total; the data
is checked by checksum on both clusters. Bad values stop the run before anything is touched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from playbook_helpers import (
    REPO,
    T_RETENTION_BACKUP,
    T_RETENTION_LIVE,
    T_SNAPSHOT,
    T_TRANSFER,
    MiB,
    assert_ok,
    assert_same_data,
    backup_image,
    checksum,
    cluster_name,
    day,
    make_inventory,
    run_backup,
    run_playbook,
    snap_name,
    snaps,
    spec,
    state,
)

from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import BURST_SECONDS, MIN_BURST

RESTORE = REPO / "playbooks" / "restore.yml"
T_REPORT = "Report the run on the backup node"
T_LIMITS = "Read the bandwidth limit and the backup window"
PROFILES = {"daily": {"count": 7, "max_on_live": 1}}


def _past() -> str:
    """A window end already past on the real clock (the window is real time, not backurne_now)."""
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")


def test_window_past_defers_all_then_next_run_sends_them_first(lab, ns, tmp_path: Path) -> None:
    for seed, img in enumerate(("a1", "z1", "z2")):
        lab.write_image("live", spec(ns, img), 8, seed=40 + seed, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    name = cluster_name(inv)
    s0, s1 = snap_name("daily", 7, day(0)), snap_name("daily", 7, day(1))
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    for seed, img in enumerate(("a1", "z1", "z2")):
        lab.overwrite("live", spec(ns, img), 0.25, seed=50 + seed, admin=True)
    backup_before = state(lab, "backup", ns)
    backup_sums = {img: checksum(lab, "backup", ns, backup_image(name, img), s0) for img in ("z1", "z2")}

    # Run 2: only z*, and the window ended an hour ago.
    window = {"backurne_window_end": _past(), "backurne_limit_images": "z*"}
    run2 = assert_ok(run_backup(inv, tmp_path, now=day(1), extra_vars=window))
    transfer = run2.result(T_TRANSFER)
    assert [(i["image"], i["status"], i["ok"], i["snapshots"]) for i in transfer["images"]] == [
        ("z1", "deferred", True, []),
        ("z2", "deferred", True, []),
    ]
    assert transfer["failed_images"] == [] and transfer["transfer_order"] == []
    assert [d["image"] for d in transfer["deferred_images"]] == ["z1", "z2"]
    # The report (and the set_stats artifacts made from it) say deferred, not failed.
    summary = run2.result(T_REPORT)["summary"]
    assert (summary["deferred"], summary["failed"], summary["transferred"], summary["ok"]) == (2, 0, 0, True)
    assert {i["image"]: i["status"] for i in run2.result(T_REPORT)["images"]} == {"z1": "deferred", "z2": "deferred"}
    # Retention ran on both sides, and kept the live-only s1 (newer than the base s0).
    assert run2.result(T_RETENTION_LIVE)["failed_images"] == []
    assert run2.result(T_RETENTION_BACKUP)["failed_images"] == []
    for img in ("z1", "z2"):
        assert snaps(lab, "live", ns, img) == [s0, s1]
    # The backup is untouched: same images, same snapshots, same data.
    assert state(lab, "backup", ns) == backup_before
    for img in ("z1", "z2"):
        assert checksum(lab, "backup", ns, backup_image(name, img), s0) == backup_sums[img]

    # Run 3, no window, all images: z1 and z2 (deferred) start before a1 (first in input order).
    run3 = assert_ok(run_backup(inv, tmp_path, now=day(1, minutes=30)))
    plans = {p["image"]: p for p in run3.result(T_SNAPSHOT)["images"]}
    # The live-only s1 was no base: the deferred images go incrementally from s0, s1 is sent as is
    # (it counts as due-satisfied, no second snapshot); a1 gets its own new snapshot.
    assert plans["z1"]["transfers"] == [{"from_snap": s0, "to_snap": s1}]
    assert plans["z1"]["new_snapshots"] == []
    a1_snap = snap_name("daily", 7, day(1, minutes=30))
    assert plans["a1"]["new_snapshots"] == [a1_snap]
    transfer3 = run3.result(T_TRANSFER)
    assert [i["image"] for i in transfer3["images"]] == ["a1", "z1", "z2"]  # results in input order
    assert transfer3["transfer_order"] == [backup_image(name, img) for img in ("z1", "z2", "a1")]
    assert all(i["status"] == "transferred" for i in transfer3["images"]), transfer3["images"]
    assert_same_data(lab, ns, "z1", backup_image(name, "z1"), [s0, s1])
    assert_same_data(lab, ns, "z2", backup_image(name, "z2"), [s0, s1])
    assert_same_data(lab, ns, "a1", backup_image(name, "a1"), [a1_snap])
    assert run3.result(T_REPORT)["summary"]["deferred"] == 0


def test_bad_window_or_bwlimit_stops_the_run_before_anything(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "w1"), 8, seed=60, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    for extra, culprit in (
        ({"backurne_window_end": "25:00"}, "backurne_window_end '25:00'"),
        ({"backurne_window_end": "02:30 Europe/Paris", "backurne_bwlimit": "fast"}, "backurne_bwlimit: 'fast'"),
        ({"backurne_bwlimit": {"transfer": "1M", "node": "-1"}}, "backurne_bwlimit.node: '-1'"),
    ):
        run = run_backup(inv, tmp_path, now=day(0), extra_vars=extra)
        assert run.rc != 0, run.describe()
        assert culprit in run.failure_text(), run.failure_text()
        assert not run.results(T_SNAPSHOT), "the snapshot step ran"
        assert snaps(lab, "live", ns, "w1") == []
        assert state(lab, "backup", ns) == {}


def _burst(rate: int) -> int:
    return max(MIN_BURST, int(rate * BURST_SECONDS))


def test_bwlimit_per_transfer_throttles_and_data_arrives(lab, ns, tmp_path: Path) -> None:
    # Incompressible (SHAKE-128 data): zstd cannot shrink the ~6 MiB on the wire.
    lab.write_image("live", spec(ns, "slow1"), 6, seed=70, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    rate = 1 * MiB
    run = assert_ok(run_backup(inv, tmp_path, now=day(0), extra_vars={"backurne_bwlimit": "1M"}))
    assert run.result(T_LIMITS)["ansible_facts"]["backurne_limits"]["bwlimit"] == rate
    sent = run.image(T_TRANSFER, "slow1")
    assert sent["status"] == "transferred", sent
    assert sent["bytes_wire"] >= 6 * MiB, sent
    # One-sided: at the limit it takes at least this long; load only makes it slower.
    assert sent["duration"] >= (sent["bytes_wire"] - _burst(rate)) / rate, sent
    assert_same_data(lab, ns, "slow1", backup_image(cluster_name(inv), "slow1"), [snap_name("daily", 7, day(0))])


def test_bwlimit_node_total_is_shared_by_the_workers(lab, ns, tmp_path: Path) -> None:
    for seed, img in enumerate(("n1", "n2", "n3")):
        lab.write_image("live", spec(ns, img), 3, seed=80 + seed, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    rate = 1 * MiB
    run = assert_ok(
        run_backup(inv, tmp_path, now=day(0), extra_vars={"backurne_bwlimit": {"transfer": "100M", "node": "1M"}})
    )
    transfer = [e for e in run.events if e.task == T_TRANSFER]
    assert len(transfer) == 1
    sent = transfer[0].result["images"]
    assert [i["status"] for i in sent] == ["transferred"] * 3, sent
    wire = sum(i["bytes_wire"] for i in sent)
    assert wire >= 9 * MiB
    # The images ran side by side (workers), yet together no faster than the node total: the
    # task (its callback time, an upper bound of the module's own) took at least this long.
    assert transfer[0].elapsed >= (wire - _burst(rate)) / rate, (transfer[0].elapsed, wire)
    snap = snap_name("daily", 7, day(0))
    for img in ("n1", "n2", "n3"):
        assert_same_data(lab, ns, img, backup_image(cluster_name(inv), img), [snap])


def test_bwlimit_throttles_a_restore_too(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "r1"), 6, seed=90, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 7, day(0))
    rate = 1 * MiB
    run = assert_ok(
        run_playbook(
            RESTORE,
            inv,
            tmp_path,
            {
                "backurne_restore_image": {"cluster": cluster_name(inv), "image": "r1"},
                "backurne_restore_snapshot": "latest",
                "backurne_restore_target_image": "r1-restored",
                "backurne_bwlimit": "1M",
            },
        )
    )
    (item,) = run.result("Restore the snapshot as a new image")["restores"]
    assert item["status"] == "restored", item
    assert item["bytes_wire"] >= 6 * MiB, item
    assert item["duration"] >= (item["bytes_wire"] - _burst(rate)) / rate, item
    assert checksum(lab, "live", ns, "r1-restored") == checksum(
        lab, "backup", ns, backup_image(cluster_name(inv), "r1"), s0
    )
