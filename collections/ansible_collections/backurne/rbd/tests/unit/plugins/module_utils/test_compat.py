# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""compat.stdlib: the 3.10/3.11 conveniences the core uses behave the same on every Python the
nodes run (these tests run under 3.9 and 3.13 too: `make compat`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC, parse_isoformat, zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.policy import holds

NOW = datetime(2026, 12, 1, 12, 0, 0)


def test_utc_is_the_utc_timezone() -> None:
    assert UTC.utcoffset(None) == timedelta(0)
    assert datetime(2026, 1, 1, tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31", datetime(2027, 1, 31)),
        ("2027-01-31T12:00", datetime(2027, 1, 31, 12, 0)),
        ("2018-06-01T15:44:26.072348", datetime(2018, 6, 1, 15, 44, 26, 72348)),
        # 3.11+ only in datetime.fromisoformat:
        ("2027-01-31T12:00:00Z", datetime(2027, 1, 31, 12, 0, tzinfo=UTC)),
        ("2027-01-31T12:00:00.5Z", datetime(2027, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2027-01-31T12:00:00.1234567", datetime(2027, 1, 31, 12, 0, 0, 123456)),
        ("2027-01-31T14:00:00+02:00", datetime(2027, 1, 31, 14, 0, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_parse_isoformat_reads_the_usual_forms(text: str, expected: datetime) -> None:
    parsed = parse_isoformat(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["", "tomorrow", "2027-13-01", "2027-01-31T25:00", "Z", "2027-01-31TZ"])
def test_parse_isoformat_refuses_what_is_no_date(text: str) -> None:
    with pytest.raises(ValueError):
        parse_isoformat(text)


def test_a_hold_until_in_zulu_time_is_read_on_every_python() -> None:
    # An operator's "…Z" (what most tools print) must not depend on the node's Python.
    assert holds.parse_until("2027-01-31T12:00:00Z", NOW) == datetime(2027, 1, 31, 12, 0)


def test_zip_strict_pairs_equal_lengths_and_refuses_others() -> None:
    assert list(zip_strict([1, 2], "ab", (None, True))) == [(1, "a", None), (2, "b", True)]
    assert list(zip_strict([], [])) == []
    with pytest.raises(ValueError):
        list(zip_strict([1, 2], [1]))
    with pytest.raises(ValueError):
        list(zip_strict([1], [1, 2]))
