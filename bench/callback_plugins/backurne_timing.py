"""A timing callback for the benchmarks: when each play, task and result happened.

Enabled by bench/fixedcost.py (ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins,
ANSIBLE_CALLBACKS_ENABLED=...,backurne_timing); writes one JSON document to
$BACKURNE_TIMING_OUT at the end of the run. Wall-clock times (time.time()), so that the caller
can place the process start before the first event. Not part of the product.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "backurne_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[dict[str, Any]] = []

    def _event(self, kind: str, name: str = "", host: str = "", **extra: Any) -> None:
        self.events.append({"t": time.time(), "kind": kind, "name": name, "host": host, **extra})

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._event("playbook")

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._event("play", play.get_name())

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._event("task", task.get_name())

    def v2_playbook_on_include(self, included_file: Any) -> None:
        self._event("include", str(included_file._filename))

    def _result(self, status: str, result: Any) -> None:
        data = result._result or {}
        images = data.get("images")
        statuses: dict[str, int] = {}
        if isinstance(images, list):
            for item in images:
                if isinstance(item, dict):
                    key = str(item.get("status", "none"))
                    statuses[key] = statuses.get(key, 0) + 1
        self._event(
            "result",
            result._task.get_name(),
            result._host.get_name(),
            status=status,
            changed=bool(data.get("changed")),
            statuses=statuses,
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._event("stats")
        path = os.environ.get("BACKURNE_TIMING_OUT")
        if path:
            with open(path, "w", encoding="utf-8") as out:
                json.dump({"events": self.events}, out)
