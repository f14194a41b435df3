# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The run's report on the backup node: each image's last success from the history, the run's
summary, and the Prometheus textfile for node_exporter's textfile collector.

Written here, not by the report callback: the callback runs on the controller, which under AWX
is a throw-away container, while the backup node keeps the history and runs node_exporter.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import History, db_path
from ansible_collections.backurne.rbd.plugins.module_utils.report.records import (
    prometheus_lines,
    run_summary,
    sanitize_record,
)

# The run backed the image up (or found its backup current): its last success is this run.
SUCCESS_STATUSES = ("transferred", "up-to-date")
# node_exporter's textfile collector reads only these; our temporary file does not end so.
TEXTFILE_SUFFIX = ".prom"
DEFAULT_MODE = 0o644


class MetricsError(ValueError):
    """Bad input or a textfile that cannot be written; the message names the culprit."""


def history_successes(state_dir: str, backup_images: Sequence[str]) -> dict[str, float]:
    """Backup image -> epoch seconds of its last successful transfer, from the history.

    A node without a history yet (first run, or the history elsewhere) knows none: nothing is
    created just to read it.
    """
    if not backup_images or not os.path.exists(db_path(state_dir)):
        return {}
    try:
        with History(state_dir) as history:
            states = history.transfer_states(backup_images)
    except (OSError, sqlite3.Error) as exc:
        raise MetricsError(f"cannot read the history {db_path(state_dir)}: {exc}") from exc
    # History times are naive UTC.
    return {
        name: state.last_success.replace(tzinfo=UTC).timestamp()
        for name, state in states.items()
        if state.last_success is not None
    }


def with_last_success(
    records: Sequence[Mapping[str, Any]], known: Mapping[str, float], finished: float
) -> list[dict[str, Any]]:
    """The records (known fields only) plus ``last_success`` (epoch seconds, 0 for never).

    An image that succeeded in this run: the run's end. Any other (failed, locked, planned): its
    last success in the history, so that "time since the last success" keeps growing for a
    failing image instead of its sample going absent.
    """
    images = []
    for index, record in enumerate(records):
        if not record.get("image") or not record.get("status"):
            raise MetricsError(f"records[{index}]: a record needs an image and a status, got {sorted(record)}")
        image = sanitize_record(record)
        for key in ("bytes_logical", "bytes_wire"):
            image[key] = int(image[key] or 0)
        image["duration"] = float(image["duration"] or 0.0)
        image["profiles"] = list(image["profiles"] or [])
        if image["status"] in SUCCESS_STATUSES:
            image["last_success"] = round(finished, 3)
        else:
            image["last_success"] = round(known.get(str(image.get("backup_image")), 0.0), 3)
        images.append(image)
    return images


def report(
    records: Sequence[Mapping[str, Any]], state_dir: str, started: float, finished: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(images with their last success, run summary with the failed images' names)."""
    names = [str(rec["backup_image"]) for rec in records if rec.get("backup_image")]
    images = with_last_success(records, history_successes(state_dir, names), finished)
    summary = run_summary(images, started, finished)
    summary["failed_images"] = [
        str(image.get("rbd_image") or image["image"]) for image in images if image["status"] == "failed"
    ]
    summary["ok"] = summary["failed"] == 0
    return images, summary


def textfile(images: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    return "\n".join(prometheus_lines(images, summary, with_history=True)) + "\n"


def check_textfile_path(path: str) -> None:
    """A path node_exporter's textfile collector reads: absolute, ``*.prom``, in an existing directory."""
    if not os.path.isabs(path):
        raise MetricsError(f"prometheus_file {path!r}: must be an absolute path")
    if not path.endswith(TEXTFILE_SUFFIX):
        raise MetricsError(
            f"prometheus_file {path!r}: node_exporter's textfile collector reads only *{TEXTFILE_SUFFIX} files"
        )
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise MetricsError(
            f"prometheus_file {path!r}: directory {directory} does not exist"
            " (node_exporter's --collector.textfile.directory)"
        )


def write_textfile(path: str, text: str, mode: int = DEFAULT_MODE) -> None:
    """Replace ``path`` atomically: a temporary file in the same directory (same filesystem, a
    name the collector ignores), given its mode before any byte, synced, then renamed over it.
    A reader sees the old file or the new one, never half of one."""
    check_textfile_path(path)
    directory = os.path.dirname(path)
    try:
        handle, tmp = tempfile.mkstemp(dir=directory, prefix=".backurne-", suffix=".tmp")
    except OSError as exc:
        raise MetricsError(f"prometheus_file {path!r}: cannot create a file in {directory}: {exc}") from exc
    try:
        # mkstemp makes it 0600: node_exporter runs as its own user and must read it.
        os.fchmod(handle, mode)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise MetricsError(f"prometheus_file {path!r}: cannot write it: {exc}") from exc
