# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The times people type (backurne_now, a restore's "before"), read on the CONTROLLER with
# python-dateutil and handed to the modules as naive UTC ISO 8601, the form of the times in
# snapshot names. The modules keep their stricter ISO reading (compat.stdlib.parse_isoformat,
# the same on the nodes' Python 3.9 to 3.13): the nodes need no
# dateutil, and a zone name is resolved once, with the controller's zone database. The
# filter's documentation lives beside this file.
import re
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from dateutil import parser as date_parser
    from dateutil import tz as date_tz

    HAS_DATEUTIL = True
except ImportError:  # reported when the filter is used, naming the package
    HAS_DATEUTIL = False

from ansible.errors import AnsibleFilterError

# A trailing IANA zone name ("Europe/Paris", "America/Argentina/Buenos_Aires"): dateutil's parser
# does not read these itself, so it is split off and resolved with dateutil.tz.
_ZONE_NAME = re.compile(r"\s+(?P<zone>[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)+)$")
# Two defaults that differ in every date field: a field taken from the default shows up as a
# difference, so "12:00" (no date) or "2026-11" (no day) is refused instead of silently completed.
_DEFAULTS = (datetime(2001, 1, 1), datetime(2002, 2, 2))


def _fail(name: str, value: str, why: str) -> AnsibleFilterError:
    return AnsibleFilterError(
        f"{name} {value!r} {why} (e.g. 2026-11-20T12:00:00 for UTC, 2026-11-20 12:00 Europe/Paris, "
        "2026-11-20T12:00:00+01:00)"
    )


def _zone_from_name(name: str, value: str, zone_name: str) -> Any:
    zone = date_tz.gettz(zone_name)
    if zone is None:
        raise _fail(name, value, f"names an unknown time zone {zone_name!r}")
    return zone


def _parse(text: str, name: str, value: str, zone: Any) -> datetime:
    def known_zone(zone_name: str | None, offset: int | None) -> Any:
        if offset is not None:
            return date_tz.tzoffset(zone_name, offset)
        if zone_name is None:
            return None
        return _zone_from_name(name, value, zone_name)  # "CET" resolves, "PST" (no such zone file) fails

    try:
        # ISO 8601 as the modules read it: unambiguous, taken as is (dateutil's day-first reading
        # would turn 2026-01-02 into February).
        parsed = [datetime.fromisoformat(text)]
    except ValueError:
        parsed = _parse_free_form(text, name, value, known_zone)
    moment = parsed[0]
    if zone is not None:
        if moment.tzinfo is not None:
            raise _fail(name, value, "has both an offset and a zone name")
        moment = moment.replace(tzinfo=zone)
        if not date_tz.datetime_exists(moment):
            raise _fail(name, value, "does not exist in that zone (clocks skip it)")
        if date_tz.datetime_ambiguous(moment):
            raise _fail(name, value, "happens twice in that zone (clocks go back): give an offset")
    return moment


def _parse_free_form(text: str, name: str, value: str, known_zone: Any) -> list[datetime]:
    """dateutil's reading of a time that is not ISO 8601 ("2026-11-20 12:00 CET", "20 Nov 2026 12:00")."""
    parsed = []
    for default in _DEFAULTS:
        try:
            parsed.append(date_parser.parse(text, default=default, tzinfos=known_zone))
        except (ValueError, OverflowError) as exc:
            raise _fail(name, value, f"is not an ISO 8601 time nor a date and time with a zone ({exc})") from None
    if parsed[0].date() != parsed[1].date():
        raise _fail(name, value, "has no full date (year, month and day)")
    if date_parser.parse(text, default=_DEFAULTS[0], dayfirst=True, tzinfos=known_zone) != parsed[0]:
        raise _fail(name, value, "could be read day first or month first: write the date as YYYY-MM-DD")
    return parsed


def utc_time(value: Any, name: str = "time") -> str:
    """A typed time as naive UTC ISO 8601 ("2026-11-20 12:00 Europe/Paris" -> "2026-11-20T11:00:00").

    No zone and no offset means UTC (as in snapshot names). An empty value stays empty (the
    modules read that as "now"). Anything else raises AnsibleFilterError naming ``name``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if isinstance(value, datetime):
        moment = value
    else:
        if not isinstance(value, str):
            raise _fail(name, str(value), f"is a {type(value).__name__}, not a time")
        if not HAS_DATEUTIL:
            raise AnsibleFilterError(
                f"{name}: backurne.rbd.utc_time needs python-dateutil on the controller (pip install python-dateutil)"
            )
        text = value.strip()
        zone = None
        match = _ZONE_NAME.search(text)
        if match:
            zone = _zone_from_name(name, value, match.group("zone"))
            text = text[: match.start()]
        moment = _parse(text, name, value, zone)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat()


# A time of day, with seconds or not, and an optional zone name after it ("06:00", "6:30:15 Europe/Paris").
_TIME_OF_DAY = re.compile(r"^(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?(?:\s+(?P<zone>\S+))?$")


def _window_fail(name: str, value: str, why: str) -> AnsibleFilterError:
    return AnsibleFilterError(
        f"{name} {value!r} {why} (e.g. 06:00 in the controller's zone, 06:00 Europe/Paris, "
        "or a time stamp: 2026-11-21T05:00:00 for UTC, 2026-11-21 06:00 Europe/Paris)"
    )


def _now_in(zone: Any, now: Any) -> datetime:
    if now is None or now == "":
        return datetime.now(zone)
    moment = now if isinstance(now, datetime) else datetime.fromisoformat(str(now))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # as utc_time reads a time without zone
    return moment.astimezone(zone)


def _next_time_of_day(match: re.Match[str], name: str, value: str, now: Any) -> datetime:
    hour, minute, second = int(match.group("hour")), int(match.group("minute")), int(match.group("second") or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise _window_fail(name, value, "is not a time of day")
    zone_name = match.group("zone")
    zone = _zone_from_name(name, value, zone_name) if zone_name else date_tz.tzlocal()
    local_now = _now_in(zone, now)
    # The next such time: today's when still ahead, else tomorrow's (a run starting at 23:00
    # with 06:00 ends its window at 06:00 the next morning).
    for days in (0, 1):
        day = (local_now + timedelta(days=days)).date()
        moment = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
        if not date_tz.datetime_exists(moment):
            raise _window_fail(name, value, f"does not exist on {day} in that zone (clocks skip it)")
        if date_tz.datetime_ambiguous(moment):
            raise _window_fail(name, value, f"happens twice on {day} in that zone (clocks go back): give another time")
        if moment > local_now:
            return moment
    raise AssertionError("tomorrow's time of day is always ahead")  # pragma: no cover


def window_end(value: Any, name: str = "backurne_window_end", now: Any = None) -> str:
    """The end of a backup window as naive UTC ISO 8601, or "" for no window.

    A time of day (``06:00``, ``06:00:30``, ``06:00 Europe/Paris``) is the next such time after
    ``now`` (default: the controller's clock), in the zone named, else the controller's local
    zone. Anything else is a time stamp read as utc_time reads it (UTC when it names no zone).
    A value that is neither, or a local time that does not exist or happens twice that day,
    raises AnsibleFilterError naming ``name``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if isinstance(value, str):
        match = _TIME_OF_DAY.match(value.strip())
        if match:
            if not HAS_DATEUTIL:
                raise AnsibleFilterError(
                    f"{name}: backurne.rbd.window_end needs python-dateutil on the controller "
                    "(pip install python-dateutil)"
                )
            moment = _next_time_of_day(match, name, value, now)
            return moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    try:
        return utc_time(value, name)
    except AnsibleFilterError as exc:
        raise _window_fail(name, str(value), f"is neither a time of day nor a time stamp ({exc})") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"utc_time": utc_time, "window_end": window_end}
