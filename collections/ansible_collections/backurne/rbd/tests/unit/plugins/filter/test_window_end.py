# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""backurne.rbd.window_end: a backup window's end, typed as a time of day or a time stamp."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.backurne.rbd.plugins.filter.utc_time import FilterModule, window_end
from ansible_collections.backurne.rbd.plugins.module_utils.stream.backup_job import parse_window_end


@pytest.mark.parametrize(
    ("typed", "now", "utc"),
    [
        # A run starting at 23:00 Paris time (22:00 UTC) with 06:00: the next morning, 05:00 UTC.
        ("06:00 Europe/Paris", "2026-11-20T22:00:00", "2026-11-21T05:00:00"),
        # Starting at 01:00 Paris time: the same morning.
        ("06:00 Europe/Paris", "2026-11-21T00:00:00", "2026-11-21T05:00:00"),
        # Summer time: UTC+2.
        ("06:00 Europe/Paris", "2026-06-20T21:00:00", "2026-06-21T04:00:00"),
        # Just past today's 06:00: tomorrow's.
        ("06:00 Europe/Paris", "2026-11-21T05:00:01", "2026-11-22T05:00:00"),
        # Exactly 06:00: that one has come, the window is tomorrow's.
        ("06:00 Europe/Paris", "2026-11-21T05:00:00", "2026-11-22T05:00:00"),
        ("6:30:15 UTC", "2026-11-20T22:00:00", "2026-11-21T06:30:15"),
        ("23:59 America/New_York", "2026-11-20T12:00:00", "2026-11-21T04:59:00"),
        # A time stamp: as utc_time reads it (UTC without a zone), past or not.
        ("2026-11-21T05:00:00", "2026-11-22T00:00:00", "2026-11-21T05:00:00"),
        ("2026-11-21 06:00 Europe/Paris", None, "2026-11-21T05:00:00"),
        ("2026-11-21T06:00:00+01:00", None, "2026-11-21T05:00:00"),
        ("", None, ""),
        (None, None, ""),
    ],
)
def test_window_end_is_the_next_time_of_day_or_the_time_stamp(typed: str | None, now: str | None, utc: str) -> None:
    assert window_end(typed, "backurne_window_end", now=now) == utc
    # ... which the transfer module reads back as that moment.
    assert parse_window_end(utc) == (None if not utc else __import__("datetime").datetime.fromisoformat(utc))


def test_window_end_in_the_controller_zone_is_within_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from datetime import datetime

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no DST
    time.tzset()
    try:
        assert window_end("06:00", now="2026-11-20T20:00:00") == "2026-11-20T21:00:00"
        assert window_end("06:00", now="2026-11-20T21:00:00") == "2026-11-21T21:00:00"
        got = datetime.fromisoformat(window_end("06:00"))
        assert got.minute == 0 and got.hour == 21
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(
    ("typed", "now", "why"),
    [
        # Paris skips 02:00-03:00 on 2026-03-29 and has 02:30 twice on 2026-10-25.
        ("02:30 Europe/Paris", "2026-03-28T23:00:00", "does not exist on 2026-03-29"),
        ("02:30 Europe/Paris", "2026-10-24T23:00:00", "happens twice on 2026-10-25"),
        ("06:00 Mars/Olympus", None, "unknown time zone"),
        ("25:00", None, "is not a time of day"),
        ("06:61 Europe/Paris", None, "is not a time of day"),
        ("tomorrow morning", None, "is neither a time of day nor a time stamp"),
        ("2026-11", None, "is neither a time of day nor a time stamp"),
    ],
)
def test_window_end_refuses_naming_the_variable(typed: str, now: str | None, why: str) -> None:
    with pytest.raises(AnsibleFilterError) as caught:
        window_end(typed, "backurne_window_end", now=now)
    assert str(caught.value).startswith(f"backurne_window_end {typed!r}")
    assert why in str(caught.value)


def test_window_end_is_a_filter() -> None:
    assert FilterModule().filters()["window_end"] is window_end


def test_transfer_module_reads_only_iso_window_ends() -> None:
    with pytest.raises(ValueError, match=r"^window_end '06:00' is not an ISO 8601 time"):
        parse_window_end("06:00")
    assert parse_window_end(" ") is None
    assert str(parse_window_end("2026-11-21T06:00:00+01:00")) == "2026-11-21 05:00:00"


def test_bwlimit_filter_reads_a_rate_or_a_mapping_naming_the_bad_key() -> None:
    from ansible_collections.backurne.rbd.plugins.filter.bwlimit import bwlimit

    assert bwlimit("1M") == {"transfer": 1 << 20, "node": None}
    assert bwlimit({"node": "1.5G"}) == {"transfer": None, "node": 3 << 29}
    assert bwlimit(None) == {"transfer": None, "node": None}
    with pytest.raises(AnsibleFilterError, match=r"^backurne_bwlimit.node: 'lots' is not a rate"):
        bwlimit({"transfer": "1M", "node": "lots"})
    with pytest.raises(AnsibleFilterError, match=r"^backurne_bwlimit: '-1M' is not a rate"):
        bwlimit("-1M")
    with pytest.raises(AnsibleFilterError, match=r"unknown key\(s\) total"):
        bwlimit({"total": "1M"})
