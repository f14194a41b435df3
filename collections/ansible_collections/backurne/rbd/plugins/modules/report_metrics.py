#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: report_metrics
short_description: The run's per-image report and Prometheus textfile, on the backup node
version_added: 0.1.0
description:
  - Runs on the backup node that keeps the history (C(backup_nodes[0]) in the playbooks). Takes
    the run's per-image records (the C(backurne_records) fact, see
    P(backurne.rbd.image_records#filter)), adds each image's last success and returns them with
    a run summary, for C(ansible.builtin.set_stats) (AWX artifacts).
  - With O(prometheus_file), also writes them in the Prometheus text format for node_exporter's
    textfile collector, atomically (a temporary file in the same directory, renamed over the
    old one) and readable by node_exporter's own user (O(mode)).
  - Every image gets a C(backurne_image_last_success_timestamp_seconds) sample - a failed one
    too, with its last success from C(history.sqlite) in O(state_dir) (recorded there by
    M(backurne.rbd.transfer)), or 0 when it never succeeded - so that a "time since the last
    success" alert fires instead of going absent.
  - Not a member of the action group C(backurne.rbd.all) (it talks to no Ceph cluster).
author:
  - backurne developers (@backurne)
attributes:
  check_mode:
    support: full
    description: Returns the report; writes no file.
  diff_mode:
    support: none
    description: The textfile changes on every run (times); there is nothing useful to diff.
options:
  records:
    description:
      - The run's per-image records (C(backurne_records)); only their known fields are kept.
    type: list
    elements: dict
    required: true
  prometheus_file:
    description:
      - The textfile to write, an absolute C(*.prom) path in node_exporter's
        C(--collector.textfile.directory), which must exist. Unset, no file is written.
    type: path
  mode:
    description: The textfile's mode, as an octal string.
    type: str
    default: "0644"
  state_dir:
    description:
      - Directory of backurne's state on this node, where C(history.sqlite) is read (never
        created). Default C($BACKURNE_STATE_DIR), else C(/var/lib/backurne).
    type: path
  started:
    description: When the run started (epoch seconds), for the summary's duration. Default now.
    type: float
"""

EXAMPLES = r"""
- name: Report the run (AWX artifacts) and write the Prometheus textfile
  backurne.rbd.report_metrics:
    records: "{{ backurne_records | default([]) }}"
    prometheus_file: /var/lib/prometheus/node-exporter/backurne.prom
  register: backurne_report

- name: Publish the results as AWX artifacts
  ansible.builtin.set_stats:
    data:
      backurne_summary: "{{ backurne_report.summary }}"
      backurne_images: "{{ backurne_report.images }}"
    per_host: false
    aggregate: false
"""

RETURN = r"""
images:
  description: The records (known fields only), each with C(last_success).
  returned: always, also when the textfile could not be written
  type: list
  elements: dict
  contains:
    last_success:
      description:
        - Epoch seconds of the image's last success - this run's end when it succeeded now
          (transferred or up to date), else its last successful transfer in the history; 0 for
          never.
      type: float
  sample:
    - {cluster: prod1, image: web1, backup_image: "prod1;web1;None", status: failed, last_success: 1764700000.0}
summary:
  description:
    - Counts of the run (C(images), C(transferred), C(failed), C(deferred) (the backup window
      ended before their transfer started, not failed), C(skipped), C(bytes_logical),
      C(bytes_wire), C(started), C(finished), C(duration)), C(failed_images) (their
      C(POOL/IMAGE) names) and C(ok) (no image failed).
  returned: always, also when the textfile could not be written
  type: dict
  sample: {images: 2, transferred: 1, failed: 1, skipped: 0, failed_images: [rbd/web1], ok: false}
prometheus_file:
  description: The textfile written (or that check mode would write); null when none.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/backurne.prom
"""

import time

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import ModuleFailure, create_module
from ansible_collections.backurne.rbd.plugins.module_utils.report.metrics import (
    MetricsError,
    check_textfile_path,
    report,
    textfile,
    write_textfile,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.progress import state_dir


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError as exc:
        raise ModuleFailure(f"report_metrics: mode {text!r}: not an octal number") from exc
    if not 0 <= mode <= 0o777:
        raise ModuleFailure(f"report_metrics: mode {text!r}: not a file mode")
    return mode


def main() -> None:
    module = create_module(
        "report_metrics",
        {
            "records": {"type": "list", "elements": "dict", "required": True},
            "prometheus_file": {"type": "path"},
            "mode": {"type": "str", "default": "0644"},
            "state_dir": {"type": "path"},
            "started": {"type": "float"},
        },
        groups=(),
    )
    p = module.params

    def job() -> dict:
        mode = _mode(p["mode"])
        finished = time.time()
        path = p["prometheus_file"]
        try:
            if path:
                check_textfile_path(path)  # bad input fails before anything is read or written
            images, summary = report(p["records"], state_dir(p["state_dir"]), p["started"] or finished, finished)
        except MetricsError as exc:
            raise ModuleFailure(f"report_metrics: {exc}") from exc
        result = {"images": images, "summary": summary, "prometheus_file": path}
        if path and not module.check_mode:
            try:
                write_textfile(path, textfile(images, summary), mode)
            except MetricsError as exc:
                # The report itself is good: it goes with the failure, for the artifacts.
                raise ModuleFailure(f"report_metrics: {exc}", changed=False, **result) from exc
        return {"changed": bool(path), **result}

    module.run(job)


if __name__ == "__main__":
    main()
