# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""report_metrics: last success of every image from the history, the summary, and the textfile
written atomically with a mode node_exporter's user can read."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import UTC
from ansible_collections.backurne.rbd.plugins.module_utils.report import metrics
from ansible_collections.backurne.rbd.plugins.module_utils.report.history import History, db_path
from ansible_collections.backurne.rbd.plugins.modules import report_metrics

EARLIER = datetime(2026, 11, 29, 10)  # naive UTC, as the history stores it
EARLIER_EPOCH = EARLIER.replace(tzinfo=UTC).timestamp()


def record(image: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "cluster": "prod",
        "image": image,
        "pool": "rbd",
        "namespace": None,
        "rbd_image": f"rbd/{image}",
        "backup_image": f"prod;{image};None",
        "profiles": ["daily"],
        "kind": "incremental",
        "status": status,
        "snapshots": [],
        "bytes_logical": 4096,
        "bytes_wire": 1024,
        "duration": 1.5,
        "verified": None,
        "expired_live": 0,
        "expired_backup": 0,
        "error": "import: boom" if status == "failed" else None,
        "note": None,
        "may_be_frozen": False,
        "set_aside": [],
        **extra,
    }


RECORDS = [
    record("web", "transferred"),
    record("idle", "up-to-date"),
    record("db", "failed"),  # succeeded before: history knows when
    record("new", "failed"),  # never succeeded
]


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    state = tmp_path / "state"
    with History(str(state)) as history:
        history.record_transfer("prod;db;None", "db", True, EARLIER)
        history.record_transfer("prod;db;None", "db", False, datetime(2026, 11, 30), "import: boom")
        history.record_transfer("prod;new;None", "new", False, datetime(2026, 11, 30), "import: boom")
    return str(state)


def samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            image = labels.split('image="', 1)[1].split('"', 1)[0]
            found[image] = float(value)
    return found


def test_every_image_has_a_last_success_failed_ones_from_the_history(state_dir: str) -> None:
    images, summary = metrics.report(RECORDS, state_dir, 1000.0, 2000.0)
    by_name = {image["image"]: image["last_success"] for image in images}
    assert by_name == {"web": 2000.0, "idle": 2000.0, "db": round(EARLIER_EPOCH, 3), "new": 0.0}
    text = metrics.textfile(images, summary)
    assert samples(text, "backurne_image_last_success_timestamp_seconds") == by_name
    assert samples(text, "backurne_image_failed") == {"web": 0, "idle": 0, "db": 1, "new": 1}
    assert summary["failed_images"] == ["rbd/db", "rbd/new"]
    assert (summary["images"], summary["transferred"], summary["failed"], summary["ok"]) == (4, 1, 2, False)
    assert summary["duration"] == 1000.0


def test_no_history_yet_is_not_created_by_reading(tmp_path: Path) -> None:
    images, _summary = metrics.report(RECORDS, str(tmp_path / "none"), 1.0, 2.0)
    assert [image["last_success"] for image in images] == [2.0, 2.0, 0.0, 0.0]
    assert not os.path.exists(db_path(str(tmp_path / "none")))


def test_unknown_fields_never_reach_the_report(state_dir: str) -> None:
    images, _summary = metrics.report([record("web", "transferred", password="hunter22")], state_dir, 1.0, 2.0)
    assert "password" not in images[0]


def test_a_record_without_image_or_status_is_named(state_dir: str) -> None:
    with pytest.raises(metrics.MetricsError, match=r"records\[1\]"):
        metrics.report([record("web", "transferred"), {"image": "x"}], state_dir, 1.0, 2.0)


def test_textfile_is_replaced_atomically_with_a_readable_mode(tmp_path: Path) -> None:
    path = tmp_path / "backurne.prom"
    path.write_text("old\n")
    os.chmod(path, 0o600)
    metrics.write_textfile(str(path), "new 1\n")
    assert path.read_text() == "new 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["backurne.prom"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("relative.prom", "absolute"),
        ("/tmp/backurne.txt", r"\*\.prom"),
        ("/nonexistent-dir-xyz/backurne.prom", "does not exist"),
    ],
)
def test_bad_textfile_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(metrics.MetricsError, match=message):
        metrics.write_textfile(path, "x 1\n")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "backurne.prom"
    path.write_text("old\n")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.os, "replace", refuse)
    with pytest.raises(metrics.MetricsError, match="No space left"):
        metrics.write_textfile(str(path), "new 1\n")
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["backurne.prom"]


def test_node_exporters_user_can_read_the_textfile() -> None:
    # node_exporter runs as its own unprivileged user: `nobody` stands in for it. The directory is
    # one it may enter (pytest's tmp_path is private to root); the tests run as root, as the lab.
    directory = Path(tempfile.mkdtemp(prefix="backurne-textfile-", dir="/tmp"))
    os.chmod(directory, 0o755)
    path = directory / "backurne.prom"
    metrics.write_textfile(str(path), "backurne_run_images_failed 0\n")
    nobody = pwd.getpwnam("nobody")
    read = subprocess.run(
        ["cat", str(path)],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )
    shutil.rmtree(directory)
    assert read.returncode == 0, read.stderr
    assert read.stdout == "backurne_run_images_failed 0\n"


def test_module_writes_the_textfile_and_returns_the_report(
    run_module: Callable[..., dict[str, Any]], state_dir: str, tmp_path: Path
) -> None:
    path = tmp_path / "backurne.prom"
    result = run_module(
        report_metrics.main,
        {"records": RECORDS, "prometheus_file": str(path), "state_dir": state_dir, "started": 1.0},
    )
    assert result["changed"] is True
    assert result["summary"]["failed_images"] == ["rbd/db", "rbd/new"]
    assert samples(path.read_text(), "backurne_image_last_success_timestamp_seconds")["db"] == round(EARLIER_EPOCH, 3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_module_check_mode_writes_nothing(
    run_module: Callable[..., dict[str, Any]], state_dir: str, tmp_path: Path
) -> None:
    path = tmp_path / "backurne.prom"
    result = run_module(
        report_metrics.main,
        {"records": RECORDS, "prometheus_file": str(path), "state_dir": state_dir, "_ansible_check_mode": True},
    )
    assert result["prometheus_file"] == str(path)
    assert [image["last_success"] for image in result["images"]][2] == round(EARLIER_EPOCH, 3)
    assert not path.exists()


def test_module_bad_mode_fails_naming_it(run_module: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "backurne.prom"
    result = run_module(report_metrics.main, {"records": RECORDS, "prometheus_file": str(path), "mode": "rw-r--r--"})
    assert result["failed"] is True
    assert "mode 'rw-r--r--'" in result["msg"]
    assert not path.exists()


def test_module_unwritable_textfile_fails_with_the_report(
    run_module: Callable[..., dict[str, Any]], state_dir: str, tmp_path: Path
) -> None:
    directory = tmp_path / "readonly"
    directory.mkdir()
    (directory / "backurne.prom").mkdir()  # a directory where the file should be: rename fails
    result = run_module(
        report_metrics.main,
        {"records": RECORDS, "prometheus_file": str(directory / "backurne.prom"), "state_dir": state_dir},
    )
    assert result["failed"] is True and "cannot write it" in result["msg"]
    assert result["summary"]["failed_images"] == ["rbd/db", "rbd/new"]  # still there, for the artifacts
    assert sorted(os.listdir(directory)) == ["backurne.prom"]  # no temporary file left
