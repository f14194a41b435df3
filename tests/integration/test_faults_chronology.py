"""Fault: snapshot names in local time (backurne 2.x), ahead of and behind UTC.

backurne 2.x named its snapshots with the backup host's local time. A pool it wrote keeps such
names; once our backup.yml takes over, their times are off by the zone's offset: an hour ahead
with TZ=Europe/Paris in winter (UTC+1), five hours behind with TZ=America/New_York (UTC-5).
Ordering by the names' times then picks the wrong base, expires on live the snapshot a run has
just sent (ahead) and verifies an older snapshot than the newest shared one (behind). The order
must come from Ceph (snapshot ids), as listed.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playbook_helpers import (
    REPO,
    T_RETENTION_LIVE,
    T_TRANSFER,
    assert_ok,
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
)
from test_rados_direct import NODE_PYTHON, listings  # in-process vs CLI listing, on the node's python

VERIFY = REPO / "playbooks" / "verify.yml"
T_VERIFY = "Hash the newest shared snapshot on both sides"
PROFILES = {"daily": {"count": 30}}  # max_on_live 0: live keeps the base and newer only
FORCE = {"backurne_force": True}


def legacy_name(utc: datetime, zone: str) -> str:
    """The name backurne 2.x gave a daily snapshot taken at ``utc`` on a host with TZ=zone."""
    local = utc.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return snap_name("daily", 30, local)


def legacy_backup(lab, ns: str, image: str, bimage: str, base: str, snap: str) -> None:
    """What a 2.x run leaves: a snapshot on live, sent incrementally onto the backup image."""
    lab.rbd("live", "snap", "create", "--no-progress", spec(ns, image, snap), admin=True)
    lab.pipeline(
        lab.rbd_argv(
            "live", "export-diff", "--no-progress", "--from-snap", base, spec(ns, image, snap), "-", admin=True
        ),
        lab.rbd_argv("backup", "import-diff", "--no-progress", "-", spec(ns, bimage), admin=True),
    ).check()


def verified_snapshot(lab, inv: dict, tmp_path: Path, image: str) -> str:
    run = run_playbook(VERIFY, inv, tmp_path, extra_vars={})
    assert run.rc == 0, f"verify failed:\n{run.failure_text()}\n{run.describe()}"
    item = run.image(T_VERIFY, image)
    assert item["match"] is True and item["live"] == item["backup"], item
    return item["snapshot"]


@pytest.mark.parametrize(
    ("zone", "offset"),
    [("Europe/Paris", timedelta(hours=1)), ("America/New_York", timedelta(hours=-5))],
    ids=["ahead-of-utc", "behind-utc"],
)
def test_legacy_local_time_names_do_not_decide_the_order(lab, ns, tmp_path: Path, zone: str, offset: timedelta) -> None:
    img = "chrono"
    lab.write_image("live", spec(ns, img), 8, seed=700, admin=True)
    inv = make_inventory(lab, ns, profiles=PROFILES)
    bimg = backup_image(cluster_name(inv), img)

    # Our first backup, at T (UTC).
    t = day(0)
    ours0 = snap_name("daily", 30, t)
    assert_ok(run_backup(inv, tmp_path, now=t))
    assert snaps(lab, "backup", ns, bimg) == [ours0]

    # Half an hour later a backurne 2.x run (its cron not yet removed) backs the image up too,
    # naming its snapshot in local time.
    lab.overwrite("live", spec(ns, img), 0.1, seed=701, admin=True)
    legacy = legacy_name(t + timedelta(minutes=30), zone)
    assert (datetime.fromisoformat(legacy.split(";")[3]) - (t + timedelta(minutes=30))) == offset
    legacy_backup(lab, ns, img, bimg, ours0, legacy)
    legacy_data = checksum(lab, "live", ns, img, legacy)
    assert checksum(lab, "backup", ns, bimg, legacy) == legacy_data
    # By name, 2.x's snapshot looks newer than every run within the next hour (ahead), or
    # older than ours taken 30 minutes before it (behind); by Ceph order it is the newest.
    assert snaps(lab, "live", ns, img) == snaps(lab, "backup", ns, bimg) == [ours0, legacy]

    # verify.yml hashes the truly newest shared snapshot: 2.x's, whatever its name says.
    assert verified_snapshot(lab, inv, tmp_path, img) == legacy

    # Our forced runs within the hour: each sends from the truly newest shared snapshot and
    # keeps on live what it has just sent.
    base = legacy
    sent: list[str] = []
    for step, minutes in enumerate((40, 50)):
        lab.overwrite("live", spec(ns, img), 0.05, seed=710 + step, admin=True)
        now = t + timedelta(minutes=minutes)
        new = snap_name("daily", 30, now)
        run = assert_ok(run_backup(inv, tmp_path, now=now, extra_vars=FORCE))
        moved = run.image(T_TRANSFER, img)
        assert (moved["status"], moved["kind"], moved["base"], moved["snapshots"]) == (
            "transferred",
            "incremental",
            base,
            [new],
        ), moved
        # Live: only the base and newer (max_on_live 0): the snapshot just sent stays, the
        # older ones (by Ceph order) go, 2.x's included.
        expired = live_expired(run, img)
        assert expired == ([ours0, legacy] if step == 0 else [base]), expired
        assert snaps(lab, "live", ns, img) == [new]
        sent.append(new)
        assert snaps(lab, "backup", ns, bimg) == [ours0, legacy, *sent]
        # The backup snapshot equals live, by checksum.
        assert checksum(lab, "backup", ns, bimg, new) == checksum(lab, "live", ns, img, new)
        base = new
    assert checksum(lab, "backup", ns, bimg, legacy) == legacy_data

    # verify.yml now checks our last snapshot, the newest shared one by Ceph order.
    assert verified_snapshot(lab, inv, tmp_path, img) == sent[-1]

    # Nothing due an hour later (daily): the run changes nothing and the base stays.
    later = t + timedelta(hours=2)
    run = assert_ok(run_backup(inv, tmp_path, now=later))
    assert run.image(T_TRANSFER, img)["snapshots"] == []
    assert snaps(lab, "live", ns, img) == [sent[-1]]
    assert snaps(lab, "backup", ns, bimg) == [ours0, legacy, *sent]


def live_expired(run, image: str) -> list[str]:
    """What live-side retention deleted on ``image`` (it lists only images it changed)."""
    done = {item["image"]: item["deleted"] for item in run.result(T_RETENTION_LIVE).get("images", [])}
    return done.get(image, [])


def test_listings_are_in_snapshot_id_order_whatever_the_names(lab, ns) -> None:
    """Both listings the modules use (in process from the image header, and `rbd ls -l`) give
    each image's snapshots by snapshot id, not by name or by the time in it."""
    assert subprocess.run([NODE_PYTHON, "-c", "import rados"], capture_output=True, timeout=30).returncode == 0
    image = spec(ns, "order")
    lab.rbd("live", "create", "--size", "4M", image, admin=True)
    paris = "backup;daily;30;2026-01-01T01:30:00.000000"  # 2.x, local time: taken first
    ours = "backup;daily;30;2026-01-01T00:40:00.000000"
    created = [paris, ours, "zz-operator", "aa-operator"]
    for snap in created:
        lab.rbd("live", "snap", "create", "--no-progress", f"{image}@{snap}", admin=True)
    # Removed and taken again: a new, higher id, whatever its name.
    lab.rbd("live", "snap", "rm", "--no-progress", f"{image}@{paris}", admin=True)
    lab.rbd("live", "snap", "create", "--no-progress", f"{image}@{paris}", admin=True)
    expected = [ours, "zz-operator", "aa-operator", paris]
    assert snaps(lab, "live", ns, "order") == expected  # `rbd snap ls`, sorted by id
    found = listings(lab, "live", ns)
    assert (found["fast_by"], found["cli_by"]) == ("rados", "rbd"), found
    assert found["fast"]["order"] == found["cli"]["order"] == expected, found
