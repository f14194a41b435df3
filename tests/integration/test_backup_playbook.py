"""playbooks/backup.yml end to end on the real lab: full, incremental, idempotence, --check,
expiry on both sides with an injected "now", deleted sources, keep_min.

Every test has its own namespace (both clusters) and live cluster name; time moves only through
``backurne_now``.
"""

from __future__ import annotations

from pathlib import Path

from playbook_helpers import (
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
    images,
    make_inventory,
    run_backup,
    snap_name,
    snaps,
    spec,
    state,
)


def _plan_view(item: dict) -> dict:
    """The part of a snapshot-module plan that must not differ between --check and the real run."""
    return {key: item[key] for key in ("image", "backup_image", "due", "new_snapshots", "base", "kind", "transfers")}


def test_full_then_incremental(lab, ns, tmp_path: Path) -> None:
    img, size_mb = "disk1", 32
    lab.write_image("live", spec(ns, img), size_mb, seed=11, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
    bimg = backup_image(cluster_name(inv), img)
    data0 = checksum(lab, "live", ns, img)

    run1 = assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 7, day(0))
    plan1 = run1.image(T_SNAPSHOT, img)
    assert plan1["new_snapshots"] == [s0]
    assert (plan1["kind"], plan1["base"]) == ("full", None)
    sent1 = run1.image(T_TRANSFER, img)
    assert sent1["status"] == "transferred", sent1
    assert (sent1["kind"], sent1["base"], sent1["snapshots"]) == ("full", None, [s0])
    # A full of incompressible data carries the whole image (plus a few record headers).
    assert size_mb * MiB <= sent1["bytes_logical"] <= size_mb * MiB * 1.01, sent1
    assert snaps(lab, "live", ns, img) == [s0]
    assert images(lab, "backup", ns) == [bimg]
    assert snaps(lab, "backup", ns, bimg) == [s0]

    rewritten = lab.overwrite("live", spec(ns, img), 0.10, seed=12, admin=True)
    data1 = checksum(lab, "live", ns, img)
    assert data1 != data0

    run2 = assert_ok(run_backup(inv, tmp_path, now=day(1)))
    s1 = snap_name("daily", 7, day(1))
    plan2 = run2.image(T_SNAPSHOT, img)
    assert plan2["new_snapshots"] == [s1]
    assert (plan2["kind"], plan2["base"]) == ("incremental", s0)
    assert plan2["transfers"] == [{"from_snap": s0, "to_snap": s1}]
    sent2 = run2.image(T_TRANSFER, img)
    assert sent2["status"] == "transferred", sent2
    assert (sent2["kind"], sent2["base"], sent2["snapshots"]) == ("incremental", s0, [s1])
    # Only the changed extents travel: ~10 % of the image, not the image.
    assert rewritten <= sent2["bytes_logical"] <= rewritten * 1.05 + 64 * 1024, (rewritten, sent2)

    # max_on_live 1: the base (s1) and one older daily (s0) stay on live.
    assert snaps(lab, "live", ns, img) == [s0, s1]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1]
    sums = assert_same_data(lab, ns, img, bimg, [s0, s1])
    assert sums == {s0: data0, s1: data1}


def test_two_profiles_due_in_one_run(lab, ns, tmp_path: Path) -> None:
    img, size_mb = "disk2", 16
    lab.write_image("live", spec(ns, img), size_mb, seed=21, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}, "weekly": {"count": 4}})
    bimg = backup_image(cluster_name(inv), img)
    data = checksum(lab, "live", ns, img)

    run = assert_ok(run_backup(inv, tmp_path, now=day(0)))
    sd = snap_name("daily", 7, day(0))
    # One tick later, so that the names tell the order (the second is based on the first).
    sw = "backup;weekly;4;2026-01-01T00:00:00.000001"
    plan = run.image(T_SNAPSHOT, img)
    assert plan["due"] == ["daily", "weekly"]
    assert plan["new_snapshots"] == [sd, sw]
    assert plan["transfers"] == [{"from_snap": None, "to_snap": sd}, {"from_snap": sd, "to_snap": sw}]
    sent = run.image(T_TRANSFER, img)
    assert sent["status"] == "transferred", sent
    assert (sent["kind"], sent["base"], sent["snapshots"], sent["snapshot"]) == ("full", None, [sd, sw], sw)
    # The first is a full (the whole image), the second an incremental of nothing: nearly free.
    assert size_mb * MiB <= sent["bytes_logical"] <= size_mb * MiB * 1.01 + 4096, sent

    # Live keeps the base (the weekly, newest shared) and no older daily (max_on_live 0).
    assert snaps(lab, "live", ns, img) == [sw]
    assert snaps(lab, "backup", ns, bimg) == [sd, sw]
    assert_same_data(lab, ns, img, bimg, [sw])
    # Nothing was written between the two snapshots: both hold the image's data.
    assert checksum(lab, "backup", ns, bimg, sd) == data


def test_immediate_second_run_changes_nothing(lab, ns, tmp_path: Path) -> None:
    for index, img in enumerate(("a", "b")):
        lab.write_image("live", spec(ns, img), 8, seed=30 + index, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}, "weekly": {"count": 4}})
    first = assert_ok(run_backup(inv, tmp_path, now=day(0)))
    assert first.changed()["lab-backup"] > 0
    live_before, backup_before = state(lab, "live", ns), state(lab, "backup", ns)
    assert all(len(names) == 2 for names in live_before.values()), live_before
    assert len(backup_before) == 2

    second = assert_ok(run_backup(inv, tmp_path, now=day(0, minutes=30)))
    assert second.changed() == {host: 0 for host in second.stats}, second.stats
    assert set(second.stats) >= {"localhost", "lab-backup"}
    for img in ("a", "b"):
        plan = second.image(T_SNAPSHOT, img)
        assert (plan["due"], plan["new_snapshots"], plan["kind"], plan["transfers"]) == ([], [], "none", [])
        assert second.image(T_TRANSFER, img)["status"] == "up-to-date"
    assert second.result(T_RETENTION_LIVE)["images"] == []
    assert second.result(T_RETENTION_BACKUP)["images"] == []
    assert state(lab, "live", ns) == live_before
    assert state(lab, "backup", ns) == backup_before


def test_check_mode_changes_nothing_and_predicts_the_run(lab, ns, tmp_path: Path) -> None:
    names = ("c1", "c2")
    for index, img in enumerate(names):
        lab.write_image("live", spec(ns, img), 8, seed=40 + index, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 1}})
    name = cluster_name(inv)

    # 1. First run: full backups are planned.
    before = (state(lab, "live", ns), state(lab, "backup", ns))
    check = assert_ok(run_backup(inv, tmp_path, now=day(0), check=True))
    assert (state(lab, "live", ns), state(lab, "backup", ns)) == before
    assert before[1] == {}  # not even a placeholder image on the backup side
    s0 = snap_name("daily", 1, day(0))
    planned = {item["image"]: item for item in check.result(T_SNAPSHOT)["images"]}
    assert set(planned) == set(names)
    for img in names:
        assert planned[img]["new_snapshots"] == [s0]
        assert (planned[img]["kind"], planned[img]["base"]) == ("full", None)
        sent = check.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["snapshots"]) == ("planned", "full", [s0])
    assert check.result(T_SNAPSHOT)["changed"] is True

    real = assert_ok(run_backup(inv, tmp_path, now=day(0)))
    for img in names:
        assert _plan_view(real.image(T_SNAPSHOT, img)) == _plan_view(planned[img])
        sent = real.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "full", None, [s0])
    assert state(lab, "live", ns) == {img: planned[img]["new_snapshots"] for img in names}
    assert state(lab, "backup", ns) == {backup_image(name, img): [s0] for img in names}

    # 2. A day later: incrementals, and the previous snapshots expire on both sides.
    lab.overwrite("live", spec(ns, "c1"), 0.1, seed=42, admin=True)
    now = day(1, minutes=1)
    before = (state(lab, "live", ns), state(lab, "backup", ns))
    check = assert_ok(run_backup(inv, tmp_path, now=now, check=True))
    assert (state(lab, "live", ns), state(lab, "backup", ns)) == before
    s1 = snap_name("daily", 1, now)
    planned = {item["image"]: item for item in check.result(T_SNAPSHOT)["images"]}
    planned_live_expiry = {i["image"]: i["deleted"] for i in check.result(T_RETENTION_LIVE)["images"]}
    planned_backup_expiry = {
        i["image"]: (i["deleted"], i["removed"]) for i in check.result(T_RETENTION_BACKUP)["images"]
    }
    for img in names:
        assert planned[img]["new_snapshots"] == [s1]
        assert (planned[img]["kind"], planned[img]["base"]) == ("incremental", s0)
        sent = check.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("planned", "incremental", s0, [s1])
    # With daily count 1, s0 expires at day 1 and s1 becomes the base: s0 goes on both sides.
    assert planned_live_expiry == {img: [s0] for img in names}

    real = assert_ok(run_backup(inv, tmp_path, now=now))
    for img in names:
        assert _plan_view(real.image(T_SNAPSHOT, img)) == _plan_view(planned[img])
        sent = real.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == (
            "transferred",
            "incremental",
            s0,
            [s1],
        )
    real_backup_expiry = {i["image"]: (i["deleted"], i["removed"]) for i in real.result(T_RETENTION_BACKUP)["images"]}
    assert real_backup_expiry == {backup_image(name, img): ([s0], False) for img in names}
    assert {i["image"]: i["deleted"] for i in real.result(T_RETENTION_LIVE)["images"]} == planned_live_expiry
    assert state(lab, "live", ns) == {img: [s1] for img in names}
    assert state(lab, "backup", ns) == {backup_image(name, img): [s1] for img in names}
    for img in names:
        assert_same_data(lab, ns, img, backup_image(name, img), [s1])
    # The plan of --check must be what the real run did, backup-side expiry included.
    assert planned_backup_expiry == real_backup_expiry, (
        "--check predicted a different backup-side expiry than the real run did"
    )


def test_expiry_on_both_sides_with_injected_now(lab, ns, tmp_path: Path) -> None:
    img = "exp"
    lab.write_image("live", spec(ns, img), 8, seed=50, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 2, "max_on_live": 1}})
    bimg = backup_image(cluster_name(inv), img)
    # Run d at day d + d minutes: clear of the exact expiry instants (creation + 2 days).
    now = [day(d, minutes=d) for d in range(4)]
    s = [snap_name("daily", 2, moment) for moment in now]
    # backup: snapshots not yet 2 days old; live: the base (newest shared) + 1 older daily.
    expected = {
        0: ([s[0]], [s[0]]),
        1: ([s[0], s[1]], [s[0], s[1]]),
        2: ([s[1], s[2]], [s[1], s[2]]),
        3: ([s[2], s[3]], [s[2], s[3]]),
    }
    for d in range(4):
        if d:
            lab.overwrite("live", spec(ns, img), 0.05, seed=50 + d, admin=True)
        run = assert_ok(run_backup(inv, tmp_path, now=now[d]))
        sent = run.image(T_TRANSFER, img)
        assert sent["snapshots"] == [s[d]], (d, sent)
        assert (sent["kind"], sent["base"]) == (("full", None) if d == 0 else ("incremental", s[d - 1])), (d, sent)
        live_expected, backup_expected = expected[d]
        assert snaps(lab, "live", ns, img) == live_expected, f"day {d}: live"
        assert snaps(lab, "backup", ns, bimg) == backup_expected, f"day {d}: backup"
        deleted_live = {i["image"]: i["deleted"] for i in run.result(T_RETENTION_LIVE)["images"]}
        deleted_backup = {i["image"]: i["deleted"] for i in run.result(T_RETENTION_BACKUP)["images"]}
        assert deleted_live == ({img: [s[d - 2]]} if d >= 2 else {}), (d, deleted_live)
        assert deleted_backup == ({bimg: [s[d - 2]]} if d >= 2 else {}), (d, deleted_backup)
    assert_same_data(lab, ns, img, bimg, [s[2], s[3]])


def test_deleted_live_image_fades_out_after_extra_retention(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "stays"), 8, seed=60, admin=True)
    lab.write_image("live", spec(ns, "goes"), 8, seed=61, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 1}})
    name = cluster_name(inv)
    b_stays, b_goes = backup_image(name, "stays"), backup_image(name, "goes")
    extra = {"backurne_extra_retention_time": "2d"}

    assert_ok(run_backup(inv, tmp_path, now=day(0), extra_vars=extra))
    s0 = snap_name("daily", 1, day(0))
    assert state(lab, "backup", ns) == {b_goes: [s0], b_stays: [s0]}
    goes_data = checksum(lab, "backup", ns, b_goes, s0)
    lab.rbd("live", "snap", "purge", "--no-progress", spec(ns, "goes"), admin=True)
    lab.rbd("live", "rm", "--no-progress", spec(ns, "goes"), admin=True)

    # s0 expired at day 1; "goes" is kept until day 1 + 2 days of extra retention.
    within = day(2, minutes=1)
    run = assert_ok(run_backup(inv, tmp_path, now=within, extra_vars=extra))
    s_within = snap_name("daily", 1, within)
    assert [item["image"] for item in run.result(T_SNAPSHOT)["images"]] == ["stays"]
    assert state(lab, "backup", ns) == {b_goes: [s0], b_stays: [s_within]}
    assert checksum(lab, "backup", ns, b_goes, s0) == goes_data

    past = day(3, minutes=2)
    run = assert_ok(run_backup(inv, tmp_path, now=past, extra_vars=extra))
    s_past = snap_name("daily", 1, past)
    removed = {i["image"]: (i["deleted"], i["removed"]) for i in run.result(T_RETENTION_BACKUP)["images"]}
    assert removed == {b_goes: ([s0], True), b_stays: ([s_within], False)}, removed
    assert state(lab, "backup", ns) == {b_stays: [s_past]}
    assert state(lab, "live", ns) == {"stays": [s_past]}


def test_keep_min_holds_history_when_backups_fail(lab, ns, tmp_path: Path) -> None:
    img = "km"
    lab.write_image("live", spec(ns, img), 8, seed=70, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 1}, "weekly": {"count": 1}})
    bimg = backup_image(cluster_name(inv), img)
    keep = {"backurne_keep_min": 2}
    sd0, sw0 = snap_name("daily", 1, day(0)), "backup;weekly;1;2026-01-01T00:00:00.000001"
    sd1 = snap_name("daily", 1, day(1, minutes=1))

    assert_ok(run_backup(inv, tmp_path, now=day(0), extra_vars=keep))
    assert snaps(lab, "backup", ns, bimg) == [sd0, sw0]
    assert_ok(run_backup(inv, tmp_path, now=day(1, minutes=1), extra_vars=keep))
    # sd0 expired and is third newest: above the floor of 2, it goes.
    assert snaps(lab, "backup", ns, bimg) == [sw0, sd1]
    assert snaps(lab, "live", ns, img) == [sd1]

    # Backups "fail" from now on: the image is left out of the runs, or only cleanup runs.
    # Everything is long expired; without the floor only sd1 (the newest) would remain.
    failing = assert_ok(
        run_backup(inv, tmp_path, now=day(30), extra_vars={**keep, "backurne_limit_images": ["no-such-image"]})
    )
    assert failing.result(T_SNAPSHOT)["images"] == []
    assert snaps(lab, "backup", ns, bimg) == [sw0, sd1]
    assert_ok(run_backup(inv, tmp_path, now=day(4000), extra_vars={**keep, "backurne_cleanup_only": True}))
    assert snaps(lab, "backup", ns, bimg) == [sw0, sd1]
    assert snaps(lab, "live", ns, img) == [sd1]
    assert_same_data(lab, ns, img, bimg, [sd1])
