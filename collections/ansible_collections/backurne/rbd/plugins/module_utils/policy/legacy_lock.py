# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Is backurne 2.x at work on this node? Its locks, seen without touching them.

2.x takes one file lock per image (``flock`` through py-filelock) on a file in its ``lockdir``
(default /var/lock/backurne) and leaves the file there afterwards: a file is not a lock, a held
``flock`` on it is. 3.x locks images in Ceph instead, so the two share no lock; during a cut-over
a 3.x run refuses to start while a 2.x process holds one (docs/migration.md).

The kernel lists every held file lock in /proc/locks (``N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE
...``): the locks are read there and matched with the lockdir's files by device and inode. Nothing
is opened or locked, so a running 2.x is never disturbed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

PROC_LOCKS = "/proc/locks"
_FILE_ID = re.compile(r"^([0-9a-f]+):([0-9a-f]+):(\d+)$")


@dataclass(frozen=True)
class HeldLock:
    path: str
    pid: int


def parse_proc_locks(lines: Iterable[str]) -> dict[tuple[int, int, int], int]:
    """(major, minor, inode) -> pid of the holder, for every granted lock (waiters, ``->``, skipped)."""
    held: dict[tuple[int, int, int], int] = {}
    for line in lines:
        fields = line.split()
        if "->" in fields:
            continue
        for index, text in enumerate(fields):
            match = _FILE_ID.match(text)
            if match and index > 0 and fields[index - 1].lstrip("-").isdigit():
                major, minor, inode = int(match[1], 16), int(match[2], 16), int(match[3])
                held.setdefault((major, minor, inode), int(fields[index - 1]))
                break
    return held


def held_locks(lockdir: str, proc_locks: str = PROC_LOCKS) -> list[HeldLock]:
    """The files of ``lockdir`` some process holds a lock on; [] when the directory does not exist."""
    try:
        names = sorted(os.listdir(lockdir))
    except FileNotFoundError:
        return []
    with open(proc_locks, encoding="ascii", errors="replace") as stream:
        held = parse_proc_locks(stream)
    found = []
    for name in names:
        path = os.path.join(lockdir, name)
        try:
            info = os.stat(path)
        except FileNotFoundError:  # released and removed meanwhile
            continue
        pid = held.get((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino))
        if pid is not None:
            found.append(HeldLock(path, pid))
    return found


def describe(locks: list[HeldLock]) -> str:
    shown = ", ".join(f"{lock.path} (pid {lock.pid})" for lock in locks[:5])
    more = f" and {len(locks) - 5} more" if len(locks) > 5 else ""
    return (
        f"backurne 2.x is running here: it holds {len(locks)} lock(s) in its lockdir: {shown}{more}. "
        "The two share no lock: stop 2.x's schedule and let it finish first (docs/migration.md)"
    )
