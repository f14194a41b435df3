# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The backup window in the transfer job: no transfer starts after its end, the images not
# started are deferred (ok, not failed) and recorded, and go first in the next run.
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.policy.priority import priority_order
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.report.health import check_images
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import (
    History,
    deferred_images,
    record_transfer_results,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.records import (
    image_records,
    prometheus_lines,
    report_lines,
    run_summary,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.backup_job import TransferBatch, TransferSettings
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import StreamOptions

S0 = "backup;daily;7;2026-01-01T00:00:00.000000"
S1 = "backup;daily;7;2026-01-02T00:00:00.000000"
END = datetime(2026, 1, 2, 6, 0)


class Untouchable:
    """A runner a deferred image must never reach."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a deferred image called the runner's {name}")


def settings(**extra: Any) -> TransferSettings:
    params = {"pool": "bk", "namespace": None, "source_pool": "rbd", "source_namespace": None, "snap_prefix": "backup"}
    derived: dict[str, Any] = {"stream": StreamOptions(), "lock_ttl": timedelta(hours=6), "workers": 1}
    return TransferSettings.from_params(params, **{**derived, **extra})


def plan(image: str, *steps: tuple[str | None, str], **extra: Any) -> dict[str, Any]:
    transfers = [{"from_snap": base, "to_snap": snap} for base, snap in steps]
    return {"image": image, "backup_image": f"c;{image};None", "transfers": transfers, **extra}


class SendsEverything(TransferBatch):
    """The job with each image's transfer replaced by a success that advances the clock 1 min."""

    def __init__(self, settings: TransferSettings, start: datetime) -> None:
        self.now = start
        super().__init__(Untouchable(), Untouchable(), settings, clock=lambda: self.now)  # type: ignore[arg-type]
        self.sent: list[str] = []

    def transfer_image(self, plan: Any) -> dict[str, Any]:
        if self.window_closed() or not plan.get("transfers"):
            return super().transfer_image(plan)
        self.sent.append(plan["image"])
        self.now += timedelta(minutes=1)  # the transfer takes a minute
        result = super().transfer_image({**plan, "transfers": []})
        result.update(status="transferred", snapshots=[t["to_snap"] for t in plan["transfers"]])
        return result


def test_a_window_already_past_defers_every_image_and_touches_nothing(tmp_path: Path) -> None:
    batch = TransferBatch(
        Untouchable(),  # type: ignore[arg-type]
        Untouchable(),  # type: ignore[arg-type]
        settings(window_end=END, state_dir=tmp_path),
        clock=lambda: END,  # the end itself: closed
    )
    out = batch.run([plan("web", (None, S0), (S0, S1)), plan("db", (S0, S1)), plan("idle")])
    assert [(r["image"], r["status"], r["ok"], r["snapshots"]) for r in out["images"]] == [
        ("web", "deferred", True, []),
        ("db", "deferred", True, []),
        ("idle", "up-to-date", True, []),  # nothing to send: not deferred
    ]
    assert out["failed_images"] == [] and out["changed"] is False and out["transfer_order"] == []
    assert out["deferred_images"] == [
        {"image": "web", "backup_image": "c;web;None"},
        {"image": "db", "backup_image": "c;db;None"},
    ]
    assert "backup window ended at 2026-01-02 06:00:00 UTC" in out["images"][0]["note"]
    assert deferred_images(str(tmp_path)) == ({"c;web;None", "c;db;None"}, None)
    # Not a failed attempt: the check sees no failure.
    with History(str(tmp_path)) as history:
        assert history.transfer_states(["c;web;None", "c;db;None"]) == {}


def test_the_window_closing_mid_run_defers_the_rest_and_they_go_first_next_run(tmp_path: Path) -> None:
    plans = [plan(name, (S0, S1)) for name in ("a", "b", "c", "d")]
    first = SendsEverything(settings(window_end=END, state_dir=tmp_path), END - timedelta(minutes=2))
    out = first.run(plans)
    # Two one-minute transfers fit; c and d would start at the end: deferred.
    assert first.sent == ["a", "b"]
    assert [r["status"] for r in out["images"]] == ["transferred", "transferred", "deferred", "deferred"]
    assert out["transfer_order"] == ["c;a;None", "c;b;None"]
    # The next run (no window): the deferred ones start first, then the rest in input order.
    second = SendsEverything(settings(state_dir=tmp_path), END + timedelta(hours=1))
    out = second.run(plans)
    assert second.sent == ["c", "d", "a", "b"]
    assert out["transfer_order"] == ["c;c;None", "c;d;None", "c;a;None", "c;b;None"]
    assert [r["image"] for r in out["images"]] == ["a", "b", "c", "d"]  # results in input order
    # Sent: no longer deferred.
    assert deferred_images(str(tmp_path)) == (set(), None)


def test_check_mode_shows_the_deferral_and_records_nothing(tmp_path: Path) -> None:
    batch = TransferBatch(
        Untouchable(),  # type: ignore[arg-type]
        Untouchable(),  # type: ignore[arg-type]
        settings(window_end=END, state_dir=tmp_path, check_mode=True),
        clock=lambda: END + timedelta(seconds=1),
    )
    out = batch.run([plan("web", (S0, S1))])
    assert out["images"][0]["status"] == "deferred"
    assert not (tmp_path / "history.sqlite").exists()


def test_priority_order_puts_the_deferred_first_then_high_priority() -> None:
    items = [
        {"backup_image": "a", "priority": "normal"},
        {"backup_image": "b", "priority": "high"},
        {"backup_image": "c", "priority": "normal"},
        {"backup_image": "d", "priority": "high"},
        {"backup_image": "e", "priority": "normal"},
    ]
    ordered = priority_order(items, deferred={"e", "d"})
    assert [item["backup_image"] for item in ordered] == ["d", "e", "b", "a", "c"]
    assert [item["backup_image"] for item in priority_order(items)] == ["b", "d", "a", "c", "e"]


def test_deferral_is_kept_from_the_first_time_and_cleared_by_any_attempt(tmp_path: Path) -> None:
    when = datetime(2026, 1, 1, 6, 0)
    deferred = {"image": "x", "backup_image": "c;x;None", "status": "deferred"}
    assert record_transfer_results(str(tmp_path), [deferred], when) is None
    assert record_transfer_results(str(tmp_path), [deferred], when + timedelta(days=1)) is None
    with History(str(tmp_path)) as history:
        assert history.deferred() == {"c;x;None": when}
    for status in ("locked", "planned"):  # no attempt: still deferred
        record_transfer_results(str(tmp_path), [{**deferred, "status": status}], when)
        assert deferred_images(str(tmp_path))[0] == {"c;x;None"}
    record_transfer_results(str(tmp_path), [{**deferred, "status": "failed", "error": "boom"}], when)
    assert deferred_images(str(tmp_path))[0] == set()


def test_unreadable_history_orders_as_usual_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").write_text("not a database")
    found, problem = deferred_images(str(tmp_path))
    assert found == set() and problem is not None and "history.sqlite" in problem


def test_deferred_images_are_reported_as_deferred_not_failed() -> None:
    snap = {"images": [plan("web", (S0, S1), kind="incremental", due=["daily"]), plan("db", (S0, S1))]}
    sent = {
        "images": [
            {"image": "web", "status": "deferred", "ok": True, "kind": "incremental", "snapshots": []},
            {"image": "db", "status": "transferred", "ok": True, "kind": "incremental", "snapshots": [S1]},
        ]
    }
    records = image_records("c", snap, transfer=sent)
    assert [(r["image"], r["status"], r["error"]) for r in records] == [
        ("web", "deferred", None),
        ("db", "transferred", None),
    ]
    summary = run_summary(records, 0.0, 10.0)
    assert (summary["transferred"], summary["failed"], summary["deferred"], summary["skipped"]) == (1, 0, 1, 0)
    lines = report_lines(records)
    assert "deferred" in lines[1].split()  # the table's result column
    assert "2 image(s): 1 transferred, 0 failed, 1 deferred (backup window ended), 0 unchanged" in lines[-1]
    assert "backurne_run_images_deferred 1" in prometheus_lines(records, summary)


def test_check_calls_a_deferred_image_neither_failed_nor_late_until_its_interval(tmp_path: Path) -> None:
    profiles = parse_profiles({"daily": {"count": 7}})
    s0 = "backup;daily;7;2026-01-01T00:00:00.000000"
    s1 = "backup;daily;7;2026-01-02T00:00:00.000000"  # created on live by the deferred run
    deferred = {"image": "web", "backup_image": "c;web;None", "status": "deferred"}
    record_transfer_results(str(tmp_path), [deferred], datetime(2026, 1, 2, 0, 5))
    with History(str(tmp_path)) as history:
        transfers = history.transfer_states(["c;web;None"])

    def findings(now: datetime) -> list[tuple[str, str]]:
        found = check_images(
            {"web": [s0, s1]}, {}, {"c;web;None": [s0]}, "c", profiles, "backup", now, transfers=transfers
        )
        return [(f.severity, f.code) for f in found]

    # The morning after the deferred night: not failed, not late (s0 is 30 h old, limit 30 h).
    assert findings(datetime(2026, 1, 2, 6, 0)) == []
    # Deferred past its interval x grace: late, as any image whose backup did not happen.
    assert findings(datetime(2026, 1, 2, 7, 0)) == [("critical", "too-old")]
