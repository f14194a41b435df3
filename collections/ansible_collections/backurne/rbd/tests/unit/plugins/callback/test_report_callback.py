# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from ansible.inventory.host import Host
from ansible.playbook.task import Task

from ansible_collections.backurne.rbd.plugins.callback.report import CallbackModule

try:  # what callbacks receive: ansible-core 2.19+
    from ansible.executor.task_result import CallbackTaskResult
except ImportError:  # 2.16-2.18 hand over the TaskResult itself (same arguments)
    from ansible.executor.task_result import TaskResult as CallbackTaskResult  # type: ignore[assignment]

RECORDS = [
    {
        "cluster": "prod",
        "image": "web",
        "backup_image": "prod;web;None",
        "profiles": ["daily"],
        "kind": "incremental",
        "status": "transferred",
        "snapshots": ["backup;daily;7;2026-11-29T10:00:00.000000"],
        "bytes_logical": 4096,
        "bytes_wire": 1024,
        "duration": 1.25,
        "verified": True,
        "expired_live": 1,
        "expired_backup": 0,
        "error": None,
        "note": None,
    },
    {
        "cluster": "prod",
        "image": 'db "main"',
        "backup_image": 'prod;db "main";None',
        "profiles": ["daily"],
        "kind": "full",
        "status": "failed",
        "snapshots": [],
        "bytes_logical": 0,
        "bytes_wire": 0,
        "duration": 0.5,
        "verified": None,
        "expired_live": 0,
        "expired_backup": 0,
        "error": "image 'db \"main\"': ssh failed",
        "note": None,
    },
]


class Display:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def banner(self, text: str) -> None:
        self.lines.append(f"== {text}")

    def display(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str) -> None:
        self.lines.append(f"WARNING {text}")


def task_result(return_data: dict[str, Any]) -> CallbackTaskResult:
    return CallbackTaskResult(Host("lab-backup"), Task(), return_data, {})


@pytest.fixture
def callback() -> CallbackModule:
    plugin = CallbackModule()
    plugin._display = Display()  # type: ignore[assignment]
    return plugin


def configure(plugin: CallbackModule, **options: Any) -> None:
    # The options as ansible's config manager hands them over once it has read DOCUMENTATION's
    # defaults, env and ini (the plugin is instantiated here without the plugin loader).
    plugin._plugin_options = {
        "show_table": True,
        "json_path": None,
        "prometheus_path": None,
        "syslog": False,
        "syslog_ident": "backurne",
        "syslog_facility": "user",
        **options,
    }


def test_writes_table_json_and_prometheus(callback: CallbackModule, tmp_path: Path) -> None:
    configure(callback, json_path=str(tmp_path / "r.json"), prometheus_path=str(tmp_path / "m.prom"))
    callback.v2_runner_on_ok(task_result({"changed": False}))  # unrelated task: ignored
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": RECORDS[:1]}}))
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": RECORDS}}))
    callback.v2_playbook_on_stats(None)

    lines = callback._display.lines  # type: ignore[attr-defined]
    assert lines[0] == "== BACKURNE REPORT"
    assert any(line.startswith("prod") and "web" in line and "incremental" in line for line in lines)
    assert "2 image(s): 1 transferred, 1 failed" in lines[-1]

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["transferred"] == 1 and report["summary"]["failed"] == 1
    assert [rec["image"] for rec in report["images"]] == ["web", 'db "main"']

    prom = (tmp_path / "m.prom").read_text().splitlines()
    assert 'backurne_image_transfer_bytes{cluster="prod",image="web",kind="wire"} 1024' in prom
    assert 'backurne_image_failed{cluster="prod",image="db \\"main\\""} 1' in prom
    success = [line for line in prom if line.startswith("backurne_image_last_success_timestamp_seconds{")]
    assert len(success) == 1 and 'image="web"' in success[0]
    assert "backurne_run_images_failed 1" in prom


def test_silent_without_records(callback: CallbackModule, tmp_path: Path) -> None:
    configure(callback, json_path=str(tmp_path / "r.json"))
    callback.v2_runner_on_ok(task_result({"changed": True}))
    callback.v2_playbook_on_stats(None)
    assert callback._display.lines == []  # type: ignore[attr-defined]
    assert not (tmp_path / "r.json").exists()


def test_a_run_with_no_image_still_reports(callback: CallbackModule, tmp_path: Path) -> None:
    configure(callback, json_path=str(tmp_path / "r.json"))
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": []}}))
    callback.v2_playbook_on_stats(None)
    assert "0 image(s): 0 transferred, 0 failed" in callback._display.lines[-1]  # type: ignore[attr-defined]
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["images"] == 0


def test_unwritable_path_warns_instead_of_failing(callback: CallbackModule, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    configure(callback, show_table=False, json_path=str(blocker / "sub" / "r.json"))
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": RECORDS}}))
    callback.v2_playbook_on_stats(None)
    assert any(line.startswith("WARNING backurne report: cannot write") for line in callback._display.lines)  # type: ignore[attr-defined]


def test_syslog_line_per_image(callback: CallbackModule, monkeypatch: pytest.MonkeyPatch) -> None:
    import syslog

    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(syslog, "openlog", lambda *args: sent.append(("open", *args)))
    monkeypatch.setattr(syslog, "syslog", lambda *args: sent.append(("log", *args)))
    monkeypatch.setattr(syslog, "closelog", lambda: sent.append(("close",)))
    configure(callback, show_table=False, syslog=True, syslog_ident="backurne", syslog_facility="local3")
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": RECORDS}}))
    callback.v2_playbook_on_stats(None)
    assert sent[0] == ("open", "backurne", syslog.LOG_PID, syslog.LOG_LOCAL3)
    assert sent[1] == (
        "log",
        syslog.LOG_INFO,
        "cluster=prod image=web status=transferred kind=incremental profiles=daily bytes_logical=4096 "
        "bytes_wire=1024 duration=1.250s verified=yes",
    )
    assert sent[2][:2] == ("log", syslog.LOG_ERR) and sent[2][2].endswith("error=image 'db \"main\"': ssh failed")
    assert sent[3] == ("close",) and len(sent) == 4


def test_syslog_is_off_by_default(callback: CallbackModule, monkeypatch: pytest.MonkeyPatch) -> None:
    import syslog

    monkeypatch.setattr(syslog, "syslog", lambda *args: pytest.fail("syslog used"))
    configure(callback, show_table=False, syslog=False)
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": RECORDS}}))
    callback.v2_playbook_on_stats(None)


def test_no_secret_reaches_table_json_prometheus_or_syslog(
    callback: CallbackModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syslog

    logged: list[str] = []
    monkeypatch.setattr(syslog, "syslog", lambda priority, line: logged.append(line))
    secrets = {"api_password": "hunter2-pve", "api_token_secret": "0b7e-token-secret", "key": "AQBsecretkey=="}
    configure(callback, json_path=str(tmp_path / "r.json"), prometheus_path=str(tmp_path / "m.prom"), syslog=True)
    # A task whose arguments hold secrets (the discovery), then records that (by a bug elsewhere)
    # carry them: in an error text, and in an extra field.
    task = Task()
    task.args = {"api_host": "pve1", **secrets, "live_ceph": {"key": "AQBsecretkey=="}}
    callback.v2_runner_on_ok(
        CallbackTaskResult(
            Host("lab-backup"), task, {"invocation": {"module_args": {"api_password": "hunter2-pve"}}}, {}
        )
    )
    leaky = dict(RECORDS[1], error="pve: login hunter2-pve refused (token 0b7e-token-secret)", api_password="x")
    leaky["image"] = "vm-AQBsecretkey=="
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": [RECORDS[0], leaky]}}))
    callback.v2_playbook_on_stats(None)

    outputs = {
        "table": "\n".join(callback._display.lines),  # type: ignore[attr-defined]
        "json": (tmp_path / "r.json").read_text(),
        "prometheus": (tmp_path / "m.prom").read_text(),
        "syslog": "\n".join(logged),
    }
    for name, text in outputs.items():
        for secret in secrets.values():
            assert secret not in text, f"{secret} in the {name}"
        assert "********" in text, name
    report = json.loads(outputs["json"])
    assert "api_password" not in report["images"][1]
    assert report["images"][1]["error"] == "pve: login ******** refused (token ********)"


class OldTaskResult:
    """A TaskResult as ansible-core 2.16-2.18 hands it over: the data only in ``_result``/``_task``
    (issue #14: ``'TaskResult' object has no attribute 'result'`` on 2.16)."""

    def __init__(self, return_data: dict[str, Any]) -> None:
        self._result = return_data
        self._task = Task()


def test_reads_results_of_older_ansible_core(callback: CallbackModule, tmp_path: Path) -> None:
    configure(callback, show_table=False, json_path=str(tmp_path / "r.json"))
    records = [*RECORDS, {**RECORDS[0], "image": "leak", "error": "login s3cr3t-pw refused"}]
    callback.v2_runner_on_ok(OldTaskResult({"ansible_facts": {"backurne_records": records}}))
    callback.v2_runner_on_failed(OldTaskResult({"invocation": {"module_args": {"password": "s3cr3t-pw"}}}))
    callback.v2_playbook_on_stats(None)
    text = (tmp_path / "r.json").read_text()
    assert [image["image"] for image in json.loads(text)["images"]] == [record["image"] for record in records]
    assert "s3cr3t-pw" not in text and "login ******** refused" in text


def test_prometheus_file_is_readable_by_other_users(callback: CallbackModule, tmp_path: Path) -> None:
    configure(callback, show_table=False, prometheus_path=str(tmp_path / "m.prom"))
    callback.v2_runner_on_ok(task_result({"ansible_facts": {"backurne_records": RECORDS}}))
    callback.v2_playbook_on_stats(None)
    assert stat.S_IMODE((tmp_path / "m.prom").stat().st_mode) == 0o644
