# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""backurne.rbd.utc_time: the times people type, read on the controller into naive UTC."""

from __future__ import annotations

from datetime import datetime

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.backurne.rbd.plugins.filter.utc_time import FilterModule, utc_time
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import parse_now


@pytest.mark.parametrize(
    ("typed", "utc"),
    [
        ("2026-11-20 12:00 Europe/Paris", "2026-11-20T11:00:00"),  # winter: UTC+1
        ("2026-06-20 12:00 Europe/Paris", "2026-06-20T10:00:00"),  # summer: UTC+2
        ("2026-11-20T12:00:00+01:00", "2026-11-20T11:00:00"),
        ("2026-11-20T12:00:00Z", "2026-11-20T12:00:00"),
        ("2026-11-20 12:00 UTC", "2026-11-20T12:00:00"),
        ("2026-11-20 12:00 CET", "2026-11-20T11:00:00"),
        ("2026-11-20T12:00:00", "2026-11-20T12:00:00"),  # no zone: UTC, as in snapshot names
        ("2026-11-29T08:00:00.123456", "2026-11-29T08:00:00.123456"),
        ("2026-11-20 23:30 America/New_York", "2026-11-21T04:30:00"),
        (" 2026-11-20 12:00 ", "2026-11-20T12:00:00"),
        ("2026-01-02T00:01:00", "2026-01-02T00:01:00"),  # ISO: never read day first
        ("2026-01-02 00:01 Europe/Paris", "2026-01-01T23:01:00"),
        ("20 Nov 2026 12:00", "2026-11-20T12:00:00"),
    ],
)
def test_typed_times_become_naive_utc(typed: str, utc: str) -> None:
    assert utc_time(typed, "backurne_now") == utc
    # ... which the modules' strict parser reads back as the same moment.
    assert parse_now(utc_time(typed, "backurne_now")) == datetime.fromisoformat(utc)


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_empty_stays_empty_so_modules_use_now(empty: str | None) -> None:
    assert utc_time(empty, "backurne_now") == ""


def test_an_aware_datetime_is_converted() -> None:
    assert utc_time(datetime.fromisoformat("2026-11-20T12:00:00+02:00")) == "2026-11-20T10:00:00"


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("12:00", "has no full date"),
        ("2026-11", "has no full date"),
        ("yesterday", "is not an ISO 8601 time"),
        ("2026-11-20 12:00 Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("2026-11-20 12:00 PST", "unknown time zone 'PST'"),
        ("2026-03-29 02:30 Europe/Paris", "does not exist in that zone"),
        ("2026-10-25 02:30 Europe/Paris", "happens twice in that zone"),
        ("2026-11-20T12:00+01:00 Europe/Paris", "both an offset and a zone name"),
        ("01/02/2026 12:00", "day first or month first"),
        (5, "is a int, not a time"),
    ],
)
def test_bad_times_fail_naming_the_variable_and_value(typed: object, why: str) -> None:
    with pytest.raises(AnsibleFilterError) as caught:
        utc_time(typed, "backurne_restore_snapshot.before")
    message = str(caught.value)
    assert message.startswith(f"backurne_restore_snapshot.before {str(typed)!r}")
    assert why in message


def test_the_filter_is_registered_under_its_name() -> None:
    assert FilterModule().filters()["utc_time"] is utc_time
