"""Self-healing on the real lab (issue 12): a backup snapshot that differs from live is set aside
and re-sent, a written backup HEAD is rolled back before the incremental, live-side expiry keeps
the newest confirmed base, and the check says so until a good run.

Each fault is real: the backup cluster's admin writes into a backup image's HEAD (``rbd
import-diff`` of a hand-made diff, as ``lab.overwrite`` does) or rewrites one of our backup
snapshots with other data under the same name (``snap rm`` + ``snap create`` after such a write),
or the checksum command is missing. Every test asserts the exit code, the task results and the
JSON report, the snapshots on both clusters and their data by checksum, and that the next run
without the fault converges by itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playbook_helpers import (
    POOL,
    T_CHECKSUM,
    T_TRANSFER,
    PlaybookRun,
    assert_ok,
    backup_image,
    checksum,
    cluster_name,
    make_inventory,
    run_backup,
    snaps,
    spec,
)
from test_check_playbook import run_script
from test_verify_playbook import run_verify

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.stream.head_guard import reset_written_head

FORCE = {"backurne_force": True}
VERIFY = {"backurne_force": True, "backurne_verify": True}


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The JSON report of every playbook run of the test (backurne.rbd.report callback)."""
    path = tmp_path / "report.json"
    monkeypatch.setenv("BACKURNE_REPORT_JSON", str(path))
    return path


def record(report: Path, image: str) -> dict:
    (found,) = [rec for rec in json.loads(report.read_text())["images"] if rec["image"] == image]
    return found


def corrupt_backup_snapshot(lab, ns: str, bimage: str, snap: str, seed: int) -> None:
    """Give backup snapshot `snap` other data under the same name, as a bad import would."""
    lab.overwrite("backup", spec(ns, bimage), 0.1, seed=seed, admin=True)
    lab.rbd("backup", "snap", "rm", "--no-progress", spec(ns, bimage, snap), admin=True)
    lab.rbd("backup", "snap", "create", spec(ns, bimage, snap), admin=True)


def assert_shared_equal(lab, ns: str, image: str, bimage: str) -> list[str]:
    """Every snapshot on both sides holds the same data (the convergence criterion)."""
    shared = [name for name in snaps(lab, "live", ns, image) if name in snaps(lab, "backup", ns, bimage)]
    assert shared, "no snapshot shared by live and backup"
    for name in shared:
        live, backup = checksum(lab, "live", ns, image, name), checksum(lab, "backup", ns, bimage, name)
        assert live == backup, f"{image}@{name}: live {live} != backup {backup}"
    return shared


def newest_sent(run: PlaybookRun, image: str) -> str:
    sent = run.image(T_TRANSFER, image)
    assert sent["status"] == "transferred", sent
    return sent["snapshot"]


def test_written_head_is_rolled_back_before_the_incremental(lab, ns, tmp_path: Path, report: Path) -> None:
    img = "wh"
    lab.write_image("live", spec(ns, img), 8, seed=300, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    bimg = backup_image(cluster_name(inv), img)
    s0 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=FORCE)), img)
    data0 = checksum(lab, "live", ns, img, s0)

    # Somebody writes into the backup image's HEAD; live changes too.
    lab.overwrite("backup", spec(ns, bimg), 0.2, seed=301, admin=True)
    assert checksum(lab, "backup", ns, bimg) != data0
    lab.overwrite("live", spec(ns, img), 0.05, seed=302, admin=True)

    run = assert_ok(run_backup(inv, tmp_path, extra_vars=FORCE))
    sent = run.image(T_TRANSFER, img)
    assert (sent["kind"], sent["base"]) == ("incremental", s0), sent
    note = f"HEAD of backup image {bimg!r} had writes since snapshot {s0!r}: rolled back to it before the incremental"
    assert sent["note"] == note
    assert record(report, img)["note"] == note and record(report, img)["status"] == "transferred"
    s1 = sent["snapshot"]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1]
    assert checksum(lab, "backup", ns, bimg, s1) == checksum(lab, "live", ns, img, s1)
    assert checksum(lab, "backup", ns, bimg, s0) == data0  # the older backup is untouched

    # The next run finds HEAD equal to its newest snapshot: nothing to roll back.
    lab.overwrite("live", spec(ns, img), 0.05, seed=303, admin=True)
    run = assert_ok(run_backup(inv, tmp_path, extra_vars=FORCE))
    sent = run.image(T_TRANSFER, img)
    assert (sent["kind"], sent["base"], sent.get("note")) == ("incremental", s1, None), sent
    assert_shared_equal(lab, ns, img, bimg)


def test_corrupt_backup_snapshot_caught_in_run_is_set_aside_and_resent(lab, ns, tmp_path: Path, report: Path) -> None:
    img = "cb"
    lab.write_image("live", spec(ns, img), 8, seed=310, admin=True)
    # max_on_live 1: live keeps one snapshot older than the base, so that the set-aside one's
    # predecessor is still shared and the re-send is incremental.
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
    name, bimg = cluster_name(inv), backup_image(cluster_name(inv), img)
    s0 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=VERIFY)), img)
    lab.overwrite("live", spec(ns, img), 0.05, seed=311, admin=True)
    s1 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=VERIFY)), img)
    assert snaps(lab, "live", ns, img) == [s0, s1] and snaps(lab, "backup", ns, bimg) == [s0, s1]

    # s1 on the backup gets other data (a bad import): the next incremental builds on it.
    corrupt_backup_snapshot(lab, ns, bimg, s1, seed=312)
    lab.overwrite("live", spec(ns, img), 0.05, seed=313, admin=True)
    run = run_backup(inv, tmp_path, extra_vars=VERIFY)
    assert run.rc != 0, run.describe()
    s2 = newest_sent(run, img)
    # The in-run checksum catches s2, walks back: s1 differs too, s0 is equal (the confirmed base).
    summed = run.image(T_CHECKSUM, img)
    assert (summed["match"], summed["set_aside"], summed["confirmed_base"]) == (False, [s1, s2], s0), summed
    failure = run.failure_text()
    assert f"image {img!r} (backup image {bimg!r}) snapshot {s2!r}: checksums differ" in failure, failure
    assert f"older snapshot(s) {s1!r} differed too: removed" in failure
    assert snaps(lab, "backup", ns, bimg) == [s0]
    # Live-side expiry counted s0 as the base: nothing of ours went (with s2 counted, s0 would have).
    assert snaps(lab, "live", ns, img) == [s0, s1, s2]
    rec = record(report, img)
    assert (rec["status"], rec["set_aside"], rec["verified"]) == ("failed", [s1, s2], False)
    assert f"the next run re-sends from the newest confirmed shared snapshot {s0!r}" in rec["note"]

    rc, line = run_script(inv, tmp_path)
    assert rc == 2, line
    assert f"{name}/{img} backup snapshot {s1}, {s2} removed after a checksum mismatch at " in line, line

    # No fault any more: s1 and s2 are re-sent from s0 onto a HEAD rolled back to s0, plus s3.
    run = assert_ok(run_backup(inv, tmp_path, extra_vars=VERIFY))
    sent = run.image(T_TRANSFER, img)
    assert (sent["kind"], sent["base"], sent["snapshots"][:2]) == ("incremental", s0, [s1, s2]), sent
    assert "rolled back to it before the incremental" in sent["note"]
    assert run.image(T_CHECKSUM, img)["match"] is True
    shared = assert_shared_equal(lab, ns, img, bimg)
    assert shared == snaps(lab, "live", ns, img) == [s2, sent["snapshot"]]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1, s2, sent["snapshot"]]
    assert run_script(inv, tmp_path) == (0, "BACKURNE OK - 1 image checked\n")


def test_mismatch_found_by_verify_is_set_aside_and_the_next_backup_converges(
    lab, ns, tmp_path: Path, report: Path
) -> None:
    img = "vf"
    lab.write_image("live", spec(ns, img), 8, seed=320, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    name, bimg = cluster_name(inv), backup_image(cluster_name(inv), img)
    s0 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=FORCE)), img)
    lab.overwrite("live", spec(ns, img), 0.05, seed=321, admin=True)
    s1 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=FORCE)), img)
    assert snaps(lab, "live", ns, img) == [s1] and snaps(lab, "backup", ns, bimg) == [s0, s1]
    data1 = checksum(lab, "live", ns, img, s1)

    corrupt_backup_snapshot(lab, ns, bimg, s1, seed=322)
    assert checksum(lab, "backup", ns, bimg, s1) != data1
    rc, output, verified = run_verify(inv, tmp_path)
    assert rc != 0, output
    assert f"image {img!r} (backup image {bimg!r}) snapshot {s1!r}: checksums differ" in output
    # s1 was the only snapshot both sides shared: nothing confirmed is left, the next run is a full.
    assert snaps(lab, "backup", ns, bimg) == [s0]
    assert snaps(lab, "live", ns, img) == [s1]
    (rec,) = verified["images"]
    assert (rec["status"], rec["set_aside"]) == ("failed", [s1])
    assert rec["note"].endswith("no confirmed shared snapshot is left: the next run sends a full backup")

    rc, line = run_script(inv, tmp_path)
    assert rc == 2 and f"{name}/{img} backup snapshot {s1} removed after a checksum mismatch at " in line, line

    # The next backup sends a full of its new snapshot s2 into the existing image (HEAD emptied
    # first). With no shared base, no Ceph order places s1 (live) against s0 (backup only), so s1
    # is not re-sent (policy._pending); it stays on live until its own expiry.
    run = assert_ok(run_backup(inv, tmp_path, extra_vars=VERIFY))
    sent = run.image(T_TRANSFER, img)
    assert (sent["kind"], sent["base"]) == ("full", None), sent
    assert sent["snapshots"] == [sent["snapshot"]] and sent["snapshot"] not in (s0, s1), sent
    assert run.image(T_CHECKSUM, img)["match"] is True
    assert assert_shared_equal(lab, ns, img, bimg) == [sent["snapshot"]]
    assert snaps(lab, "backup", ns, bimg) == [s0, sent["snapshot"]]
    # live did not change since s1: the full carries s1's data, now confirmed on backup
    assert checksum(lab, "backup", ns, bimg, sent["snapshot"]) == data1
    rc, output, verified = run_verify(inv, tmp_path)
    assert rc == 0, output
    assert run_script(inv, tmp_path) == (0, "BACKURNE OK - 1 image checked\n")


def test_an_unconfirmed_snapshot_does_not_advance_the_live_base(lab, ns, tmp_path: Path, report: Path) -> None:
    img = "uc"
    lab.write_image("live", spec(ns, img), 8, seed=330, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7}})
    bimg = backup_image(cluster_name(inv), img)
    s0 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=VERIFY)), img)
    assert snaps(lab, "live", ns, img) == [s0]

    # The checksum cannot be made (its command is missing on both nodes): the transfer of s1
    # worked, but s1 is not confirmed, so live keeps s0.
    lab.overwrite("live", spec(ns, img), 0.05, seed=331, admin=True)
    run = run_backup(inv, tmp_path, extra_vars={**VERIFY, "backurne_hasher": ["backurne-no-such-hasher"]})
    assert run.rc != 0, run.describe()
    s1 = newest_sent(run, img)
    data1 = checksum(lab, "live", ns, img, s1)
    summed = run.image(T_CHECKSUM, img)
    assert (summed["match"], summed["set_aside"], summed["live"], summed["backup"]) == (False, [], None, None)
    assert f"image {img!r} (backup image {bimg!r}) snapshot {s1!r}: " in run.failure_text()
    assert snaps(lab, "live", ns, img) == [s0, s1]
    assert snaps(lab, "backup", ns, bimg) == [s0, s1]  # not found bad: not removed
    assert record(report, img)["status"] == "failed"

    # Fixed: the next run confirms its snapshot and expires s0 and s1 on live as usual.
    lab.overwrite("live", spec(ns, img), 0.05, seed=332, admin=True)
    s2 = newest_sent(assert_ok(run_backup(inv, tmp_path, extra_vars=VERIFY)), img)
    assert snaps(lab, "live", ns, img) == [s2]
    assert assert_shared_equal(lab, ns, img, bimg) == [s2]
    assert checksum(lab, "backup", ns, bimg, s1) == data1


def test_head_guard_through_the_rbd_cli(lab, ns) -> None:
    """The guard's CLI path (`rbd info`, `rbd diff --from-snap`, `rbd snap rollback`): this test
    process has no python3-rbd, so RbdRunner uses the CLIs, as on a node without it."""
    runner = RbdRunner(
        CephAccess("ceph", "backurne", str(lab.keyring("backup")), str(lab.conf("backup"))), in_process=False
    )
    image = ImageSpec(POOL, ns, "guarded")
    lab.write_image("backup", spec(ns, image.image), 8, seed=340, admin=True)
    lab.rbd("backup", "snap", "create", spec(ns, image.image, "base"), admin=True)
    base = checksum(lab, "backup", ns, image.image, "base")
    assert reset_written_head(runner, image, "base") is None
    lab.overwrite("backup", spec(ns, image.image), 0.05, seed=341, admin=True)
    assert checksum(lab, "backup", ns, image.image) != base
    assert "rolled back" in (reset_written_head(runner, image, "base") or "")
    assert checksum(lab, "backup", ns, image.image) == base
    # A HEAD resized since its snapshot differs too (even with no data written).
    lab.rbd("backup", "resize", "--no-progress", "--size", "16M", spec(ns, image.image), admin=True)
    assert runner.head_differs(image.at("base")) is True
    with pytest.raises(RbdError) as caught:
        runner.head_differs(image.at("missing"))
    assert caught.value.is_not_found, caught.value
