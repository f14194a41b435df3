# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The error of a failed rbd/rados/ceph/ssh command and the one line of its stderr that says why.
# Apart from the runner (ceph/rbd.py) so that what the runner itself uses (ceph/capacity.py, for
# the hint on a timed-out write) can catch it without importing the runner: no import cycle.
import re
from collections.abc import Sequence

# "2026-11-29T21:29:50.852+0000 7f1828c8f380 -1 " in front of Ceph log lines.
_CEPH_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{4} [0-9a-f]+ +-?\d+ ")
# "killed": bash's report of a pipeline member killed by a signal ("25675 Killed  rbd …"), which
# it follows with a "Done" line for the others.
_ERRNO_HINT = re.compile(r"\(\d+\)|error|fail|denied|refused|not found|no such|timed out|invalid|killed", re.IGNORECASE)
_NOISE = ("did not load config file",)
_MAX_CAUSE = 300


def stderr_cause(stderr: str) -> str:
    """The line of a command's stderr that says why it failed, for a one-line message."""
    lines = []
    for raw in stderr.splitlines():
        line = _CEPH_LOG_PREFIX.sub("", raw.strip()).strip()
        if line and not any(noise in line for noise in _NOISE):
            lines.append(line)
    if not lines:
        return ""
    # rbd often ends with a generic line after the specific one; prefer the last line that
    # looks like an error over a trailing progress or banner line.
    for line in reversed(lines):
        if _ERRNO_HINT.search(line):
            return line[:_MAX_CAUSE]
    return lines[-1][:_MAX_CAUSE]


class RbdError(RuntimeError):
    """A failed rbd/rados/ssh command: what, on which node, and why (never secrets)."""

    def __init__(
        self,
        argv: Sequence[str],
        rc: int | None,
        stderr: str,
        target: str,
        *,
        action: str = "",
        subject: str = "",
        cause: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.rc = rc
        self.stderr = stderr
        self.target = target
        self.action = action or (self.argv[0] if self.argv else "command")
        self.subject = subject
        if cause is None:
            cause = stderr_cause(stderr) or (f"exit status {rc}" if rc is not None else "failed")
        self.cause = cause
        super().__init__(self._message())

    def _message(self) -> str:
        what = f"{self.action} {self.subject}".strip()
        return f"{what} on {self.target}: {self.cause}"

    def __str__(self) -> str:
        return self._message()

    @property
    def is_not_found(self) -> bool:
        return "(2) No such file or directory" in self.stderr

    @property
    def is_busy(self) -> bool:
        return "(16) Device or resource busy" in self.stderr

    @property
    def is_exists(self) -> bool:
        return "(17) File exists" in self.stderr
