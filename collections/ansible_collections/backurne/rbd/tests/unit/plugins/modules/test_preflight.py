# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import time

from ansible_collections.backurne.rbd.plugins.modules import preflight


def test_preflight_returns_normalised_config(run_module) -> None:
    result = run_module(
        preflight.main,
        {
            "profiles": {"hourly": {"count": 24, "priority": "high"}},
            "live_clusters": {"n1": {"name": "prod"}},
            "backup_nodes": ["b1"],
            "backup": {"pool": "backups"},
        },
    )
    assert not result.get("failed")
    assert result["changed"] is False
    assert result["profiles"]["hourly"]["interval"] == 3600
    assert result["live_clusters"][0]["name"] == "prod"


def test_preflight_fails_naming_the_profile_key(run_module) -> None:
    result = run_module(
        preflight.main,
        {"profiles": {"daily": {"cuont": 3}}, "live_clusters": {"n1": {}}, "backup_nodes": ["b1"]},
    )
    assert result["failed"] is True
    assert "daily" in result["msg"] and "cuont" in result["msg"]


BASE = {"profiles": {"daily": {"count": 3}}, "live_clusters": {"n1": {}}, "backup_nodes": ["b1"]}


def test_preflight_normalises_now(run_module) -> None:
    result = run_module(preflight.main, {**BASE, "now": "2026-01-31T12:00:00+01:00"})
    assert not result.get("failed")
    assert result["now"] == "2026-01-31T11:00:00"
    assert run_module(preflight.main, BASE)["now"] is None


def test_preflight_fails_naming_backurne_now(run_module) -> None:
    result = run_module(preflight.main, {**BASE, "now": "yesterday-ish"})
    assert result["failed"] is True
    assert "backurne_now" in result["msg"] and "'yesterday-ish'" in result["msg"]
    assert "Invalid isoformat" not in result["msg"]


def test_preflight_returns_when_the_run_started(run_module) -> None:
    # The report's duration counts from here (backup.yml has no set_fact of its own for it).
    before = time.time()
    result = run_module(preflight.main, BASE)
    after = time.time()
    assert not result.get("failed")
    assert before <= result["started"] <= after
