# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import (
    UNKNOWN,
    UNREADABLE,
    HoldError,
    apply_holds,
    hold_key,
    holds_from_metadata,
    new_hold,
    parse_hold,
)
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import BackupExpiry

NOW = datetime(2026, 12, 3, 12, 0, 0)
S1 = "backup;daily;1;2026-11-01T00:00:00.000000"
S2 = "backup;daily;1;2026-11-02T00:00:00.000000"


def test_a_hold_round_trips_through_image_meta() -> None:
    hold = new_hold(S1, "  INC  4711 ", "2027-01-31", "alice", NOW)
    assert (hold.reason, hold.until, hold.by) == ("INC 4711", datetime(2027, 1, 31), "alice")
    assert holds_from_metadata({hold_key(S1): hold.value(), "other": "x"}) == {S1: hold}


@pytest.mark.parametrize(
    ("reason", "until", "by", "culprit"),
    [
        ("", None, "a", "reason"),
        ("r" * 501, None, "a", "reason"),
        ("ok", "yesterday", "a", "until"),
        ("ok", "2026-12-01", "a", "not in the future"),
        ("ok", None, "", "by"),
        ("ok", None, "a\nb", "control"),
    ],
)
def test_a_bad_hold_is_refused_naming_the_field(reason: str, until: str | None, by: str, culprit: str) -> None:
    with pytest.raises(HoldError, match=culprit):
        new_hold(S1, reason, until, by, NOW)


def test_an_unreadable_hold_holds_without_end() -> None:
    hold = parse_hold(S1, "{not json")
    assert (hold.reason, hold.until, hold.active(NOW + timedelta(days=10_000))) == (UNREADABLE, None, True)


def test_held_snapshots_are_kept_and_an_expired_hold_counts_as_released() -> None:
    expiry = BackupExpiry(delete=[S1, S2], remove_image=True, kept_reasons={})
    holds = {
        S1: new_hold(S1, "legal", None, "a", NOW),
        S2: new_hold(S2, "short", NOW + timedelta(days=1), "a", NOW),
    }
    kept = apply_holds(expiry, holds, NOW + timedelta(hours=1))
    assert (kept.delete, kept.remove_image) == ([], False)
    assert kept.kept_reasons[S1].startswith("held: legal")
    later = apply_holds(expiry, holds, NOW + timedelta(days=2))
    assert (later.delete, later.remove_image) == ([S2], False)  # S1 still held keeps the image
    assert apply_holds(expiry, {}, NOW) == expiry


def test_holds_that_cannot_be_read_keep_everything() -> None:
    expiry = BackupExpiry(delete=[S1], remove_image=True, kept_reasons={})
    kept = apply_holds(expiry, None, NOW)
    assert (kept.delete, kept.remove_image, kept.kept_reasons) == ([], False, {S1: UNKNOWN})


def test_the_check_does_not_call_a_held_snapshot_late() -> None:
    from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import parse_profiles
    from ansible_collections.backurne.rbd.plugins.module_utils.report.health import check_images

    profiles = parse_profiles({"daily": {"count": 1}})
    old = "backup;daily;1;2026-11-01T00:00:00.000000"
    new = "backup;daily;1;2026-12-03T00:00:00.000000"
    args = ({"img": [new]}, {}, {"c;img;None": [old, new]}, "c", profiles, "backup", NOW)
    late = [f.code for f in check_images(*args)]
    assert late == ["not-expired"]
    assert check_images(*args, held={"c;img;None": {old}}) == []
