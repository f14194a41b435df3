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
  - Makes no terminal assumptions (works under AWX); prints no secret (records hold names and counts only).
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
"""

import json
import os
import tempfile
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

from ansible_collections.backurne.rbd.plugins.module_utils.report import prometheus_lines, report_lines, run_summary


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "backurne.rbd.report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._records: list[dict[str, Any]] | None = None  # None: not a backup run
        self._started = time.time()

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._started = time.time()

    def v2_runner_on_ok(self, result: Any) -> None:
        # The playbook accumulates the records in one fact: the latest value holds them all.
        facts = result.result.get("ansible_facts") or {}
        records = facts.get("backurne_records")
        if isinstance(records, list):
            self._records = [dict(record) for record in records if isinstance(record, dict)]

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if self._records is None:
            return
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

    def _write(self, path: str, text: str) -> None:
        # Atomic replace: a textfile collector must never read a half-written file.
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=directory, prefix=".backurne-report-")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            self._display.warning(f"backurne report: cannot write {path}: {exc}")
