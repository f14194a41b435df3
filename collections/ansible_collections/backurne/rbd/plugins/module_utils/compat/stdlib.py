# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The few Python 3.10/3.11 standard-library conveniences the core uses, for managed nodes on
# Python 3.9 (RHEL/Rocky 9 Ceph clients) and 3.10 (Ubuntu 22.04). The modules and everything in
# module_utils run on the node's interpreter, so they must import and behave the same on 3.9
# to 3.13; ruff targets py39 there (ruff.toml) and `make compat` runs the core under 3.9 and 3.13.
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

# datetime.UTC is 3.11+; it is the same object as timezone.utc.
UTC = timezone.utc

# What 3.11's datetime.fromisoformat accepts and 3.9/3.10's does not, in the forms an operator
# types: a "Z" suffix, and a fraction of other than 3 or 6 digits.
_ZULU = re.compile(r"(?<=\d)[Zz]$")
_FRACTION = re.compile(r"(T\d\d:\d\d:\d\d)[.,](\d+)")


def _pad_fraction(match: re.Match[str]) -> str:
    digits = (match.group(2) + "000000")[:6]
    return f"{match.group(1)}.{digits}"


def parse_isoformat(text: str) -> datetime:
    """datetime.fromisoformat as on 3.11 for the usual ISO 8601 forms, on every Python.

    Raises ValueError like fromisoformat. On 3.11+ it is fromisoformat itself; before, a
    trailing ``Z`` becomes ``+00:00`` and a fraction is padded or cut to microseconds first.
    """
    if sys.version_info >= (3, 11):
        return datetime.fromisoformat(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        normalised = _FRACTION.sub(_pad_fraction, _ZULU.sub("+00:00", text))
        if normalised == text:
            raise
        return datetime.fromisoformat(normalised)


_NO_VALUE = object()


def zip_strict(*iterables: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """zip(..., strict=True) (3.10+): ValueError when the iterables differ in length."""
    iterators = [iter(iterable) for iterable in iterables]
    while True:
        items = [next(iterator, _NO_VALUE) for iterator in iterators]
        ended = [item is _NO_VALUE for item in items]
        if all(ended):
            return
        if any(ended):
            raise ValueError("zip_strict: the iterables differ in length")
        yield tuple(items)
