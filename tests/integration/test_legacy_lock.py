# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A cut-over from backurne 2.x: while a 2.x process holds a lock in its lockdir on the backup
node, backup.yml refuses to start, naming the lock and the pid, and touches nothing; once 2.x is
done, the next run backs up (docs/migration.md)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from playbook_helpers import (
    assert_ok,
    backup_image,
    cluster_name,
    day,
    images,
    make_inventory,
    run_backup,
    snap_name,
    snaps,
    spec,
)


def test_backup_waits_for_backurne_2x_to_release_its_locks(lab, ns, tmp_path: Path) -> None:
    lab.write_image("live", spec(ns, "cutover"), 4, seed=410, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 3}})
    bimg = backup_image(cluster_name(inv), "cutover")
    lockdir = tmp_path / "lock"  # the lab's backup node shares this host's filesystem and kernel
    lockdir.mkdir()
    (lockdir / "rbdlive;idle;None").write_text("")  # left by an earlier 2.x run: not a lock
    held = lockdir / "rbdlive;cutover;None"
    extra = {"backurne_legacy_lockdir": str(lockdir)}

    with open(held, "a") as handle:  # what 2.x's py-filelock does while it works on an image
        fcntl.flock(handle, fcntl.LOCK_EX)
        refused = run_backup(inv, tmp_path, now=day(0), extra_vars=extra)
    assert refused.rc != 0, refused.describe()
    text = refused.failure_text()
    assert f"{held} (pid " in text and "backurne 2.x" in text, text
    assert "rbdlive;idle;None" not in text
    assert snaps(lab, "live", ns, "cutover") == []  # nothing touched
    assert bimg not in images(lab, "backup", ns)

    run = assert_ok(run_backup(inv, tmp_path, now=day(0, minutes=5), extra_vars=extra))
    s0 = snap_name("daily", 3, day(0, minutes=5))
    assert snaps(lab, "live", ns, "cutover") == [s0]
    assert snaps(lab, "backup", ns, bimg) == [s0]
    assert run.changed()["lab-backup"] >= 1
