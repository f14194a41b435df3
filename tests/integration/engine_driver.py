# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs transfers through the product's transfer_snapshot() under the nodes' /usr/bin/python3.

The test venv has no python3-rbd; the stream engine's backup half needs it in process, as the
transfer module has it on a backup node. Reads one JSON job on stdin, prints one JSON list of
results (TransferResult.to_dict()) on stdout. Used by test_stream_engine.py and bench/engine.py.
"""

from __future__ import annotations

import json
import sys

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import CephAccess, RbdRunner, SshTarget
from ansible_collections.backurne.rbd.plugins.module_utils.stream import engine as engine_module
from ansible_collections.backurne.rbd.plugins.module_utils.stream.engine import StreamEngine
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, transfer_snapshot

# A fault for the tests: the live-side engine writes the K-th data frame only half, then exits 0
# (a truncated frame, and an exit status that says nothing went wrong). Inserted into the shipped
# source before its main() runs; the real engine otherwise.
TRUNCATE_FRAME = b"""
_real_write_frame = write_frame
_data_frames = [0]


def write_frame(out, kind, request_id, payload):
    if kind in (b"D", b"Z"):
        _data_frames[0] += 1
        if _data_frames[0] == FRAME_NUMBER:
            out.write(FRAME.pack(kind, request_id, len(payload)))
            out.write(payload[: len(payload) // 2])
            out.flush()
            import os
            os._exit(0)
    _real_write_frame(out, kind, request_id, payload)


"""


def truncating_source(frame_number: int) -> bytes:
    source = engine_module.engine_source()
    patch = TRUNCATE_FRAME.replace(b"FRAME_NUMBER", str(frame_number).encode())
    guard = b'if __name__ == "__main__":'
    assert source.count(guard) == 1
    return source.replace(guard, patch + guard)


def main() -> None:
    job = json.load(sys.stdin)
    if job.get("truncate_frame"):
        source = truncating_source(int(job["truncate_frame"]))
        engine_module.engine_source = lambda: source
    ssh = SshTarget(**job["ssh"])
    live = RbdRunner(CephAccess(**job["live"]), ssh, label="live node")
    backup = RbdRunner(CephAccess(**job["backup"]), label="backup node (local)")
    compression = Compression(bool(job.get("compress", True)))
    stall = job.get("stall_timeout", 300)
    mode = job.get("engine", "cli")
    engine = StreamEngine(live, backup, compression.enabled, stall) if mode != "cli" else None
    results = []
    try:
        for step in job["steps"]:
            result = transfer_snapshot(
                live,
                backup,
                job["pool"],
                step["src_ns"],
                step["image"],
                step["snap"],
                step.get("base"),
                job["pool"],
                step["dst_ns"],
                step["dest"],
                compression,
                stall_timeout=stall,
                lock_ttl=None,
                engine=engine,
                engine_fallback=mode == "auto",
            )
            results.append(result.to_dict())
    finally:
        if engine is not None:
            engine.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
