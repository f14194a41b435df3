# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The stream engine (module_utils/stream/engine.py) against `rbd export-diff | rbd import-diff`.

Equivalence: the same chain of snapshots (full, overwrite + zeroed ranges, resize grow, resize
shrink, an empty diff, a full of an image with several snapshots) is pulled twice from the live
cluster, once through the CLI pipeline and once through the engine, into two backup images;
every snapshot's checksum must equal live's on both, and both must hold the same snapshots.

Faults: the live-side engine process killed mid-stream (found by this test's tag on its command
line), data writes refused by the backup cluster (cephx caps), a truncated frame (the live side
writes half a frame and exits 0). The affected image fails with a clear message, the others
succeed, the data is checked by checksum, and the next run converges.

The transfers run under the nodes' /usr/bin/python3 (engine_driver.py): the engine's backup half
uses python3-rbd in process, which the test venv lacks (as test_rados_direct.py does).
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import POOL, REPO, Lab, diff_stream
from test_faults_transfer import backup_refuses_data_writes

NODE_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("engine_driver.py")
MiB = 1 << 20
S = [f"backup;daily;7;2026-12-0{day}T10:00:00" for day in range(1, 7)]


def run_driver(lab: Lab, engine: str, steps: list[dict[str, Any]], tag: str | None = None, **extra: Any) -> list[dict]:
    job = {
        "ssh": {
            "host": lab.live_ip,
            "port": lab.port,
            "identity_file": str(lab.ssh_key),
            "known_hosts_file": str(lab.known_hosts),
            "control_dir": str(lab.lab_dir / "cp-engine-tests"),
        },
        "live": {"ceph_client": "backurne", "keyring": str(lab.keyring("live")), "ceph_conf": str(lab.live_conf)},
        "backup": {"ceph_client": "backurne", "keyring": str(lab.keyring("backup")), "ceph_conf": str(lab.backup_conf)},
        "engine": engine,
        "pool": POOL,
        "steps": steps,
        **extra,
    }
    env = dict(os.environ, PYTHONPATH=str(REPO / "collections"))
    if tag:
        env["BACKURNE_STREAM_ENGINE_TAG"] = tag
    cp = subprocess.run(
        [NODE_PYTHON, str(DRIVER)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def step(ns: str, image: str, dest: str, snap: str, base: str | None) -> dict[str, Any]:
    return {"src_ns": ns, "image": image, "snap": snap, "base": base, "dst_ns": ns, "dest": dest}


def spec(ns: str, image: str, snap: str | None = None) -> str:
    return f"{POOL}/{ns}/{image}" + (f"@{snap}" if snap else "")


def snap_names(lab: Lab, cluster: str, ns: str, image: str) -> list[str]:
    return [entry["name"] for entry in lab.rbd_json(cluster, "snap", "ls", spec(ns, image), admin=True)]


def image_names(lab: Lab, cluster: str, ns: str) -> list[str]:
    return list(lab.rbd_json(cluster, "ls", "--pool", POOL, "--namespace", ns, admin=True) or [])


def zero_ranges(lab: Lab, ns: str, image: str, ranges: list[tuple[int, int]]) -> None:
    """Zero (discard) ranges of a live image: an import-diff of `z` records."""
    size = int(lab.rbd_json("live", "info", spec(ns, image), admin=True)["size"])
    body = diff_stream([], size=size)[:-1]  # without its end record
    body += b"".join(b"z" + struct.pack("<QQ", offset, length) for offset, length in ranges) + b"e"
    lab.rbd("live", "import-diff", "--no-progress", "-", spec(ns, image), admin=True, input=body)


def write_at(lab: Lab, ns: str, image: str, offset: int, data: bytes) -> None:
    size = int(lab.rbd_json("live", "info", spec(ns, image), admin=True)["size"])
    lab.rbd(
        "live",
        "import-diff",
        "--no-progress",
        "-",
        spec(ns, image),
        admin=True,
        input=diff_stream([(offset, data)], size=size),
    )


def snap(lab: Lab, ns: str, image: str, name: str) -> None:
    lab.rbd("live", "snap", "create", "--no-progress", spec(ns, image, name), admin=True)


def assert_ok(results: list[dict], engine: str) -> None:
    for result in results:
        assert result["ok"], result
        assert result["engine"] == engine, result


def test_engine_equals_export_import_diff(lab: Lab, ns: str) -> None:
    rng = random.Random(17)
    lab.write_image("live", spec(ns, "img"), 16, seed=3)
    snap(lab, ns, "img", S[0])
    # s1 -> s2: scattered overwrites, zeroed ranges (one whole object, one inside an object), and
    # a block of written zeros (import-diff turns it into write-zeroes)
    lab.overwrite("live", spec(ns, "img"), 0.05, seed=4)
    zero_ranges(lab, ns, "img", [(4 * MiB, 4 * MiB), (9 * MiB + 4096, 300 * 1024)])
    write_at(lab, ns, "img", 12 * MiB, bytes(256 * 1024) + rng.randbytes(8192))
    snap(lab, ns, "img", S[1])
    # s2 -> s3: grow to 24 MiB, data in the new part
    lab.rbd("live", "resize", "--no-progress", "--size", "24M", spec(ns, "img"), admin=True)
    write_at(lab, ns, "img", 20 * MiB, rng.randbytes(64 * 1024))
    snap(lab, ns, "img", S[2])
    # s3 -> s4: shrink to 10 MiB (cuts inside an object), one write
    lab.rbd("live", "resize", "--no-progress", "--allow-shrink", "--size", "10M", spec(ns, "img"), admin=True)
    write_at(lab, ns, "img", 1 * MiB, rng.randbytes(4096))
    snap(lab, ns, "img", S[3])
    # s4 -> s5: nothing changed (an empty diff)
    snap(lab, ns, "img", S[4])

    chain = [step(ns, "img", "{dest}", S[0], None)] + [step(ns, "img", "{dest}", S[i], S[i - 1]) for i in range(1, 5)]
    for engine, dest in (("cli", "via-cli"), ("librbd", "via-engine")):
        steps = [{**item, "dest": dest} for item in chain]
        assert_ok(run_driver(lab, engine, steps), engine)
    # A full of an image with several snapshots (its newest) and of an older one.
    for engine, dest_prefix in (("cli", "full-cli"), ("librbd", "full-engine")):
        steps = [step(ns, "img", f"{dest_prefix}-new", S[4], None), step(ns, "img", f"{dest_prefix}-old", S[1], None)]
        assert_ok(run_driver(lab, engine, steps), engine)

    assert snap_names(lab, "backup", ns, "via-cli") == S[:5]
    assert snap_names(lab, "backup", ns, "via-engine") == S[:5]
    for name in S[:5]:
        live_sum = lab.checksum("live", spec(ns, "img", name), admin=True)
        assert lab.checksum("backup", spec(ns, "via-cli", name), admin=True) == live_sum, name
        assert lab.checksum("backup", spec(ns, "via-engine", name), admin=True) == live_sum, name
    for suffix, name in (("new", S[4]), ("old", S[1])):
        assert snap_names(lab, "backup", ns, f"full-cli-{suffix}") == [name]
        assert snap_names(lab, "backup", ns, f"full-engine-{suffix}") == [name]
        live_sum = lab.checksum("live", spec(ns, "img", name), admin=True)
        assert lab.checksum("backup", spec(ns, f"full-engine-{suffix}", name), admin=True) == live_sum
        assert lab.checksum("backup", spec(ns, f"full-cli-{suffix}", name), admin=True) == live_sum
    # HEAD sizes follow the last diff the same way (shrunk to 10 MiB).
    sizes = {d: lab.rbd_json("backup", "info", spec(ns, d), admin=True)["size"] for d in ("via-cli", "via-engine")}
    assert sizes == {"via-cli": 10 * MiB, "via-engine": 10 * MiB}


def test_engine_refuses_what_import_diff_refuses(lab: Lab, ns: str) -> None:
    """A missing from-snapshot on the destination and an end snapshot already there fail, and
    nothing is written (so `auto` hands the image to the CLI, which refuses it the same way)."""
    lab.write_image("live", spec(ns, "img"), 4, seed=5)
    snap(lab, ns, "img", S[0])
    snap(lab, ns, "img", S[1])
    assert_ok(run_driver(lab, "librbd", [step(ns, "img", "dst", S[0], None)]), "librbd")
    before = lab.checksum("backup", spec(ns, "dst", S[0]), admin=True)
    # from-snapshot S[2] does not exist (on live either): nothing written, the image fails
    (missing,) = run_driver(lab, "librbd", [step(ns, "img", "dst", S[1], S[2])])
    assert not missing["ok"] and missing["failed_stage"] == "prepare", missing
    assert "stream engine unavailable" in missing["error"] and S[2] in missing["error"], missing
    # end snapshot already on the destination: refused before any write
    (again,) = run_driver(lab, "librbd", [step(ns, "img", "dst", S[0], None)])
    assert not again["ok"] and "already exists" in again["error"], again
    assert snap_names(lab, "backup", ns, "dst") == [S[0]]
    assert lab.checksum("backup", spec(ns, "dst", S[0]), admin=True) == before


def _engine_pids(tag: str) -> list[int]:
    """The live-side engine processes of THIS test: python3 with the tag as its own argument."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == NODE_PYTHON.encode() and b"backurne-stream-engine" in argv and tag.encode() in argv:
            found.append(int(entry.name))
    return found


def _kill_when_written(lab: Lab, ns: str, dest: str, tag: str, killed: list[int]) -> None:
    """SIGKILL this test's live engine once DEST was resized from its placeholder (data flowing)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            size = int(lab.rbd_json("backup", "info", spec(ns, dest), admin=True)["size"])
        except Exception:
            size = 0
        if size > MiB:
            for pid in _engine_pids(tag):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return
        time.sleep(0.05)


def test_live_engine_killed_mid_stream(lab: Lab, ns: str) -> None:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    lab.write_image("live", spec(ns, "big"), 160, seed=6)
    lab.write_image("live", spec(ns, "small"), 2, seed=7)
    snap(lab, ns, "big", S[0])
    snap(lab, ns, "small", S[0])
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_written, args=(lab, ns, "big-b", tag, killed), daemon=True)
    killer.start()
    steps = [step(ns, "big", "big-b", S[0], None), step(ns, "small", "small-b", S[0], None)]
    big, small = run_driver(lab, "auto", steps, tag=tag, compress=False)
    killer.join(5)
    assert killed, "the live-side engine was not found to kill"
    assert not big["ok"] and big["failed_stage"] == "export" and big["engine"] == "librbd", big
    assert "live-side engine's stream ended" in big["error"], big
    # The failed full removed its placeholder: no half-written image that looks like a backup.
    assert "big-b" not in image_names(lab, "backup", ns)
    assert small["ok"] and small["engine"] == "librbd", small
    assert lab.checksum("backup", spec(ns, "small-b", S[0]), admin=True) == lab.checksum(
        "live", spec(ns, "small", S[0]), admin=True
    )
    # The next run converges.
    (again,) = run_driver(lab, "auto", [steps[0]], tag=tag, compress=False)
    assert again["ok"] and again["engine"] == "librbd", again
    assert snap_names(lab, "backup", ns, "big-b") == [S[0]]
    assert lab.checksum("backup", spec(ns, "big-b", S[0]), admin=True) == lab.checksum(
        "live", spec(ns, "big", S[0]), admin=True
    )


def test_truncated_frame_fails_that_image(lab: Lab, ns: str) -> None:
    lab.write_image("live", spec(ns, "a"), 6, seed=8)
    lab.write_image("live", spec(ns, "b"), 1, seed=9)
    snap(lab, ns, "a", S[0])
    snap(lab, ns, "b", S[0])
    # Frame 3: image a's stream is > 2 MiB (1 MiB frames), so data was written before the cut.
    steps = [step(ns, "a", "a-b", S[0], None), step(ns, "b", "b-b", S[0], None)]
    first, second = run_driver(lab, "auto", steps, compress=False, truncate_frame=3)
    assert not first["ok"] and first["failed_stage"] == "export", first
    assert "truncated" in first["error"], first
    assert "a-b" not in image_names(lab, "backup", ns)
    # b ran on a new channel of the same (patched) engine: its stream is two frames, all whole.
    assert second["ok"] and second["engine"] == "librbd", second
    assert lab.checksum("backup", spec(ns, "b-b", S[0]), admin=True) == lab.checksum(
        "live", spec(ns, "b", S[0]), admin=True
    )
    (again,) = run_driver(lab, "auto", [steps[0]])
    assert again["ok"], again
    assert lab.checksum("backup", spec(ns, "a-b", S[0]), admin=True) == lab.checksum(
        "live", spec(ns, "a", S[0]), admin=True
    )


def test_refused_writes_fail_only_the_image_that_writes(lab: Lab, ns: str) -> None:
    lab.write_image("live", spec(ns, "data"), 4, seed=10)
    lab.write_image("live", spec(ns, "same"), 4, seed=11)
    for image in ("data", "same"):
        snap(lab, ns, image, S[0])
    assert_ok(run_driver(lab, "librbd", [step(ns, i, f"{i}-b", S[0], None) for i in ("data", "same")]), "librbd")
    lab.overwrite("live", spec(ns, "data"), 0.1, seed=12)
    for image in ("data", "same"):
        snap(lab, ns, image, S[1])
    before = lab.checksum("backup", spec(ns, "data-b"), admin=True)
    steps = [step(ns, "data", "data-b", S[1], S[0]), step(ns, "same", "same-b", S[1], S[0])]
    with backup_refuses_data_writes(lab):
        data, same = run_driver(lab, "auto", steps)
    assert not data["ok"] and data["failed_stage"] == "import" and data["engine"] == "librbd", data
    assert "Operation not permitted" in data["error"], data
    assert snap_names(lab, "backup", ns, "data-b") == [S[0]]
    assert lab.checksum("backup", spec(ns, "data-b", S[0]), admin=True) == lab.checksum(
        "live", spec(ns, "data", S[0]), admin=True
    )
    # The empty diff writes no data object: header only (the snapshot), which the caps allow.
    assert same["ok"] and same["engine"] == "librbd", same
    assert snap_names(lab, "backup", ns, "same-b") == S[:2]
    # Caps back: the next run converges (the HEAD guard of the job is not in this driver; the
    # failed import wrote nothing the caps refused, so HEAD still equals S[0] here).
    assert lab.checksum("backup", spec(ns, "data-b"), admin=True) == before
    (again,) = run_driver(lab, "auto", [steps[0]])
    assert again["ok"], again
    assert lab.checksum("backup", spec(ns, "data-b", S[1]), admin=True) == lab.checksum(
        "live", spec(ns, "data", S[1]), admin=True
    )


def test_backup_playbook_through_the_engine(lab: Lab, ns: str, tmp_path: Path) -> None:
    """backup.yml with backurne_stream_engine=auto: the module ships the live half from its own
    payload (AnsiballZ) and both runs go through the engine, data equal by checksum."""
    from playbook_helpers import (
        T_TRANSFER,
        assert_ok,
        assert_same_data,
        backup_image,
        cluster_name,
        day,
        make_inventory,
        run_backup,
        snap_name,
    )

    lab.write_image("live", spec(ns, "disk"), 8, seed=13, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 7, "max_on_live": 1}})
    bimg = backup_image(cluster_name(inv), "disk")
    engine_vars = {"backurne_stream_engine": "auto"}
    first = assert_ok(run_backup(inv, tmp_path, now=day(0), extra_vars=engine_vars))
    sent = first.image(T_TRANSFER, "disk")
    assert (sent["status"], sent["kind"], sent["engine"]) == ("transferred", "full", "librbd"), sent
    lab.overwrite("live", spec(ns, "disk"), 0.1, seed=14, admin=True)
    second = assert_ok(run_backup(inv, tmp_path, now=day(1), extra_vars=engine_vars))
    sent = second.image(T_TRANSFER, "disk")
    assert (sent["status"], sent["kind"], sent["engine"]) == ("transferred", "incremental", "librbd"), sent
    assert "note" not in sent or "CLI pipeline instead" not in sent["note"], sent
    assert_same_data(lab, ns, "disk", bimg, [snap_name("daily", 7, day(0)), snap_name("daily", 7, day(1))])
