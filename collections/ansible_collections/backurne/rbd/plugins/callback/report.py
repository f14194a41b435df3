# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: report
type: aggregate
short_description: backurne's per-image backup report (table, JSON file, Prometheus textfile)
version_added: 0.1.0
description:
  - Collects the per-image records the backup playbook builds (the C(backurne_records) fact, see
    P(backurne.rbd.image_records#filter)) and, at the end of the run, prints a table and a summary
    line, and optionally writes a JSON report and a Prometheus textfile-collector file.
  - Makes no terminal assumptions (works under AWX). Prints no secret - records are cut down to
    their known fields (names, counts, times, errors), and every value of a secret-looking module
    argument (password, token secret, key...) seen during the run is masked in them. Keyrings are
    paths, their contents are never read.
requirements:
  - Enabled in C(callbacks_enabled) (ansible.cfg) or C(ANSIBLE_CALLBACKS_ENABLED).
options:
  show_table:
    description: Print the table and the summary line at the end of the run.
    type: bool
    default: true
    env:
      - name: BACKURNE_REPORT_SHOW_TABLE
    ini:
      - section: callback_backurne_report
        key: show_table
  json_path:
    description: Write the records and a run summary as JSON to this file.
    type: path
    env:
      - name: BACKURNE_REPORT_JSON
    ini:
      - section: callback_backurne_report
        key: json_path
  prometheus_path:
    description:
      - Write metrics in the Prometheus text format to this file (atomically), for node_exporter's
        textfile collector.
    type: path
    env:
      - name: BACKURNE_REPORT_PROMETHEUS
    ini:
      - section: callback_backurne_report
        key: prometheus_path
  syslog:
    description:
      - Also send one line per image to syslog (backurne 2.x's C(report_time)), at priority
        C(info), or C(err) for a failed image.
    type: bool
    default: false
    env:
      - name: BACKURNE_REPORT_SYSLOG
    ini:
      - section: callback_backurne_report
        key: syslog
  syslog_ident:
    description: The syslog identifier (program name) of those lines.
    type: str
    default: backurne
    env:
      - name: BACKURNE_REPORT_SYSLOG_IDENT
    ini:
      - section: callback_backurne_report
        key: syslog_ident
  syslog_facility:
    description: The syslog facility, such as C(user), C(daemon) or C(local0).
    type: str
    default: user
    env:
      - name: BACKURNE_REPORT_SYSLOG_FACILITY
    ini:
      - section: callback_backurne_report
        key: syslog_facility
"""

EXAMPLES = r"""
# ansible.cfg: the table at the end of every backup.yml run, the JSON report and the Prometheus
# textfile on the controller (cron/systemd runs; under AWX the controller is a throw-away
# container: use the backup node's textfile, variable backurne_prometheus_file, and the
# set_stats artifacts instead, see docs/awx.md).
#
# [defaults]
# callbacks_enabled = backurne.rbd.report
#
# [callback_backurne_report]
# json_path = /var/log/backurne/last-run.json
# prometheus_path = /var/lib/prometheus/node-exporter/backurne-controller.prom
# syslog = true
# syslog_facility = local0

# The same for one run, with environment variables:
#   ANSIBLE_CALLBACKS_ENABLED=backurne.rbd.report \
#   BACKURNE_REPORT_JSON=/tmp/backurne.json \
#   ansible-playbook -i inventory playbooks/backup.yml
"""

import json
import os
import syslog
import tempfile
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

from ansible_collections.backurne.rbd.plugins.module_utils.report.records import (
    prometheus_lines,
    report_lines,
    run_summary,
    sanitize_record,
    secret_values,
    syslog_line,
)


def _result_of(result: Any) -> dict[str, Any]:
    """The task's result dict, on every supported ansible-core: ``TaskResult.result`` is public
    from 2.19 on; before (2.16-2.18) it is only ``_result`` (issue #14: AttributeError on 2.16)."""
    value = getattr(result, "result", None)
    if value is None:
        value = getattr(result, "_result", None)
    return value if isinstance(value, dict) else {}


def _task_of(result: Any) -> Any:
    """The task of a result: ``task`` from 2.19 on, ``_task`` before."""
    task = getattr(result, "task", None)
    return task if task is not None else getattr(result, "_task", None)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "backurne.rbd.report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._records: list[dict[str, Any]] | None = None  # None: not a backup run
        self._secrets: set[str] = set()
        self._started = time.time()

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._started = time.time()

    def _note_secrets(self, result: Any) -> None:
        # Values of secret-looking arguments, as the task had them and as the module saw them
        # (no_log ones are already censored there): masked wherever they would appear.
        task = _task_of(result)
        self._secrets |= secret_values(getattr(task, "args", None) or {})
        self._secrets |= secret_values((_result_of(result).get("invocation") or {}).get("module_args") or {})

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._note_secrets(result)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._note_secrets(result)
        # The playbook accumulates the records in one fact: the latest value holds them all.
        facts = _result_of(result).get("ansible_facts") or {}
        records = facts.get("backurne_records")
        if isinstance(records, list):
            self._records = [dict(record) for record in records if isinstance(record, dict)]

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if self._records is None:
            return
        self._records = [sanitize_record(record, self._secrets) for record in self._records]
        finished = time.time()
        summary = run_summary(self._records, self._started, finished)
        if self.get_option("show_table"):
            self._display.banner("BACKURNE REPORT")
            for line in report_lines(self._records):
                self._display.display(line)
        if self.get_option("json_path"):
            document = {"summary": summary, "images": self._records}
            self._write(self.get_option("json_path"), json.dumps(document, indent=2, sort_keys=True) + "\n")
        if self.get_option("prometheus_path"):
            self._write(self.get_option("prometheus_path"), "\n".join(prometheus_lines(self._records, summary)) + "\n")
        if self.get_option("syslog"):
            self._syslog()

    def _syslog(self) -> None:
        name = str(self.get_option("syslog_facility") or "user").upper()
        facility = getattr(syslog, f"LOG_{name}", None)
        if not isinstance(facility, int):
            self._display.warning(f"backurne report: unknown syslog facility {name.lower()!r}, using user")
            facility = syslog.LOG_USER
        syslog.openlog(str(self.get_option("syslog_ident") or "backurne"), syslog.LOG_PID, facility)
        try:
            for record in self._records or []:
                priority = syslog.LOG_ERR if record["status"] == "failed" else syslog.LOG_INFO
                syslog.syslog(priority, syslog_line(record))
        finally:
            syslog.closelog()

    def _write(self, path: str, text: str) -> None:
        # Atomic replace: a textfile collector must never read a half-written file.
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=directory, prefix=".backurne-report-")
            # mkstemp makes it 0600; node_exporter runs as its own user and must read it.
            os.fchmod(handle, 0o644)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            self._display.warning(f"backurne report: cannot write {path}: {exc}")
