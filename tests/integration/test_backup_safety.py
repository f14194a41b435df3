"""What backup.yml must never do: touch what is not its own, drop the newest shared snapshot,
run a word of an image name, or start working on a bad configuration.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from playbook_helpers import (
    REPO,
    T_PREFLIGHT,
    T_SNAPSHOT,
    T_TRANSFER,
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

OLD_OURS = "backup;daily;1;2020-01-01T00:00:00.000000"


def test_foreign_snapshots_and_images_are_never_touched(lab, ns, tmp_path: Path) -> None:
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 1}})
    name = cluster_name(inv)
    lab.write_image("live", spec(ns, "fx"), 8, seed=100, admin=True)
    lab.write_image("live", spec(ns, "fy"), 8, seed=101, admin=True)
    # Foreign snapshots on live: not ours, even when they look like ours.
    live_foreign = ["manual-snap", "backupx;daily;1;2020-01-01T00:00:00", "backup-daily", "backup;not-a-date"]
    for snap in live_foreign:
        lab.rbd("live", "snap", "create", "--no-progress", spec(ns, "fx", snap), admin=True)
    # Foreign images on the backup namespace, some with an old "backup;..." snapshot.
    backup_foreign = {
        "not-a-backup": [OLD_OURS],
        "othercluster;img;None": [OLD_OURS],
        f"{name};fx": [OLD_OURS],  # two fields: not a backup image name
        f"{name}x;fx;None": [OLD_OURS],  # another cluster whose name starts like ours
    }
    sums = {}
    for index, (image, snapshots) in enumerate(backup_foreign.items()):
        lab.write_image("backup", spec(ns, image), 8, seed=110 + index, admin=True)
        for snap in snapshots:
            lab.rbd("backup", "snap", "create", "--no-progress", spec(ns, image, snap), admin=True)
        sums[image] = checksum(lab, "backup", ns, image)

    def assert_foreign_intact(when: str) -> None:
        live_fx = snaps(lab, "live", ns, "fx")
        assert [s for s in live_fx if s in live_foreign] == live_foreign, f"{when}: live fx {live_fx}"
        backup_now = state(lab, "backup", ns)
        for image, snapshots in backup_foreign.items():
            assert backup_now.get(image) == sorted(snapshots), f"{when}: backup {image!r}: {backup_now.get(image)}"
            assert checksum(lab, "backup", ns, image) == sums[image], f"{when}: backup {image!r} HEAD changed"

    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 1, day(0))
    assert_foreign_intact("day 0")
    assert snaps(lab, "live", ns, "fx") == [*live_foreign, s0]
    assert snaps(lab, "backup", ns, backup_image(name, "fx")) == [s0]
    assert_same_data(lab, ns, "fx", backup_image(name, "fx"), [s0])
    # An operator's snapshot on one of our backup images is foreign too.
    b_fy = backup_image(name, "fy")
    lab.rbd("backup", "snap", "create", "--no-progress", spec(ns, b_fy, "operator-pin"), admin=True)
    pin_data = checksum(lab, "backup", ns, b_fy, "operator-pin")

    far = day(400)
    keep0 = {"backurne_keep_min": 0}
    assert_ok(run_backup(inv, tmp_path, now=far, extra_vars=keep0))
    s_far = snap_name("daily", 1, far)
    assert_foreign_intact("day 400")
    assert snaps(lab, "live", ns, "fx") == [*live_foreign, s_far]
    assert snaps(lab, "backup", ns, backup_image(name, "fx")) == [s_far]
    assert sorted(snaps(lab, "backup", ns, b_fy)) == sorted(["operator-pin", s_far])

    # fy goes away on live; long after its last snapshot expired, its backup image fades out,
    # but the operator's snapshot pins it: the image and that snapshot stay.
    lab.rbd("live", "snap", "purge", "--no-progress", spec(ns, "fy"), admin=True)
    lab.rbd("live", "rm", "--no-progress", spec(ns, "fy"), admin=True)
    assert_ok(run_backup(inv, tmp_path, now=day(4000), extra_vars=keep0))
    s_last = snap_name("daily", 1, day(4000))
    assert_foreign_intact("day 4000")
    assert snaps(lab, "live", ns, "fx") == [*live_foreign, s_last]
    assert b_fy in images(lab, "backup", ns)
    assert "operator-pin" in snaps(lab, "backup", ns, b_fy)
    assert checksum(lab, "backup", ns, b_fy, "operator-pin") == pin_data


def test_newest_shared_snapshot_is_never_deleted(lab, ns, tmp_path: Path) -> None:
    img = "ns1"
    lab.write_image("live", spec(ns, img), 8, seed=120, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
    bimg = backup_image(cluster_name(inv), img)
    s0, s1 = snap_name("daily", 7, day(0)), snap_name("daily", 7, day(1, minutes=1))
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    data0 = checksum(lab, "live", ns, img)
    lab.overwrite("live", spec(ns, img), 0.1, seed=121, admin=True)
    assert_ok(run_backup(inv, tmp_path, now=day(1, minutes=1)))
    assert snaps(lab, "live", ns, img) == [s0, s1]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1]

    # Somebody removes the newest snapshot on live: s0 is now the newest shared one (the base
    # of the next incremental), s1 the newest on backup. Everything is long expired.
    lab.rbd("live", "snap", "rm", "--no-progress", spec(ns, img, s1), admin=True)
    cleanup = {"backurne_cleanup_only": True, "backurne_keep_min": 0}
    assert_ok(run_backup(inv, tmp_path, now=day(1000), extra_vars=cleanup))
    assert snaps(lab, "live", ns, img) == [s0]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1]
    assert checksum(lab, "backup", ns, bimg, s0) == data0

    # The next backup still goes incrementally from s0, and is right.
    lab.overwrite("live", spec(ns, img), 0.05, seed=122, admin=True)
    later = day(1000, minutes=1)
    s2 = snap_name("daily", 7, later)
    run = assert_ok(run_backup(inv, tmp_path, now=later, extra_vars={"backurne_keep_min": 0}))
    sent = run.image(T_TRANSFER, img)
    assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == ("transferred", "incremental", s0, [s2])
    assert snaps(lab, "backup", ns, bimg) == [s2]
    assert snaps(lab, "live", ns, img) == [s0, s2]
    assert_same_data(lab, ns, img, bimg, [s2])


def test_hostile_image_names(lab, ns, tmp_path: Path) -> None:
    marker = f"pwned-{uuid.uuid4().hex[:8]}"
    # No '/' or '@' (rbd cannot address those): the injected commands write into $HOME.
    hostile = [
        "sp ace",
        "quo'te",
        'dq"uote',
        f"$(cd && touch {marker}-a)",
        f"`cd && touch {marker}-b`",
        f"x$(cd && touch {marker}-c)'\"`cd && touch {marker}-d`",
        "-dash",
        "--help",
    ]
    unbackupable = "semi;colon"  # ';' is the field separator of backup image names
    for index, img in enumerate([*hostile, unbackupable]):
        lab.write_image("live", spec(ns, img), 8, seed=130 + index, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 1}})
    name = cluster_name(inv)

    def markers() -> list[str]:
        places = {Path.home(), Path("/root"), Path("/tmp"), Path("/"), REPO, tmp_path, lab.lab_dir}
        return sorted(str(p) for place in places for p in place.glob(f"{marker}*"))

    # The detector sees a command run through the live node's shell the way an injection would.
    lab.ssh("live", f"cd && touch {marker}-selftest")
    assert [Path(p).name for p in markers()] == [f"{marker}-selftest"]
    for path in markers():
        Path(path).unlink()

    s0 = snap_name("daily", 1, day(0))
    run = run_backup(inv, tmp_path, now=day(0))
    assert run.rc != 0, "an image that cannot be backed up must fail the run"
    failures = run.failure_text()
    assert unbackupable in failures, failures
    assert [item["image"] for item in run.result(T_SNAPSHOT)["failed_images"]] == [unbackupable]
    assert snaps(lab, "live", ns, unbackupable) == []
    assert state(lab, "backup", ns) == {backup_image(name, img): [s0] for img in hostile}
    for img in hostile:
        sent = run.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["snapshots"]) == ("transferred", "full", [s0]), sent
        assert snaps(lab, "live", ns, img) == [s0]
        assert_same_data(lab, ns, img, backup_image(name, img), [s0])
    assert markers() == []

    # And incrementally, with the expired s0 deleted on both sides (snap rm of these names).
    for index, img in enumerate(hostile):
        lab.overwrite("live", spec(ns, img), 0.05, seed=140 + index, admin=True)
    now = day(1, minutes=1)
    s1 = snap_name("daily", 1, now)
    run = run_backup(inv, tmp_path, now=now)
    assert run.rc != 0 and unbackupable in run.failure_text()
    for img in hostile:
        sent = run.image(T_TRANSFER, img)
        assert (sent["status"], sent["kind"], sent["base"], sent["snapshots"]) == (
            "transferred",
            "incremental",
            s0,
            [s1],
        ), sent
        assert snaps(lab, "live", ns, img) == [s1]
        assert snaps(lab, "backup", ns, backup_image(name, img)) == [s1]
        assert_same_data(lab, ns, img, backup_image(name, img), [s1])
    assert snaps(lab, "live", ns, unbackupable) == []
    assert markers() == []


BAD_INPUTS = {
    "unknown-profile-key": ({"profiles": {"daily": {"cuont": 7}}}, ["cuont", "daily"]),
    "count-zero": ({"profiles": {"daily": {"count": 0}}}, ["count", "daily"]),
    "interval-1x": ({"profiles": {"fortnightly": {"count": 2, "interval": "1x"}}}, ["1x", "fortnightly"]),
    "prefix-semicolon": ({"extra_vars": {"backurne_snap_prefix": "bad;prefix"}}, ["bad;prefix"]),
    "prefix-quote": ({"extra_vars": {"backurne_snap_prefix": "it's"}}, ["it's"]),
    "prefix-double-quote": ({"extra_vars": {"backurne_snap_prefix": 'say"'}}, ['say"']),
    "no-backup-nodes": ({"backup_nodes": False}, ["backup node"]),
    "unknown-live-key": ({"live_overrides": {"namesapce": "x"}}, ["namesapce"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_before_anything_is_touched(lab, ns, tmp_path: Path, case: str) -> None:
    setup, culprits = BAD_INPUTS[case]
    lab.rbd("live", "create", "--size", "8M", spec(ns, "victim"), admin=True)
    inv = make_inventory(
        lab,
        ns,
        profiles=setup.get("profiles", {"daily": {"count": 7}}),
        live_overrides=setup.get("live_overrides"),
        backup_nodes=setup.get("backup_nodes", True),
    )
    run = run_backup(inv, tmp_path, now=day(0), extra_vars=setup.get("extra_vars"))
    assert run.rc != 0, run.describe()
    failed = run.failed_events()
    assert failed, run.describe()
    # The preflight is what failed: nothing after it ran.
    assert failed[0].task == T_PREFLIGHT, [(e.task, e.status) for e in run.events]
    assert not [e for e in run.events if e.task == T_SNAPSHOT]
    message = failed[0].result.get("msg", "")
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not named in: {message}"
    assert snaps(lab, "live", ns, "victim") == []
    assert images(lab, "backup", ns) == []
