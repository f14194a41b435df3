# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, parse_profiles
from ansible_collections.backurne.rbd.plugins.module_utils.report.health import (
    Finding,
    check_images,
    format_age,
    nagios_line,
    parse_ctime,
    unknown_line,
)
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import FreezeState, TransferState

NOW = datetime(2026, 11, 29, 12, 0, 0)
PROFILES = parse_profiles({"daily": {"count": 3}})
TWO = parse_profiles({"daily": {"count": 3}, "weekly": {"count": 2}})


def snap(created: datetime, profile: str = "daily", count: int = 3) -> str:
    return f"backup;{profile};{count};{created.isoformat(timespec='microseconds')}"


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


def check(live, backup, created=None, profiles=None, **kwargs):
    profiles = PROFILES if profiles is None else profiles
    return check_images(live, created or {}, backup, "prod", profiles, "backup", NOW, **kwargs)


def codes(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.image, f.severity, f.code) for f in findings]


def test_healthy_image_has_no_finding() -> None:
    s = snap(ago(hours=2))
    assert check({"web": [s]}, {"prod;web;None": [s]}) == []


def test_no_backup_image_is_critical_when_old_or_age_unknown() -> None:
    findings = check({"db1": [], "db2": []}, {}, created={"db1": ago(days=3), "db2": None})
    assert codes(findings) == [("db1", "critical", "no-backup"), ("db2", "critical", "no-backup")]
    assert "created 3d ago" in findings[0].message
    assert findings[0].label == "prod/db1"


def test_backup_image_without_our_snapshots_is_no_backup() -> None:
    findings = check({"db1": []}, {"prod;db1;None": ["manual", "other;daily;3;2026-11-29T00:00:00"]})
    assert codes(findings) == [("db1", "critical", "no-backup")]
    assert "has no backup snapshot" in findings[0].message


def test_backup_of_another_cluster_does_not_count() -> None:
    s = snap(ago(hours=1))
    assert codes(check({"db1": [s]}, {"other;db1;None": [s]})) == [("db1", "critical", "no-backup")]


def test_young_image_is_exempt_until_its_first_window_passes() -> None:
    # Shortest interval 1d x 1.25 = 30 h.
    window = timedelta(hours=30)
    assert check({"new": []}, {}, created={"new": NOW - window + timedelta(seconds=1)}) == []
    assert codes(check({"new": []}, {}, created={"new": NOW - window})) == [("new", "critical", "no-backup")]


def test_young_image_window_uses_shortest_profile_and_grace_factor() -> None:
    profiles = parse_profiles({"weekly": {"count": 2}, "hourly": {"count": 24}})
    created = {"new": ago(hours=1, minutes=59)}
    assert check({"new": []}, {}, created=created, profiles=profiles, grace_factor=2) == []
    assert check({"new": []}, {}, created=created, profiles=profiles) != []


def test_no_shared_snapshot_is_critical() -> None:
    old, new = snap(ago(hours=3)), snap(ago(hours=1))
    findings = check({"web": [new]}, {"prod;web;None": [old]})
    assert codes(findings) == [("web", "critical", "no-shared-snapshot")]


def test_foreign_shared_snapshot_does_not_count_as_shared() -> None:
    s = snap(ago(hours=1))
    findings = check({"web": ["manual"]}, {"prod;web;None": [s, "manual"]})
    assert codes(findings) == [("web", "critical", "no-shared-snapshot")]


def test_too_old_boundary_is_interval_times_grace_factor() -> None:
    at_limit = snap(ago(hours=30))
    assert check({"web": [at_limit]}, {"prod;web;None": [at_limit]}) == []
    late = snap(ago(hours=30, seconds=1))
    findings = check({"web": [late]}, {"prod;web;None": [late]})
    assert codes(findings) == [("web", "critical", "too-old")]
    assert findings[0].message == "newest daily backup 1d6h old (limit 1d6h)"


def test_too_old_follows_grace_factor() -> None:
    s = snap(ago(hours=40))
    assert check({"web": [s]}, {"prod;web;None": [s]}, grace_factor=2) == []
    assert "limit 1d6h" in check({"web": [s]}, {"prod;web;None": [s]})[0].message


def test_too_old_is_per_profile() -> None:
    daily, weekly = snap(ago(hours=2)), snap(ago(days=9), "weekly", 2)
    findings = check({"web": [daily, weekly]}, {"prod;web;None": [weekly, daily]}, profiles=TWO)
    assert codes(findings) == [("web", "critical", "too-old")]
    assert "weekly" in findings[0].message and "9d" in findings[0].message and "8d18h" in findings[0].message


def test_missing_profile_counts_from_the_oldest_backup() -> None:
    recent = [snap(ago(hours=2))]
    assert check({"web": recent}, {"prod;web;None": recent}, profiles=TWO) == []
    history = [snap(ago(days=9), count=30), snap(ago(hours=2), count=30)]
    profiles = parse_profiles({"daily": {"count": 30}, "weekly": {"count": 2}})
    findings = check({"web": history[-1:]}, {"prod;web;None": history}, profiles=profiles)
    assert [(f.code, f.message.split(",")[0]) for f in findings] == [("too-old", "no weekly backup")]


def test_not_expired_warning_after_expiry_grace() -> None:
    # daily x3: a snapshot created 4 days ago expired 1 day ago.
    expired_exactly_grace = snap(ago(days=4))
    newest = snap(ago(hours=1))
    assert check({"web": [newest]}, {"prod;web;None": [expired_exactly_grace, newest]}) == []
    overdue = snap(ago(days=4, seconds=1))
    findings = check({"web": [newest]}, {"prod;web;None": [overdue, newest]})
    assert codes(findings) == [("web", "warning", "not-expired")]
    assert "1 backup snapshot(s)" in findings[0].message and overdue in findings[0].message
    assert check({"web": [newest]}, {"prod;web;None": [overdue, newest]}, expiry_grace=timedelta(days=2)) == []


def test_not_expired_spares_what_retention_keeps() -> None:
    # Newest snapshot and newest shared one are kept on purpose even when expired.
    shared, newest = snap(ago(days=20)), snap(ago(days=10))
    findings = check({"web": [shared]}, {"prod;web;None": [shared, newest]})
    assert [f.code for f in findings] == ["too-old"]
    older = snap(ago(days=30))
    assert [f.code for f in check({"web": [shared]}, {"prod;web;None": [older, shared, newest]})] == [
        "too-old",
        "not-expired",
    ]
    # keep_min protects that many newest snapshots.
    findings = check({"web": [shared]}, {"prod;web;None": [older, shared, newest]}, keep_min=3)
    assert [f.code for f in findings] == ["too-old"]


def test_unconfigured_profile_snapshots_never_overdue() -> None:
    odd, newest = snap(ago(days=300), "yearly", 1), snap(ago(hours=1))
    assert check({"web": [newest]}, {"prod;web;None": [odd, newest]}) == []


def test_backup_images_without_a_live_image_are_ignored() -> None:
    assert check({}, {"prod;gone;None": [snap(ago(days=30))]}) == []


def test_unnamable_image_is_reported() -> None:
    findings = check({"bad;name": []}, {})
    assert codes(findings) == [("bad;name", "critical", "no-backup")]
    assert "cannot be backed up" in findings[0].message


def test_invalid_inputs_raise() -> None:
    with pytest.raises(PolicyError):
        check({}, {}, grace_factor=0.5)
    with pytest.raises(PolicyError):
        check({}, {}, expiry_grace=timedelta(seconds=-1))
    with pytest.raises(PolicyError):
        check({}, {}, profiles={})
    with pytest.raises(PolicyError):
        check_images({}, {}, {}, "prod", PROFILES, "backup", "2026-11-29")  # type: ignore[arg-type]


def test_nagios_line_ok() -> None:
    assert nagios_line([], 14) == (0, "BACKURNE OK - 14 images checked")
    assert nagios_line([], 1) == (0, "BACKURNE OK - 1 image checked")


def test_nagios_line_warning_and_critical() -> None:
    warn = Finding("web", "warning", "not-expired", "2 backup snapshot(s) not expired in time", "live")
    crit = Finding("db1", "critical", "no-backup", "no backup", "live")
    crit2 = Finding("db2", "critical", "no-shared-snapshot", "no snapshot shared with backup", "live")
    assert nagios_line([warn], 3)[0] == 1
    assert nagios_line([warn], 3)[1].startswith("BACKURNE WARNING - 0 critical, 1 warning of 3 images: live/web")
    status, line = nagios_line([warn, crit2, crit], 14)
    assert status == 2
    assert line == (
        "BACKURNE CRITICAL - 2 critical, 1 warning of 14 images: live/db1 no backup; "
        "live/db2 no snapshot shared with backup; live/web 2 backup snapshot(s) not expired in time"
    )


def test_nagios_line_counts_images_not_findings() -> None:
    findings = [
        Finding("db1", "critical", "no-shared-snapshot", "x", "live"),
        Finding("db1", "critical", "too-old", "y", "live"),
    ]
    assert nagios_line(findings, 2)[1].startswith("BACKURNE CRITICAL - 1 critical, 0 warning of 2 images")


def test_nagios_line_is_truncated() -> None:
    many = [Finding(f"img{i:03}", "critical", "no-backup", "no backup", "live") for i in range(200)]
    status, line = nagios_line(many, 200)
    assert status == 2
    assert "and 195 more" in line and "img005" not in line
    assert "\n" not in line
    long = [Finding("x" * 2000, "critical", "no-backup", "no backup", "live")]
    status, line = nagios_line(long, 1, max_length=100)
    assert len(line) == 100 and line.endswith("...")


def test_unknown_line() -> None:
    assert unknown_line("live: ssh: connection\nrefused") == (3, "BACKURNE UNKNOWN - live: ssh: connection refused")


def test_parse_ctime() -> None:
    assert parse_ctime("Sun Nov 29 18:51:43 2026") == datetime(2026, 11, 29, 18, 51, 43)
    assert parse_ctime("Sun Nov  1 08:01:02 2026") == datetime(2026, 11, 1, 8, 1, 2)
    assert parse_ctime("yesterday") is None
    assert parse_ctime(None) is None


def test_format_age() -> None:
    assert format_age(timedelta(days=2, hours=3, minutes=5)) == "2d3h"
    assert format_age(timedelta(days=2)) == "2d"
    assert format_age(timedelta(hours=5, minutes=10)) == "5h10m"
    assert format_age(timedelta(minutes=42)) == "42m"
    assert format_age(timedelta(seconds=-5)) == "0s"


def test_guest_that_may_be_frozen_is_critical() -> None:
    s = snap(ago(hours=2))
    left = FreezeState("prod;web;None", "100 (web1)", ago(hours=1), True, "not confirmed thawed within 60 s")
    findings = check({"web": [s]}, {"prod;web;None": [s]}, freezes={"prod;web;None": left})
    assert codes(findings) == [("web", "critical", "may-be-frozen")]
    assert findings[0].message == "guest 100 (web1) may be frozen (fsfreeze 1h ago): not confirmed thawed within 60 s"
    thawed = FreezeState("prod;web;None", "100 (web1)", ago(minutes=5), False, None)
    assert check({"web": [s]}, {"prod;web;None": [s]}, freezes={"prod;web;None": thawed}) == []


def test_a_set_aside_snapshot_is_critical_until_a_later_success() -> None:
    s = snap(ago(hours=2))
    removed = snap(ago(hours=1))
    at = ago(minutes=30)
    healing = TransferState("prod;web;None", ago(hours=1), None, None, 0, at, (removed,), "note")
    found = check({"web": [s, removed]}, {"prod;web;None": [s]}, transfers={"prod;web;None": healing})
    assert codes(found) == [("web", "critical", "checksum-mismatch")]
    assert found[0].message == (
        f"backup snapshot {removed} removed after a checksum mismatch at {at.isoformat(timespec='seconds')} UTC "
        "(30m ago); the next backup re-sends it"
    )
    # Could not be removed: the note says why.
    stuck = TransferState("prod;web;None", None, None, None, 0, at, (), "not removed: locked by backurne;h;1;t")
    (finding,) = check({"web": [s]}, {"prod;web;None": [s]}, transfers={"prod;web;None": stuck})
    assert finding.code == "checksum-mismatch" and "not removed: locked by" in finding.message
    # A transfer succeeded since: healed, nothing to say.
    healed = TransferState("prod;web;None", ago(minutes=5), None, None, 0, at, (removed,), "note")
    assert check({"web": [s]}, {"prod;web;None": [s]}, transfers={"prod;web;None": healed}) == []
    # An event after `now` (a check "as of" an earlier time) is not reported.
    future = TransferState("prod;web;None", None, None, None, 0, NOW + timedelta(hours=1), (removed,), "note")
    assert check({"web": [s]}, {"prod;web;None": [s]}, transfers={"prod;web;None": future}) == []


def test_newest_backup_is_the_last_taken_its_age_from_its_name() -> None:
    # backurne 2.x, TZ=Europe/Paris: taken 1h30m ago, named 30 min ago. Ours, taken after it,
    # named 1h20m ago, is the newest (Ceph order): past the hourly limit (1h15m), whatever 2.x's
    # fresh-looking name says.
    hourly = parse_profiles({"hourly": {"count": 24}})
    legacy, ours = snap(ago(minutes=30), "hourly", 24), snap(ago(hours=1, minutes=20), "hourly", 24)
    listing = [legacy, ours]  # Ceph order: legacy taken first
    findings = check({"web": listing}, {"prod;web;None": listing}, profiles=hourly)
    assert codes(findings) == [("web", "critical", "too-old")]
    assert "1h20m old" in findings[0].message
