# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.policy import naming
from ansible_collections.backurne.rbd.plugins.module_utils.policy import retention as policy
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import PolicyError, Profile, Snap

P = "backup"
NOW = datetime(2026, 3, 10, 12, 0, 0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def snap(profile: str, age: timedelta, count: int = 30, prefix: str = P) -> str:
    return naming.make_snap_name(prefix, profile, count, NOW - age)


def parsed(name: str) -> Snap:
    result = Snap.from_name(name, P)
    assert result is not None
    return result


@pytest.fixture
def profiles() -> dict[str, Profile]:
    return policy.parse_profiles(
        {
            "hourly": {"count": 24, "max_on_live": 2, "priority": "high"},
            "daily": {"count": 30, "max_on_live": 1},
            "weekly": {"count": 4},
        }
    )


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (90, timedelta(seconds=90)),
            (1.5, timedelta(seconds=1.5)),
            ("90", timedelta(seconds=90)),
            ("90s", timedelta(seconds=90)),
            ("30m", timedelta(minutes=30)),
            ("1h", HOUR),
            ("1d", DAY),
            ("2w", timedelta(days=14)),
            ("1h30m", timedelta(minutes=90)),
            ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
            (" 6H ", timedelta(hours=6)),
        ],
    )
    def test_valid(self, value: str | int | float, expected: timedelta) -> None:
        assert policy.parse_duration(value) == expected

    @pytest.mark.parametrize(
        "value",
        [0, -5, 0.0, "0", "0s", "0h0m", "", "h", "1x", "1 h", "-1h", "1.5h", "soon", True, None, float("nan"), 10**400],
    )
    def test_invalid_names_the_value(self, value: object) -> None:
        with pytest.raises(PolicyError) as info:
            policy.parse_duration(value)  # type: ignore[arg-type]
        assert repr(value) in str(info.value)

    def test_too_long(self) -> None:
        with pytest.raises(PolicyError, match="too long"):
            policy.parse_duration("99999999999w")


class TestParseProfiles:
    def test_builtin_intervals_and_defaults(self, profiles: dict[str, Profile]) -> None:
        assert list(profiles) == ["hourly", "daily", "weekly"]
        assert profiles["hourly"] == Profile("hourly", 24, HOUR, max_on_live=2, priority="high")
        assert profiles["daily"] == Profile("daily", 30, DAY, max_on_live=1)
        assert profiles["weekly"] == Profile("weekly", 4, timedelta(days=7))
        monthly = policy.parse_profiles({"monthly": {"count": 12}})["monthly"]
        assert monthly.interval == timedelta(days=30)

    def test_custom_interval_and_override(self) -> None:
        result = policy.parse_profiles(
            {"every6h": {"count": 8, "interval": "6h"}, "daily": {"count": 7, "interval": 43200}}
        )
        assert result["every6h"].interval == timedelta(hours=6)
        assert result["daily"].interval == timedelta(hours=12)

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"daily": {"cuont": 30}}, "profile 'daily': unknown key 'cuont'"),
            ({"daily": {"count": 30, "max_on_live": 1, "prio": "high"}}, "profile 'daily': unknown key 'prio'"),
            ({"daily": {}}, "profile 'daily': key 'count' is required"),
            ({"daily": {"count": 0}}, "profile 'daily': key 'count'"),
            ({"daily": {"count": True}}, "profile 'daily': key 'count'"),
            ({"daily": {"count": "30"}}, "profile 'daily': key 'count'"),
            ({"daily": {"count": 3.0}}, "profile 'daily': key 'count'"),
            ({"daily": {"count": 30, "max_on_live": -1}}, "profile 'daily': key 'max_on_live'"),
            ({"daily": {"count": 30, "max_on_live": False}}, "profile 'daily': key 'max_on_live'"),
            ({"daily": {"count": 30, "priority": "urgent"}}, "profile 'daily': key 'priority'"),
            ({"daily": {"count": 30, "interval": "soon"}}, "profile 'daily': key 'interval': invalid duration 'soon'"),
            ({"daily": {"count": 30, "interval": 0}}, "profile 'daily': key 'interval'"),
            ({"every6h": {"count": 8}}, "profile 'every6h': key 'interval' is required"),
            ({"daily": 30}, "profile 'daily': expected a mapping"),
            ({"da;ily": {"count": 30}}, "'da;ily'"),
            ({"": {"count": 30}}, "profile name"),
            ({7: {"count": 30}}, "profile name must be a string"),
            ({"daily ": {"count": 30}}, "'daily '"),
        ],
    )
    def test_invalid(self, spec: dict, message: str) -> None:
        with pytest.raises(PolicyError) as info:
            policy.parse_profiles(spec)
        assert message in str(info.value)

    @pytest.mark.parametrize("spec", [{}, None, []])
    def test_empty(self, spec: object) -> None:
        with pytest.raises(PolicyError, match="at least one"):
            policy.parse_profiles(spec)  # type: ignore[arg-type]


class TestSnap:
    def test_from_name_keeps_the_name_on_disk(self) -> None:
        name = "backup;daily;30;2018-06-01T15:44:26"
        result = Snap.from_name(name, P)
        assert result == Snap(name, "daily", 30, datetime(2018, 6, 1, 15, 44, 26))
        assert Snap.from_name("manual", P) is None

    def test_expiry_uses_the_count_in_the_name(self, profiles: dict[str, Profile]) -> None:
        # The profile now says count 30; the snapshot was taken when it said 3.
        created = parsed(snap("daily", timedelta(0), count=3))
        assert created.expires_at(profiles) == NOW + 3 * DAY

    def test_unconfigured_profile_never_expires(self, profiles: dict[str, Profile]) -> None:
        assert parsed(snap("yearly", timedelta(0))).expires_at(profiles) is None

    def test_absurd_count_saturates(self, profiles: dict[str, Profile]) -> None:
        assert parsed(snap("weekly", timedelta(0), count=10**12)).expires_at(profiles) == datetime.max


class TestDueProfiles:
    def test_nothing_on_backup_everything_due_high_priority_first(self, profiles: dict[str, Profile]) -> None:
        due = policy.due_profiles(profiles, [], NOW)
        assert [p.name for p in due] == ["hourly", "daily", "weekly"]

    def test_priority_then_spec_order(self) -> None:
        profs = policy.parse_profiles(
            {"weekly": {"count": 4}, "daily": {"count": 7}, "hourly": {"count": 24, "priority": "high"}}
        )
        assert [p.name for p in policy.due_profiles(profs, [], NOW)] == ["hourly", "weekly", "daily"]

    def test_young_snapshot_is_not_due(self, profiles: dict[str, Profile]) -> None:
        backup = [parsed(snap("daily", 23 * HOUR)), parsed(snap("hourly", 59 * timedelta(minutes=1)))]
        assert [p.name for p in policy.due_profiles(profiles, backup, NOW)] == ["weekly"]

    def test_exactly_one_interval_old_is_due(self, profiles: dict[str, Profile]) -> None:
        backup = [parsed(snap("daily", DAY)), parsed(snap("hourly", HOUR)), parsed(snap("weekly", DAY))]
        assert [p.name for p in policy.due_profiles(profiles, backup, NOW)] == ["hourly", "daily"]

    def test_newest_of_the_profile_counts(self, profiles: dict[str, Profile]) -> None:
        backup = [parsed(snap("daily", 3 * DAY)), parsed(snap("daily", HOUR)), parsed(snap("hourly", 2 * DAY))]
        assert [p.name for p in policy.due_profiles(profiles, backup, NOW)] == ["hourly", "weekly"]

    def test_future_snapshot_is_not_due(self, profiles: dict[str, Profile]) -> None:
        backup = [parsed(snap("hourly", -HOUR))]
        assert "hourly" not in [p.name for p in policy.due_profiles(profiles, backup, NOW)]

    def test_force_and_only(self, profiles: dict[str, Profile]) -> None:
        backup = [parsed(snap(name, timedelta(minutes=1))) for name in profiles]
        assert policy.due_profiles(profiles, backup, NOW) == []
        assert [p.name for p in policy.due_profiles(profiles, backup, NOW, force=True)] == ["hourly", "daily", "weekly"]
        forced = policy.due_profiles(profiles, backup, NOW, force=True, only=["weekly", "daily"])
        assert [p.name for p in forced] == ["daily", "weekly"]
        assert [p.name for p in policy.due_profiles(profiles, [], NOW, only="daily")] == ["daily"]
        assert policy.due_profiles(profiles, [], NOW, only=()) == []

    def test_only_unknown_profile(self, profiles: dict[str, Profile]) -> None:
        with pytest.raises(PolicyError, match="'dialy'"):
            policy.due_profiles(profiles, [], NOW, only=["dialy"])

    def test_aware_now_refused(self, profiles: dict[str, Profile]) -> None:
        with pytest.raises(PolicyError, match="naive"):
            policy.due_profiles(profiles, [], NOW.replace(tzinfo=UTC))


class TestNewestShared:
    def test_by_ceph_order_not_by_name(self) -> None:
        daily, hourly = snap("daily", 2 * HOUR), snap("hourly", HOUR)
        # By name the old weekly would sort last: Ceph's order (the listing's) must win.
        weekly = snap("weekly", 10 * DAY)
        live = [weekly, daily, hourly, "manual"]
        backup = [weekly, daily, hourly, "manual"]
        assert policy.newest_shared(live, backup, P).name == hourly

    def test_live_order_wins_over_backup_order(self) -> None:
        first, second = snap("daily", 2 * HOUR), snap("daily", HOUR)
        # Re-sent onto the backup image in another order: live is where they were taken.
        assert policy.newest_shared([first, second], [second, first], P).name == second

    def test_only_on_both_sides_and_only_ours(self) -> None:
        old, new = snap("daily", 2 * DAY), snap("daily", DAY)
        assert policy.newest_shared([old, new, "zzz"], [old, "zzz"], P).name == old
        assert policy.newest_shared(["zzz"], ["zzz"], P) is None
        assert policy.newest_shared([], [old], P) is None
        other = snap("daily", HOUR, prefix="other")
        assert policy.newest_shared([other, old], [other, old], P).name == old

    def test_equal_times_by_live_order(self) -> None:
        daily, hourly = snap("daily", HOUR), snap("hourly", HOUR)
        assert policy.newest_shared([daily, hourly], [hourly, daily], P).name == hourly


class TestPlanImage:
    def plan(self, live: list[str], backup: list[str], profiles: dict[str, Profile], **kwargs) -> policy.ImagePlan:
        return policy.plan_image("vm-1", "c;vm-1;None", live, backup, profiles, P, NOW, **kwargs)

    def test_first_run_is_full_then_chained(self, profiles: dict[str, Profile]) -> None:
        plan = self.plan([], [], profiles)
        assert plan.kind == "full"
        assert plan.base is None
        assert plan.due == ["hourly", "daily", "weekly"]
        hourly, daily, weekly = plan.new_snapshots
        assert hourly == naming.make_snap_name(P, "hourly", 24, NOW)
        assert daily == naming.make_snap_name(P, "daily", 30, NOW + policy.CREATION_TICK)
        assert weekly == naming.make_snap_name(P, "weekly", 4, NOW + 2 * policy.CREATION_TICK)
        # The second is incremental from the first: only the first one is full.
        assert plan.transfers == [(None, hourly), (hourly, daily), (daily, weekly)]

    def test_new_snapshots_are_in_time_order(self, profiles: dict[str, Profile]) -> None:
        plan = self.plan([], [], profiles)
        assert [s.name for s in sorted(map(parsed, plan.new_snapshots), key=lambda s: s.sort_key)] == (
            plan.new_snapshots
        )

    def test_incremental_from_the_newest_shared(self, profiles: dict[str, Profile]) -> None:
        base, older = snap("hourly", 2 * HOUR), snap("daily", 5 * HOUR)
        weekly = snap("weekly", 2 * DAY)
        live = [weekly, older, base, "manual"]
        backup = [snap("hourly", 30 * DAY), weekly, older, base]
        plan = self.plan(live, backup, profiles)
        assert plan.kind == "incremental"
        assert plan.base == base
        assert plan.due == ["hourly"]
        assert plan.transfers == [(base, plan.new_snapshots[0])]

    def test_nothing_due_nothing_pending(self, profiles: dict[str, Profile]) -> None:
        names = [snap(name, timedelta(minutes=5)) for name in profiles]
        plan = self.plan(names, names, profiles)
        assert (plan.kind, plan.due, plan.new_snapshots, plan.transfers) == ("none", [], [], [])
        assert plan.base == names[-1]  # equal times: the last one taken

    def test_pending_snapshots_converge_without_new_snapshot(self, profiles: dict[str, Profile]) -> None:
        base = snap("weekly", 2 * HOUR)
        # The previous run created these; their transfers failed.
        hourly = snap("hourly", 10 * timedelta(minutes=1))
        daily = naming.make_snap_name(P, "daily", 30, NOW - 10 * timedelta(minutes=1) + policy.CREATION_TICK)
        live = [base, hourly, daily]
        backup = [snap("daily", 2 * DAY), base]
        plan = self.plan(live, backup, profiles)
        assert plan.due == []
        assert plan.new_snapshots == []
        assert plan.kind == "incremental"
        assert plan.transfers == [(base, hourly), (hourly, daily)]

    def test_pending_then_new(self, profiles: dict[str, Profile]) -> None:
        base = snap("weekly", 3 * HOUR)
        pending = snap("hourly", 2 * HOUR)
        plan = self.plan([base, pending], [snap("daily", 5 * HOUR), base], profiles)
        assert plan.due == ["hourly"]
        (new,) = plan.new_snapshots
        assert plan.transfers == [(base, pending), (pending, new)]

    def test_pending_after_failed_full(self, profiles: dict[str, Profile]) -> None:
        first = snap("hourly", 10 * timedelta(minutes=1))
        plan = self.plan([first], [], profiles)
        assert plan.kind == "full"
        assert plan.due == ["daily", "weekly"]
        assert plan.transfers[0] == (None, first)
        assert plan.transfers[1] == (first, plan.new_snapshots[0])

    def test_pending_older_than_backup_head_is_skipped(self, profiles: dict[str, Profile]) -> None:
        # The backup image's head is at `head`; a diff to an older snapshot would rewind it.
        base, stale, head = snap("weekly", 5 * HOUR), snap("hourly", 4 * HOUR), snap("daily", 3 * HOUR)
        plan = self.plan([base, stale], [base, head], profiles)
        assert stale not in [target for _source, target in plan.transfers]
        assert plan.transfers == [(base, plan.new_snapshots[0])]

    def test_pending_of_unconfigured_profile_is_not_sent(self, profiles: dict[str, Profile]) -> None:
        base, odd = snap("hourly", 30 * timedelta(minutes=1)), snap("yearly", 20 * timedelta(minutes=1))
        names = [base, snap("daily", HOUR), snap("weekly", HOUR)]
        plan = self.plan([*names, odd], names, profiles)
        assert plan.kind == "none"
        assert plan.transfers == []

    def test_only_and_force(self, profiles: dict[str, Profile]) -> None:
        names = [snap(name, timedelta(minutes=5)) for name in profiles]
        plan = self.plan(names, names, profiles, force=True, only=["daily"])
        assert plan.due == ["daily"]
        assert plan.kind == "incremental"
        assert plan.transfers == [(plan.base, plan.new_snapshots[0])]

    def test_to_dict(self, profiles: dict[str, Profile]) -> None:
        plan = self.plan([], [], profiles, only=["daily"])
        (new,) = plan.new_snapshots
        assert plan.to_dict() == {
            "image": "vm-1",
            "backup_image": "c;vm-1;None",
            "due": ["daily"],
            "new_snapshots": [new],
            "base": None,
            "kind": "full",
            "transfers": [{"from_snap": None, "to_snap": new}],
        }


class TestSimulatedRuns:
    """Apply plans to in-memory sets of names, with failures, hour after hour."""

    def run(
        self,
        live: list[str],
        backup: list[str],
        profiles: dict[str, Profile],
        now: datetime,
        fail_after: int | None = None,
    ) -> policy.ImagePlan:
        # Lists in Ceph's creation order: a new snapshot (or an import) is appended.
        plan = policy.plan_image("vm", "c;vm;None", live, backup, profiles, P, now)
        live.extend(plan.new_snapshots)
        for done, (source, target) in enumerate(plan.transfers):
            if fail_after is not None and done >= fail_after:
                break
            assert source is None or (source in backup and source in live)
            assert target in live
            backup.append(target)
        doomed = set(policy.live_expiry(live, backup, profiles, P))
        live[:] = [name for name in live if name not in doomed]
        expiry = policy.backup_expiry(backup, profiles, P, now, source_exists=True, live_snap_names=live)
        backup[:] = [name for name in backup if name not in expiry.delete]
        return plan

    def test_failure_mid_chain_converges(self, profiles: dict[str, Profile]) -> None:
        live: list[str] = []
        backup: list[str] = []
        first = self.run(live, backup, profiles, NOW, fail_after=1)
        assert first.kind == "full"
        assert len(backup) == 1
        retry = self.run(live, backup, profiles, NOW + timedelta(minutes=5))
        assert retry.new_snapshots == []
        assert [target for _source, target in retry.transfers] == first.new_snapshots[1:]
        assert backup == live == first.new_snapshots
        later = self.run(live, backup, profiles, NOW + HOUR)
        assert later.due == ["hourly"]
        assert later.kind == "incremental"

    def test_a_week_of_hourly_runs(self, profiles: dict[str, Profile]) -> None:
        live: list[str] = []
        backup: list[str] = []
        for hour in range(24 * 8):
            # Every fifth run fails after its first transfer.
            self.run(live, backup, profiles, NOW + hour * HOUR, fail_after=1 if hour % 5 == 4 else None)
            base = policy.newest_shared(live, backup, P)
            assert base is not None
        counts = {name: sum(1 for s in backup if parsed(s).profile == name) for name in profiles}
        assert 23 <= counts["hourly"] <= 26
        assert 8 <= counts["daily"] <= 9
        assert counts["weekly"] == 2
        # On live: base and newer, plus max_on_live older ones per profile.
        assert len(live) <= 1 + 2 + 1 + 0 + 3


class TestLiveExpiry:
    def test_no_shared_snapshot_deletes_nothing(self, profiles: dict[str, Profile]) -> None:
        live = [snap("daily", n * DAY) for n in range(5)]
        assert policy.live_expiry(live, [], profiles, P) == []
        assert policy.live_expiry(live, [snap("daily", 10 * DAY)], profiles, P) == []

    def test_max_on_live_per_profile(self, profiles: dict[str, Profile]) -> None:
        hourlies = [snap("hourly", n * HOUR) for n in range(1, 6)]  # newest first
        dailies = [snap("daily", n * DAY + 30 * timedelta(minutes=1)) for n in range(0, 3)]
        weeklies = [snap("weekly", n * 7 * DAY + 2 * HOUR) for n in range(1, 3)]
        base = hourlies[0]
        # Taken in time order: that is their Ceph order.
        live = [*sorted([*hourlies, *dailies, *weeklies], key=lambda n: parsed(n).sort_key), "manual"]
        doomed = policy.live_expiry(live, [*weeklies[::-1], base], profiles, P)
        # Older than the base, hourly keeps 2 of 4, daily 1 of 2, weekly none.
        # dailies[0] is newer than the base: kept whatever max_on_live says.
        expected = [*hourlies[3:], *dailies[2:], *weeklies]
        assert sorted(doomed) == sorted(expected)
        assert doomed == [name for name in live if name in expected]

    def test_max_on_live_above_the_count_keeps_them_all(self) -> None:
        profiles = policy.parse_profiles({"hourly": {"count": 24, "max_on_live": 3}})
        first, second, base = snap("hourly", 3 * HOUR), snap("hourly", 2 * HOUR), snap("hourly", HOUR)
        assert policy.live_expiry([first, second, base], [base], profiles, P) == []

    def test_base_and_newer_are_kept(self, profiles: dict[str, Profile]) -> None:
        base = snap("weekly", 3 * HOUR)
        newer = [snap("hourly", 2 * HOUR), snap("daily", HOUR)]
        older = snap("weekly", 10 * DAY)
        doomed = policy.live_expiry([older, base, *newer], [older, base], profiles, P)
        assert doomed == [older]

    def test_foreign_snapshots_before_ours_do_not_shift_the_order(self, profiles: dict[str, Profile]) -> None:
        old, base = snap("weekly", 10 * DAY), snap("weekly", HOUR)
        live = ["manual", "backup;not-a-date", old, base]
        assert policy.live_expiry(live, [old, base], profiles, P) == [old]
        plan = policy.plan_image(
            "vm", "c;vm;None", [*live, snap("hourly", 30 * timedelta(minutes=1))], [old, base], profiles, P, NOW
        )
        assert plan.base == base
        assert plan.transfers[0][0] == base

    def test_unconfigured_and_foreign_are_kept(self, profiles: dict[str, Profile]) -> None:
        base = snap("weekly", HOUR)
        odd = snap("yearly", 100 * DAY)
        foreign = ["manual", snap("daily", 50 * DAY, prefix="other"), "backup;daily;30;garbage"]
        assert policy.live_expiry([odd, base, *foreign], [odd, base, *foreign], profiles, P) == []
        assert policy.unconfigured_snaps([odd, base, *foreign], profiles, P) == [odd]


class TestBackupExpiry:
    def expire(self, backup: list[str], profiles: dict[str, Profile], **kwargs) -> policy.BackupExpiry:
        kwargs.setdefault("source_exists", True)
        return policy.backup_expiry(backup, profiles, P, NOW, **kwargs)

    def test_deletes_expired_only(self, profiles: dict[str, Profile]) -> None:
        fresh = snap("hourly", HOUR, count=24)
        just_expired = snap("hourly", 24 * HOUR, count=24)
        not_yet = snap("hourly", 23 * HOUR, count=24)
        old_daily = snap("daily", 31 * DAY, count=30)
        result = self.expire([old_daily, just_expired, not_yet, fresh], profiles)
        assert result.delete == [old_daily, just_expired]
        assert result.remove_image is False
        assert result.kept_reasons[not_yet].startswith("expires at ")
        assert set(result.kept_reasons) == {fresh, not_yet}

    def test_newest_kept_while_source_exists(self, profiles: dict[str, Profile]) -> None:
        # Backups have been failing for weeks: everything on backup is past expiry.
        names = [snap("hourly", n * DAY, count=24) for n in (42, 41, 40)]
        result = self.expire(names, profiles, keep_min=0)
        assert result.delete == [names[0], names[1]]
        assert "newest" in result.kept_reasons[names[2]]

    def test_keep_min_floor(self, profiles: dict[str, Profile]) -> None:
        names = [snap("hourly", n * DAY, count=24) for n in (44, 43, 42, 41, 40)]
        result = self.expire(names, profiles, keep_min=3)
        assert result.delete == [names[0], names[1]]
        assert "keep_min" in result.kept_reasons[names[2]]

    def test_newest_shared_is_kept(self, profiles: dict[str, Profile]) -> None:
        newest = snap("hourly", HOUR, count=24)
        shared = snap("hourly", 30 * HOUR, count=24)
        older = snap("hourly", 31 * HOUR, count=24)
        result = self.expire([older, shared, newest], profiles, live_snap_names=[older, shared, "manual"])
        assert result.delete == [older]
        assert "shared" in result.kept_reasons[shared]

    def test_unconfigured_and_foreign_never_deleted(self, profiles: dict[str, Profile]) -> None:
        odd = snap("yearly", 1000 * DAY, count=1)
        foreign = ["manual", snap("daily", 100 * DAY, count=1, prefix="other"), "backup;daily;1;bad"]
        newest = snap("daily", HOUR)
        result = self.expire([odd, *foreign, newest], profiles)
        assert result.delete == []
        assert "not configured" in result.kept_reasons[odd]
        assert all("never touched" in result.kept_reasons[name] for name in foreign)

    def test_source_gone_newest_kept_until_extra_retention(self, profiles: dict[str, Profile]) -> None:
        newest = snap("daily", 10 * DAY, count=7)  # expired 3 days ago
        older = snap("daily", 11 * DAY, count=7)
        extra = timedelta(days=5)
        result = self.expire([older, newest], profiles, source_exists=False, extra_retention_time=extra)
        assert result.delete == [older]
        assert result.remove_image is False
        assert "source image gone" in result.kept_reasons[newest]
        assert (NOW - 3 * DAY + extra).isoformat() in result.kept_reasons[newest]

    def test_source_gone_fades_out(self, profiles: dict[str, Profile]) -> None:
        newest = snap("daily", 13 * DAY, count=7)
        older = snap("daily", 14 * DAY, count=7)
        result = self.expire(
            [older, newest], profiles, source_exists=False, extra_retention_time=timedelta(days=5), keep_min=5
        )
        assert result.delete == [older, newest]
        assert result.remove_image is True
        assert result.kept_reasons == {}

    def test_source_gone_exactly_at_deadline(self, profiles: dict[str, Profile]) -> None:
        newest = snap("daily", 12 * DAY, count=7)
        result = self.expire([newest], profiles, source_exists=False, extra_retention_time=timedelta(days=5))
        assert (result.delete, result.remove_image) == ([newest], True)

    def test_source_gone_keep_min_holds_until_fade_out(self, profiles: dict[str, Profile]) -> None:
        names = [snap("daily", n * DAY, count=7) for n in (10, 9, 8)]
        result = self.expire(names, profiles, source_exists=False, extra_retention_time=timedelta(days=5), keep_min=2)
        assert result.delete == [names[0]]
        assert result.remove_image is False

    def test_source_gone_foreign_snapshot_pins_the_image(self, profiles: dict[str, Profile]) -> None:
        newest = snap("daily", 40 * DAY, count=7)
        result = self.expire([newest, "protected-by-admin"], profiles, source_exists=False)
        assert result.delete == [newest]
        assert result.remove_image is False
        assert "removed" in result.kept_reasons["protected-by-admin"]

    def test_source_gone_unexpired_older_snapshot_keeps_the_image(self, profiles: dict[str, Profile]) -> None:
        newest = snap("hourly", 30 * HOUR, count=24)
        weekly = snap("weekly", 2 * DAY, count=4)
        result = self.expire([weekly, newest], profiles, source_exists=False)
        # The newest has faded out; the older weekly has weeks to live and holds the image.
        assert result.delete == [newest]
        assert result.remove_image is False
        assert result.kept_reasons[weekly].startswith("expires at ")

    def test_source_gone_no_snapshot_left(self, profiles: dict[str, Profile]) -> None:
        assert self.expire([], profiles, source_exists=False).remove_image is True
        assert self.expire(["manual"], profiles, source_exists=False).remove_image is False
        assert self.expire([], profiles, source_exists=True).remove_image is False

    def test_source_gone_unconfigured_newest_never_fades(self, profiles: dict[str, Profile]) -> None:
        odd = snap("yearly", 1000 * DAY, count=1)
        result = self.expire([odd], profiles, source_exists=False)
        assert (result.delete, result.remove_image) == ([], False)

    def test_to_dict(self, profiles: dict[str, Profile]) -> None:
        name = snap("daily", HOUR)
        assert self.expire([name], profiles).to_dict() == {
            "delete": [],
            "remove_image": False,
            "kept_reasons": {name: f"expires at {(NOW - HOUR + 30 * DAY).isoformat()}"},
        }

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"keep_min": -1}, "keep_min"),
            ({"keep_min": True}, "keep_min"),
            ({"extra_retention_time": timedelta(days=-1)}, "extra_retention_time"),
            ({"extra_retention_time": 5}, "extra_retention_time"),
        ],
    )
    def test_invalid_arguments(self, profiles: dict[str, Profile], kwargs: dict, message: str) -> None:
        with pytest.raises(PolicyError, match=message):
            self.expire([], profiles, **kwargs)


def test_due_tolerance_keeps_an_hourly_schedule_hourly() -> None:
    profiles = policy.parse_profiles({"hourly": {"count": 24}})
    last = policy.Snap.from_name("backup;hourly;24;2026-11-29T10:00:03.200000", "backup")
    assert last is not None
    early = datetime(2026, 11, 29, 11, 0, 2, 900000)  # the next cron run, 0.3 s "too early"
    assert policy.due_profiles(profiles, [last], early) == []
    assert [p.name for p in policy.due_profiles(profiles, [last], early, tolerance=timedelta(minutes=5))] == ["hourly"]
    # Never more than half an interval early, whatever the tolerance says.
    half = datetime(2026, 11, 29, 10, 30, 2)
    assert policy.due_profiles(profiles, [last], half, tolerance=timedelta(hours=2)) == []
    with pytest.raises(policy.PolicyError):
        policy.due_profiles(profiles, [last], early, tolerance=timedelta(seconds=-1))


class TestLegacyLocalTimeNames:
    """backurne 2.x wrote local time into its names; Ceph's order (the listings') decides.

    December: Europe/Paris is UTC+1 (a 2.x name looks an hour newer than it is),
    America/New_York UTC-5 (five hours older). Every listing below is in Ceph order.
    """

    WINTER = datetime(2026, 12, 3, 8, 0, 0)  # UTC
    PARIS = timedelta(hours=1)
    NEW_YORK = timedelta(hours=-5)

    @pytest.fixture
    def hourly_only(self) -> dict[str, Profile]:
        return policy.parse_profiles({"hourly": {"count": 24}, "daily": {"count": 30, "max_on_live": 1}})

    def legacy(self, profile: str, utc: datetime, offset: timedelta, count: int = 30) -> str:
        """A 2.x name of a snapshot taken at ``utc`` on a host whose clock is UTC + offset."""
        return naming.make_snap_name(P, profile, count, utc + offset)

    def ours(self, profile: str, utc: datetime, count: int = 30) -> str:
        return naming.make_snap_name(P, profile, count, utc)

    # -- ahead of UTC (Paris) -------------------------------------------------------------

    def test_ahead_newest_shared_is_our_snapshot_taken_after_the_legacy_one(self) -> None:
        legacy = self.legacy("daily", self.WINTER, self.PARIS)  # named 09:00
        ours = self.ours("hourly", self.WINTER + 10 * timedelta(minutes=1))  # named 08:10
        assert policy.newest_shared([legacy, ours], [legacy, ours], P).name == ours

    def test_ahead_plan_sends_from_our_snapshot_not_from_the_legacy_one(self, hourly_only) -> None:
        legacy = self.legacy("daily", self.WINTER, self.PARIS)
        first = self.ours("hourly", self.WINTER + 10 * timedelta(minutes=1))
        now = self.WINTER + 20 * timedelta(minutes=1)
        plan = policy.plan_image("vm", "c;vm;None", [legacy, first], [legacy, first], hourly_only, P, now, force=True)
        assert plan.base == first
        assert plan.transfers[0] == (first, plan.new_snapshots[0])

    def test_ahead_pending_snapshot_after_the_legacy_one_is_sent(self, hourly_only) -> None:
        legacy = self.legacy("daily", self.WINTER, self.PARIS)
        failed = self.ours("hourly", self.WINTER + 10 * timedelta(minutes=1))  # its transfer failed
        now = self.WINTER + 20 * timedelta(minutes=1)
        plan = policy.plan_image("vm", "c;vm;None", [legacy, failed], [legacy], hourly_only, P, now)
        assert plan.base == legacy
        assert plan.transfers[0] == (legacy, failed)
        assert plan.due == []  # the pending hourly counts as backed up

    def test_ahead_live_expiry_keeps_what_was_just_sent(self, hourly_only) -> None:
        older = self.legacy("daily", self.WINTER - DAY, self.PARIS)
        legacy = self.legacy("daily", self.WINTER, self.PARIS)
        sent = self.ours("hourly", self.WINTER + 10 * timedelta(minutes=1))
        live = [older, legacy, sent]
        doomed = policy.live_expiry(live, [older, legacy, sent], hourly_only, P)
        assert sent not in doomed
        assert doomed == [older]  # daily keeps max_on_live=1 older than the base: legacy

    def test_ahead_backup_expiry_keeps_the_newest_by_ceph_order(self, hourly_only) -> None:
        # Expiry keeps the name's time: 2.x's hourly;1 named 09:00 expires at 10:00, ours
        # (08:10) at 09:10. At 09:30 ours is past expiry, but it is the newest and the base.
        legacy = self.legacy("hourly", self.WINTER, self.PARIS, count=1)
        ours = self.ours("hourly", self.WINTER + 10 * timedelta(minutes=1), count=1)
        now = self.WINTER + 90 * timedelta(minutes=1)
        result = policy.backup_expiry(
            [legacy, ours], hourly_only, P, now, source_exists=True, live_snap_names=[legacy, ours]
        )
        assert ours not in result.delete
        assert "shared" in result.kept_reasons[ours]

    # -- behind UTC (New York) ------------------------------------------------------------

    def test_behind_newest_shared_is_the_legacy_snapshot_taken_after_ours(self) -> None:
        ours = self.ours("hourly", self.WINTER - HOUR)  # 07:00
        legacy = self.legacy("daily", self.WINTER, self.NEW_YORK)  # taken 08:00, named 03:00
        assert policy.newest_shared([ours, legacy], [ours, legacy], P).name == legacy

    def test_behind_plan_sends_from_the_legacy_snapshot(self, hourly_only) -> None:
        ours = self.ours("hourly", self.WINTER - HOUR)
        legacy = self.legacy("daily", self.WINTER, self.NEW_YORK)
        now = self.WINTER + 10 * timedelta(minutes=1)
        plan = policy.plan_image("vm", "c;vm;None", [ours, legacy], [ours, legacy], hourly_only, P, now, force=True)
        assert plan.base == legacy
        assert plan.transfers[0] == (legacy, plan.new_snapshots[0])

    def test_behind_live_expiry_never_removes_a_snapshot_newer_than_the_base(self, hourly_only) -> None:
        # 2.x took `legacy` after our `base` and has not sent it yet: newer by Ceph order.
        base = self.ours("hourly", self.WINTER - HOUR)
        legacy = self.legacy("hourly", self.WINTER, self.NEW_YORK)
        assert policy.live_expiry([base, legacy], [base], hourly_only, P) == []

    def test_behind_backup_expiry_keeps_the_legacy_base(self, hourly_only) -> None:
        # 2.x's hourly;1 named 03:00 "expired" at 04:00 by its name, yet it is the newest
        # snapshot on both sides: the base of the next incremental.
        ours = self.ours("hourly", self.WINTER - HOUR, count=1)
        legacy = self.legacy("hourly", self.WINTER, self.NEW_YORK, count=1)
        now = self.WINTER + 10 * timedelta(minutes=1)
        result = policy.backup_expiry(
            [ours, legacy], hourly_only, P, now, source_exists=True, live_snap_names=[ours, legacy], keep_min=0
        )
        assert legacy not in result.delete
        assert "shared" in result.kept_reasons[legacy]
        assert result.delete == [ours]

    def test_due_reads_the_newest_by_ceph_order_and_the_time_in_its_name(self, hourly_only) -> None:
        # Ahead: the newest by Ceph order is ours (08:10): hourly due an hour later, not
        # at 10:00 as 2.x's 09:00 name would say.
        legacy = self.legacy("hourly", self.WINTER, self.PARIS)
        ours = self.ours("hourly", self.WINTER + 10 * timedelta(minutes=1))
        at = self.WINTER + 70 * timedelta(minutes=1)
        assert [p.name for p in policy.due_profiles(hourly_only, [parsed(legacy), parsed(ours)], at)] == [
            "hourly",
            "daily",
        ]

    def test_backup_head_unknown_to_live_sends_no_pending(self, hourly_only) -> None:
        # The backup image's newest snapshot is gone from live (removed by hand): no Ceph
        # order places `pending` against it, whatever the names say; the new snapshot is
        # sent from the base and carries every change since.
        base = self.ours("hourly", self.WINTER - 2 * HOUR)
        head = self.legacy("hourly", self.WINTER - HOUR, self.NEW_YORK)  # named long before `pending`
        pending = self.ours("hourly", self.WINTER - 30 * timedelta(minutes=1))
        plan = policy.plan_image("vm", "c;vm;None", [base, pending], [base, head], hourly_only, P, self.WINTER)
        assert plan.transfers[0] == (base, plan.new_snapshots[0])
        assert pending not in [target for _source, target in plan.transfers]
        # The head is kept on backup until a newer snapshot is shared, whatever its name says.
        result = policy.backup_expiry(
            [base, head], hourly_only, P, self.WINTER + 30 * DAY, source_exists=True, live_snap_names=[base]
        )
        assert head not in result.delete
