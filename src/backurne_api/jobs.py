# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Long operations (restores) run in a bounded thread pool; clients poll them by id.

A restore streams a whole disk and can take hours: an HTTP request cannot wait for it. POST
returns a job id at once; GET /jobs/{id} says queued / running / succeeded / failed, with the
result or the error message. Jobs live in memory: a restart of the service forgets them (the
restore itself is not resumable either; see docs/rest-api.md). Finished jobs beyond
``keep_finished`` are forgotten, oldest first, so a long-running service does not grow.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("backurne_api.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    state: str = QUEUED
    created: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    result: Any = None
    error: str | None = None
    submitted_by: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "result": self.result,
            "error": self.error,
            "submitted_by": self.submitted_by,
            "progress": dict(self.progress),
        }


class JobFailed(Exception):
    """A job that ran to its end but did not succeed: its message, and its result record."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


Progress = Callable[[dict[str, Any]], None]


class JobRunner:
    def __init__(self, workers: int = 2, keep_finished: int = 200) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backurne-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.keep_finished = keep_finished

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        work: Callable[[Progress], Any],
        *,
        submitted_by: str | None = None,
        describe_error: Callable[[BaseException], str] = str,
    ) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind, params=dict(params), submitted_by=submitted_by)
        with self._lock:
            self._jobs[job.id] = job
            self._prune()

        def progress(values: dict[str, Any]) -> None:
            with self._lock:
                job.progress.update(values)

        def run() -> None:
            with self._lock:
                job.state, job.started = RUNNING, _now()
            try:
                result = work(progress)
            except BaseException as exc:  # a job must end in a state, whatever happened
                message = describe_error(exc) or type(exc).__name__
                log.warning("job %s (%s) failed: %s", job.id, kind, message)
                with self._lock:
                    job.state, job.error, job.finished = FAILED, message, _now()
                    job.result = getattr(exc, "result", None)
                if not isinstance(exc, Exception):
                    raise
                return
            with self._lock:
                job.state, job.result, job.finished = SUCCEEDED, result, _now()
            log.info("job %s (%s) succeeded", job.id, kind)

        self._pool.submit(run)
        return job

    def _prune(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state in (SUCCEEDED, FAILED)]
        for job_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job_id]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.public() if job else None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.public() for job in self._jobs.values()]

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
