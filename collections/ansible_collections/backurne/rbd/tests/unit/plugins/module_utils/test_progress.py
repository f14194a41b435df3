# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ansible_collections.backurne.rbd.plugins.module_utils.stream import progress
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import (
    ProgressBoard,
    expected_from_diff,
    format_status,
    read_status,
    set_thread_name,
    state_dir,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKURNE_STATE_DIR", raising=False)
    assert state_dir() == "/var/lib/backurne"
    monkeypatch.setenv("BACKURNE_STATE_DIR", "/run/backurne")
    assert state_dir() == "/run/backurne"
    assert state_dir("/srv/x") == "/srv/x"


def test_expected_from_rbd_diff_counts_existing_extents_only() -> None:
    # `rbd diff --format json` as 16.2 prints it ("exists" is a string).
    entries = [
        {"offset": 0, "length": 1048576, "exists": "true"},
        {"offset": 4194304, "length": 4096, "exists": "false"},
        {"offset": 8388608, "length": 3145728, "exists": "true"},
    ]
    assert expected_from_diff(entries) == 4194304


def test_status_file_written_throttled_read_and_removed(tmp_path: Path) -> None:
    clock = Clock()
    board = ProgressBoard(str(tmp_path), clock=clock, title=False)
    web = board.start("web", "web", "backup;daily;7;2026-11-29T10:00:00.000000", "prod;web;None", "full")
    assert board.writes == 1  # start is always written
    web.set_expected(100 * 1024 * 1024)
    writes = board.writes
    for step in range(1, 11):  # ten updates within 0.5 s: one write at most
        clock.now += 0.05
        web.update(step * 1024 * 1024)
    assert board.writes == writes
    clock.now += 1.0
    web.update(50 * 1024 * 1024)
    assert board.writes == writes + 1

    rows = read_status(str(tmp_path))
    assert len(rows) == 1
    row = rows[0]
    assert row["pid"] == os.getpid() and row["image"] == "web" and row["kind"] == "full"
    assert row["bytes_done"] == 50 * 1024 * 1024 and row["bytes_expected"] == 100 * 1024 * 1024
    assert row["percent"] == 50.0
    assert row["rate"] == pytest.approx(50 * 1024 * 1024 / 1.5, rel=0.01)  # since the last rate mark
    assert row["started"] == 1000.0 and row["updated"] == pytest.approx(1001.5)
    text = format_status(rows, now=1010.0)
    assert "web" in text and "50.0" in text and "100.0 MiB" in text and "10s" in text

    # A second worker gets the next slot; a finished one leaves the file.
    db = board.start("db", "db", "s", "prod;db;None", "incremental")
    assert [(r["worker"], r["image"], r["percent"]) for r in read_status(str(tmp_path))] == [
        (0, "web", 50.0),
        (1, "db", None),
    ]
    board.finish("web")
    assert [r["image"] for r in read_status(str(tmp_path))] == ["db"]
    db.update(10)
    board.close()
    assert read_status(str(tmp_path)) == []
    assert format_status([]) == "no transfer running"
    assert os.listdir(tmp_path) == []


def test_percent_never_reaches_100_before_the_end(tmp_path: Path) -> None:
    board = ProgressBoard(str(tmp_path), title=False)
    worker = board.start("a", "a", "s")
    worker.set_expected(1000)
    worker.update(1200)  # the estimate was short by a few headers
    assert worker.percent() == 99.9
    board.close()


def test_dead_pids_and_garbage_are_ignored(tmp_path: Path) -> None:
    pid = dead_pid()
    doc = {"pid": pid, "workers": [{"image": "ghost", "worker": 0}]}
    (tmp_path / f"progress-{pid}.json").write_text(json.dumps(doc))
    (tmp_path / f"progress-{os.getpid()}.json").write_text("{not json")
    (tmp_path / "progress-abc.json").write_text("{}")
    (tmp_path / "history.sqlite").write_text("")
    assert read_status(str(tmp_path)) == []
    assert read_status(str(tmp_path / "missing")) == []


def test_unwritable_state_dir_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    board = ProgressBoard(str(blocker / "sub"), title=False)
    worker = board.start("a", "a", "s")
    worker.update(5)
    board.close()
    assert board.path is None


def test_estimate_runs_in_background(tmp_path: Path) -> None:
    board = ProgressBoard(str(tmp_path), title=False)
    worker = board.start("a", "a", "s")
    release = threading.Event()

    def slow() -> int:
        release.wait(5)
        return 400

    thread = worker.estimate_in_background(slow)
    worker.update(100)  # the transfer goes on meanwhile
    assert worker.percent() is None
    release.set()
    thread.join(5)
    assert worker.percent() == 25.0
    assert read_status(str(tmp_path))[0]["bytes_expected"] == 400
    worker.estimate_in_background(lambda: 1 // 0).join(5)  # a failing estimate changes nothing
    assert worker.bytes_expected == 400
    board.close()


def test_estimate_only_for_a_transfer_still_running_after_the_delay(tmp_path: Path) -> None:
    board = ProgressBoard(str(tmp_path), title=False)
    asked: list[str] = []
    quick = board.start("quick", "quick", "s")
    thread = quick.estimate_in_background(lambda: asked.append("quick") or 10, delay=5)
    board.finish("quick")  # ended before the delay: no rbd diff for it
    thread.join(5)
    assert not thread.is_alive() and asked == [] and quick.bytes_expected is None
    slow = board.start("slow", "slow", "s")
    slow.estimate_in_background(lambda: asked.append("slow") or 400, delay=0.05).join(5)
    assert asked == ["slow"] and slow.bytes_expected == 400
    board.close()


def test_process_title_and_thread_name(tmp_path: Path) -> None:
    # In a child process: the title is process-wide.
    code = f"""
import os, sys, threading
sys.path.insert(0, {str(Path(progress.__file__).parents[5])!r})
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import ProgressBoard, set_thread_name
board = ProgressBoard({str(tmp_path)!r})
w = board.start("web1", "web1", "s")
w.set_expected(1000)
w.update(370)
board._flush(w, force=True)
comm = open("/proc/self/comm").read().strip()
cmdline = open("/proc/self/cmdline", "rb").read()
tid = threading.get_native_id()
thread = open(f"/proc/self/task/{{tid}}/comm").read().strip()
board.close()
after = open("/proc/self/comm").read().strip()
import json
print(json.dumps([comm, cmdline.decode("latin-1"), board._title.mode, thread, after]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    comm, cmdline, mode, thread, after = json.loads(out)
    assert comm == "bk 37% web1"
    assert thread == comm  # the main thread is the worker here
    assert mode in ("buffer", "in-place")
    # "buffer" with CAP_SYS_RESOURCE; else "in-place": `python3 -c CODE` leaves room enough.
    assert cmdline.startswith("backurne transfer: web1 37% ")
    assert after != comm


def test_set_thread_name_in_a_worker_thread() -> None:
    names: list[str] = []

    def worker() -> None:
        set_thread_name("bk some-very-long-image-name")
        names.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert names == ["bk some-very-lo"]  # 15 bytes: the kernel's limit


def test_utf8_prefix_cuts_on_a_character_boundary() -> None:
    title = "bk 5% é€日本"  # 17 bytes: 15 falls inside "本"
    for limit in range(len(title.encode()) + 2):
        cut = progress.utf8_prefix(title, limit)
        assert len(cut) <= limit
        assert title.startswith(cut.decode("utf-8"))  # strict: raises on a cut character
        assert len(cut) > limit - 3  # never more than one character short
    assert progress.utf8_prefix(title, 15) == "bk 5% é€日".encode()
    assert progress.utf8_prefix("ascii", 3) == b"asc"


def test_titles_of_multibyte_image_names_stay_utf8(tmp_path: Path) -> None:
    # /proc/PID/stat and comm of a transfer process (and its worker thread) must decode as
    # UTF-8 whatever the image name: `ps`-like readers treat them as text.
    code = f"""
import json, sys, threading
sys.path.insert(0, {str(Path(progress.__file__).parents[5])!r})
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import ProgressBoard, set_thread_name
board = ProgressBoard({str(tmp_path)!r})
w = board.start("é€日本", "é€日本", "s")
w.set_expected(1000)
w.update(50)
board._flush(w, force=True)
raw = [open(path, "rb").read() for path in ("/proc/self/stat", "/proc/self/comm")]
def worker():
    set_thread_name("bk é€日本日本")
    raw.append(open(f"/proc/self/task/{{threading.get_native_id()}}/comm", "rb").read())
thread = threading.Thread(target=worker)
thread.start()
thread.join()
board.close()
print(json.dumps([item.decode("latin-1") for item in raw]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    stat, comm, thread = (item.encode("latin-1") for item in json.loads(out))
    stat.decode("utf-8")  # strict: the test fails on a cut character
    assert comm.decode("utf-8").strip() == "bk 5% é€日"
    assert thread.decode("utf-8").strip() == "bk é€日本"  # 14 bytes: the 15th would start "日"
