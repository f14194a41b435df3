# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""legacy_lock: a lock backurne 2.x holds in its lockdir (a real flock, held by another process
as py-filelock holds it) stops a 3.x run; a lock file nobody holds does not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.policy.legacy_lock import held_locks, parse_proc_locks
from ansible_collections.backurne.rbd.plugins.modules import legacy_lock

# What 2.x's py-filelock does: fcntl.flock on the file, kept while the image is worked on.
HOLDER = """
import fcntl, sys
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def lockdir(tmp_path: Path) -> Path:
    directory = tmp_path / "lock"
    directory.mkdir()
    (directory / "rbdprod;idle;None").write_text("")  # left behind by an earlier 2.x run
    return directory


@pytest.fixture
def holder(lockdir: Path) -> Iterator[subprocess.Popen[str]]:
    path = lockdir / "rbdprod;web;None"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc
    proc.communicate("")  # EOF: it exits, the lock goes with it


def test_a_held_lock_is_found_with_its_holder(lockdir: Path, holder: subprocess.Popen[str]) -> None:
    (found,) = held_locks(str(lockdir))
    assert (Path(found.path).name, found.pid) == ("rbdprod;web;None", holder.pid)


def test_files_nobody_holds_are_not_locks(lockdir: Path) -> None:
    assert held_locks(str(lockdir)) == []
    assert held_locks(str(lockdir / "missing")) == []


def test_proc_locks_lines() -> None:
    lines = [
        "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2212133 0 EOF",
        "1: -> FLOCK  ADVISORY  WRITE 4343 fe:00:2212133 0 EOF",  # a waiter, not a holder
        "2: POSIX  ADVISORY  READ 77 08:11:99 128 128",
    ]
    assert parse_proc_locks(lines) == {(0xFE, 0, 2212133): 4242, (8, 0x11, 99): 77}


def test_module_fails_naming_the_lock_and_pid(
    run_module: Callable[..., dict[str, Any]], lockdir: Path, holder: subprocess.Popen[str]
) -> None:
    result = run_module(legacy_lock.main, {"lockdir": str(lockdir)})
    assert result["failed"] is True
    assert f"rbdprod;web;None (pid {holder.pid})" in result["msg"] and "backurne 2.x" in result["msg"]
    assert result["held"] == [{"path": str(lockdir / "rbdprod;web;None"), "pid": holder.pid}]


def test_module_passes_once_2x_is_done(run_module: Callable[..., dict[str, Any]], lockdir: Path) -> None:
    result = run_module(legacy_lock.main, {"lockdir": str(lockdir)})
    assert result.get("failed") is not True and result["held"] == []
