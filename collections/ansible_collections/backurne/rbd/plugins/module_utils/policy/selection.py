# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Which live images a run looks at: the include/exclude shell patterns of the modules' options.
import fnmatch
from collections.abc import Iterable


def matches(image: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def selected(image: str, include: list[str], exclude: list[str], only: list[str] | None = None) -> bool:
    """Whether ``image`` matches one of ``include`` (when any), one of ``only`` (when any), none of ``exclude``."""
    if include and not matches(image, include):
        return False
    if only and not matches(image, only):
        return False
    return not matches(image, exclude)
