# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from ansible_collections.backurne.rbd.plugins.module_utils.report.history import (
    History,
    record_freeze_results,
    record_set_aside,
    record_transfer_results,
)

T1 = datetime(2026, 11, 29, 10)
T2 = datetime(2026, 11, 29, 11)
T3 = datetime(2026, 11, 29, 12)


def test_first_seen_is_kept_across_runs(tmp_path: Path) -> None:
    with History(str(tmp_path)) as history:
        assert history.record_seen("prod", {"web": "prod;web;None"}, T1) == {"web": T1}
    with History(str(tmp_path)) as history:
        seen = history.record_seen("prod", {"web": "prod;web;None", "db": "prod;db;None"}, T2)
        assert seen == {"web": T1, "db": T2}
        assert history.record_seen("other", {"web": None}, T3) == {"web": T3}  # per live cluster
        assert history.record_seen("prod", {"new": None}, T3, write=False) == {}
        assert history.known_backup_images("prod") == {"prod;web;None": "web", "prod;db;None": "db"}


def test_transfer_outcomes(tmp_path: Path) -> None:
    results = [
        {"image": "web", "backup_image": "p;web;None", "status": "transferred"},
        {"image": "db", "backup_image": "p;db;None", "status": "failed", "error": "import: boom"},
        {"image": "idle", "backup_image": "p;idle;None", "status": "up-to-date"},
        {"image": "busy", "backup_image": "p;busy;None", "status": "locked"},
        {"image": "noname", "status": "failed", "error": "bad name"},
    ]
    assert record_transfer_results(str(tmp_path), results, T1) is None
    assert record_transfer_results(str(tmp_path), results[1:2], T2) is None
    with History(str(tmp_path)) as history:
        states = history.transfer_states(["p;web;None", "p;db;None", "p;idle;None", "p;busy;None"])
    assert set(states) == {"p;web;None", "p;db;None"}
    assert not states["p;web;None"].failing and states["p;web;None"].last_success == T1
    db = states["p;db;None"]
    assert db.failing and db.failures == 2 and db.last_failure == T2 and db.last_error == "import: boom"
    record_transfer_results(str(tmp_path), [results[0] | {"image": "db", "backup_image": "p;db;None"}], T3)
    with History(str(tmp_path)) as history:
        db = history.transfer_states(["p;db;None"])["p;db;None"]
    assert not db.failing and db.failures == 0 and db.last_error == "import: boom"


def test_unusable_state_dir_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    failed = [{"image": "a", "backup_image": "x;a;None", "status": "failed"}]
    problem = record_transfer_results(str(blocker), failed, T1)
    assert problem is not None and problem.startswith(f"cannot record the transfer history in {blocker}/history.sqlite")


def test_freeze_outcomes_until_a_confirmed_thaw(tmp_path: Path) -> None:
    guest = {"vmid": 100, "name": "web1"}
    left = {"state": "may-be-frozen", "message": "guest 100 (web1) may be frozen"}
    plans = [
        {"image": "vm-100-disk-0", "backup_image": "u;scsi0;web1", "guest": guest, "freeze": left},
        {"image": "vm-101-disk-0", "backup_image": "u;scsi0;db1"},  # no freeze attempted
    ]
    assert record_freeze_results(str(tmp_path), plans, T1) is None
    assert record_freeze_results(str(tmp_path), [plans[0] | {"freeze": None}], T2) is None  # nothing due
    with History(str(tmp_path)) as history:
        states = history.freeze_states(["u;scsi0;web1", "u;scsi0;db1"])
    assert list(states) == ["u;scsi0;web1"]
    web = states["u;scsi0;web1"]
    assert web.may_be_frozen and web.time == T1 and web.guest == "100 (web1)" and web.message == left["message"]
    thawed = plans[0] | {"freeze": {"state": "thawed", "message": None}}
    assert record_freeze_results(str(tmp_path), [thawed], T3) is None
    with History(str(tmp_path)) as history:
        web = history.freeze_states(["u;scsi0;web1"])["u;scsi0;web1"]
    assert not web.may_be_frozen and web.time == T3


def test_set_aside_is_reported_until_a_later_successful_transfer(tmp_path: Path) -> None:
    done = {"image": "web", "backup_image": "p;web;None", "status": "transferred"}
    record_transfer_results(str(tmp_path), [done], T1)
    differed = {
        "image": "web",
        "backup_image": "p;web;None",
        "snapshot": "backup;daily;3;b",
        "set_aside": ["backup;daily;3;a", "backup;daily;3;b"],
        "note": "backup snapshot 'backup;daily;3;b' ... removed",
    }
    unremoved = {"image": "db", "backup_image": "p;db;None", "set_aside": [], "note": "not removed: locked"}
    assert record_set_aside(str(tmp_path), [differed, unremoved, {"image": "x"}], T2) is None
    with History(str(tmp_path)) as history:
        states = history.transfer_states(["p;web;None", "p;db;None"])
    web, db = states["p;web;None"], states["p;db;None"]
    assert web.healing and web.set_aside_at == T2 and not web.failing
    assert web.set_aside_snapshots == ("backup;daily;3;a", "backup;daily;3;b")
    assert web.set_aside_detail == differed["note"]
    # An image with no transfer recorded on this node still has its event.
    assert db.healing and db.set_aside_snapshots == () and db.last_success is None
    record_transfer_results(str(tmp_path), [done], T3)
    with History(str(tmp_path)) as history:
        assert not history.transfer_states(["p;web;None"])["p;web;None"].healing


def test_set_aside_in_an_old_database_adds_its_table(tmp_path: Path) -> None:
    # A history.sqlite written before the set_aside table existed.
    db = sqlite3.connect(tmp_path / "history.sqlite")
    db.execute(
        "CREATE TABLE transfers (backup_image TEXT PRIMARY KEY, image TEXT, last_success TEXT,"
        " last_failure TEXT, last_error TEXT, failures INTEGER NOT NULL DEFAULT 0)"
    )
    db.commit()
    db.close()
    assert record_set_aside(str(tmp_path), [{"image": "a", "backup_image": "p;a;None", "set_aside": ["s"]}], T1) is None
    with History(str(tmp_path)) as history:
        assert history.transfer_states(["p;a;None"])["p;a;None"].set_aside_snapshots == ("s",)
