# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ansible_collections.backurne.rbd.plugins.modules import capacity

DUMP = {
    "flags": "sortbitwise",
    "pools": [{"pool_name": "rbd", "flags_names": "hashpspool,full,full_quota", "quota_max_bytes": 1048576}],
    "osds": [{"osd": 0, "in": 1, "state": ["exists", "nearfull", "up"]}],
}
QUOTA = {"quota_max_objects": 0, "current_num_objects": 3, "quota_max_bytes": 1048576, "current_num_bytes": 4194304}


@pytest.fixture
def fake_ceph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "ceph"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"print({json.dumps(json.dumps(DUMP))} if 'dump' in sys.argv else {json.dumps(json.dumps(QUOTA))})\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("BACKURNE_RADOS_IN_PROCESS", "0")
    return tmp_path


def test_over_quota_fails_naming_pool_and_quota(run_module, fake_ceph: Path) -> None:
    result = run_module(capacity.main, {"pool": "rbd"})
    assert result["failed"] is True
    assert "pool rbd is over its quota (max_bytes 1048576 (1.0 MiB), used 4194304 (4.0 MiB))" in result["msg"]
    assert result["state"]["nearfull_osds"] == [0]
    assert result["capacity_warnings"] == ["OSD(s) osd.0 of the backup cluster are nearfull"]


def test_expiry_only_run_is_warned(run_module, fake_ceph: Path) -> None:
    result = run_module(capacity.main, {"pool": "rbd", "writes": False})
    assert not result.get("failed")
    assert any("over its quota" in warning for warning in result["capacity_warnings"])


def test_missing_keyring_is_named_before_any_command(run_module, fake_ceph: Path) -> None:
    missing = str(fake_ceph / "no.keyring")
    result = run_module(capacity.main, {"pool": "rbd", "keyring": missing})
    assert result["failed"] is True
    assert result["msg"] == f"backup cluster: keyring {missing} (option keyring of the backup node) does not exist"
