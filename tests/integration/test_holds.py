"""Holds on the real lab: backup-side retention (backup.yml with ``backurne_now`` far ahead)
keeps a held snapshot, and removes it once released; a hold past its ``until`` counts as
released. Holds are set with playbooks/hold.yml (``backurne_holds``) and released with the CLI
(``backurne release``), and both read what the other wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playbook_helpers import (
    REPO,
    T_RETENTION_BACKUP,
    assert_ok,
    backup_image,
    cluster_name,
    day,
    make_inventory,
    run_backup,
    run_playbook,
    snap_name,
    snaps,
    spec,
)

from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import hold_key

HOLD_PLAYBOOK = REPO / "playbooks" / "hold.yml"


def _cli(tmp_path: Path, ns: str, *args: str) -> dict[str, Any]:
    config = tmp_path / "backurne.yml"
    if not config.exists():
        text = subprocess.run(
            ["bash", str(REPO / "scripts" / "lab-cli-config.sh"), ns], check=True, capture_output=True, text=True
        ).stdout
        config.write_text(text.split("\n", 1)[1])
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    done = subprocess.run(
        [sys.executable, "-m", "backurne_cli.main", "--config", str(config), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _meta(lab: Any, ns: str, image: str) -> dict[str, str]:
    return lab.rbd_json("backup", "image-meta", "list", "--pool=rbd", f"--namespace={ns}", f"--image={image}") or {}


def test_retention_keeps_a_held_snapshot_until_released(lab: Any, ns: str, tmp_path: Path) -> None:
    img = "held"
    lab.write_image("live", spec(ns, img), 8, seed=81, admin=True)
    inv = make_inventory(lab, ns, profiles={"daily": {"count": 1}})
    bimg = backup_image(cluster_name(inv), img)
    assert_ok(run_backup(inv, tmp_path, now=day(0)))
    s0 = snap_name("daily", 1, day(0))
    assert snaps(lab, "backup", ns, bimg) == [s0]

    # pin s0 with the playbook variable
    run = run_playbook(
        HOLD_PLAYBOOK,
        inv,
        tmp_path,
        {"backurne_holds": [{"image": bimg, "snapshot": "latest", "reason": "INC-4711"}], "backurne_hold_by": "audit"},
    )
    assert run.rc == 0, run.failure_text()
    [item] = run.result("Set or release the holds")["holds"]
    assert (item["snapshot"], item["action"], item["hold"]["reason"]) == (s0, "held", "INC-4711")
    stored = json.loads(_meta(lab, ns, bimg)[hold_key(s0)])
    assert (stored["reason"], stored["until"], stored["by"]) == ("INC-4711", None, "audit")

    # a month later: s0 is long expired, but held; s30 is the new backup
    later = day(30, minutes=1)
    s30 = snap_name("daily", 1, later)
    lab.overwrite("live", spec(ns, img), 0.05, seed=82, admin=True)
    run = assert_ok(run_backup(inv, tmp_path, now=later))
    assert snaps(lab, "backup", ns, bimg) == [s0, s30]
    assert snaps(lab, "live", ns, img) == [s30]  # the hold is the backup side's only
    assert bimg not in {i["image"] for i in run.result(T_RETENTION_BACKUP)["images"] if s0 in i["deleted"]}

    # the CLI sees the playbook's hold, pins s30 with an end, and releases s0
    listed = _cli(tmp_path, ns, "holds", bimg)
    assert [(h["snapshot"], h["reason"], h["active"]) for h in listed] == [(s0, "INC-4711", True)]
    until = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    pinned = _cli(tmp_path, ns, "hold", bimg, s30, "--reason", "short hold", "--until", until)
    assert (pinned["snapshot"], pinned["until"]) == (s30, until)
    released = _cli(tmp_path, ns, "release", bimg, s0)
    assert released["released"] is True and hold_key(s0) not in _meta(lab, ns, bimg)

    # far ahead (past s30's hold's end too): both go, the newest backup stays
    far = day(400, minutes=2)
    s400 = snap_name("daily", 1, far)
    lab.overwrite("live", spec(ns, img), 0.05, seed=83, admin=True)
    run = assert_ok(run_backup(inv, tmp_path, now=far))
    deleted = {i["image"]: i["deleted"] for i in run.result(T_RETENTION_BACKUP)["images"]}
    assert deleted == {bimg: [s0, s30]}, deleted
    assert snaps(lab, "backup", ns, bimg) == [s400]
