# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The module factory: merged option groups, the shared validation (one message per option for
every module), and how a job's outcome becomes exit_json/fail_json."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from ansible.module_utils._internal import _traceback
from ansible.module_utils.testing import patch_module_args

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import (
    BackurneModule,
    ModuleFailure,
    SharedOptions,
    create_module,
)

Job = Callable[[BackurneModule], Mapping[str, Any]]


def _echo_params(module: BackurneModule) -> Mapping[str, Any]:
    return {"changed": False, "params": module.params, "shared": repr(module.shared)}


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., dict[str, Any]]:
    """Build module "t" with the factory from ``args``, run ``job`` on it; its JSON result."""

    def run_factory_module(
        args: dict[str, Any],
        own: Mapping[str, dict[str, Any]] | None = None,
        groups: Sequence[str] = ("ceph",),
        job: Job = _echo_params,
        **module_kwargs: Any,
    ) -> dict[str, Any]:
        with patch_module_args(args), pytest.raises(SystemExit):
            module = create_module("t", own or {}, groups=groups, **module_kwargs)
            module.run(lambda: job(module))
        return json.loads(capsys.readouterr().out)

    return run_factory_module


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Callable[..., BackurneModule]:
    """The module create_module returns (for its validated shared options), not run."""

    def build(args: dict[str, Any], groups: Sequence[str]) -> BackurneModule:
        with patch_module_args(args):
            return create_module("t", {}, groups=groups)

    return build


# --- merged spec ---------------------------------------------------------------------------------


def test_groups_bring_their_options_and_defaults(run) -> None:
    result = run({}, groups=("ceph", "batch", "shard", "backup_pool"))
    params = result["params"]
    assert params["cluster"] == "ceph" and params["ceph_client"] == "admin" and params["keyring"] is None
    assert params["workers"] == 4 and params["fail_on_error"] is True
    assert params["shard_index"] == 0 and params["shard_count"] == 1
    assert params["pool"] == "rbd" and params["namespace"] is None


def test_own_spec_entry_overrides_the_groups(run) -> None:
    result = run({}, own={"workers": {"type": "int", "default": 2}}, groups=("batch",))
    assert result["params"]["workers"] == 2
    assert result["params"]["fail_on_error"] is True  # the rest of the group stays


def test_option_of_an_undeclared_group_is_refused(run) -> None:
    result = run({"workers": 3}, groups=("ceph",))
    assert result["failed"] is True
    assert "workers" in result["msg"] and "Unsupported parameters" in result["msg"]


def test_unknown_group_is_a_programming_error() -> None:
    with patch_module_args({}), pytest.raises(KeyError, match="unknown option group 'nope'"):
        create_module("t", {}, groups=("nope",))


def test_module_kwargs_reach_ansible_module(run) -> None:
    result = run(
        {"pool": "a", "snap": "b"},
        own={"pool": {"type": "str"}, "snap": {"type": "str"}},
        groups=(),
        mutually_exclusive=[("pool", "snap")],
    )
    assert result["failed"] is True and "mutually exclusive" in result["msg"]


# --- shared validation: the same message in every module ----------------------------------------


def test_valid_shared_options_are_kept_validated(built) -> None:
    module = built(
        {"snap_prefix": "bk", "profiles": {"hourly": {"count": 2}}, "now": "2026-01-31T12:00:00+01:00", "workers": 3},
        groups=("policy", "batch", "shard"),
    )
    shared = module.shared
    assert shared.prefix == "bk" and list(shared.profiles or {}) == ["hourly"]
    assert shared.now == datetime(2026, 1, 31, 11, 0)
    assert shared.workers == 3 and (shared.shard_index, shared.shard_count) == (0, 1)


def test_no_shared_group_leaves_shared_options_unset(built) -> None:
    assert built({}, groups=("ceph",)).shared == SharedOptions()


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        ({"snap_prefix": "a;b"}, "snapshot prefix"),
        ({"profiles": {"daily": {"count": 0}}}, "count"),
        ({"profiles": {"often": {"count": 2}}}, "often"),
        ({"now": "yesterday"}, "backurne_now 'yesterday'"),
    ],
)
def test_bad_policy_option(run, args: dict[str, Any], culprit: str) -> None:
    result = run(args, groups=("policy",))
    assert result["failed"] is True
    assert result["msg"].startswith("t: bad input: ") and culprit in result["msg"]


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_below_one(run, workers: int) -> None:
    result = run({"workers": workers}, groups=("batch",))
    assert result["failed"] is True
    assert result["msg"] == f"t: workers must be at least 1, got {workers}"


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard(run, index: int, count: int) -> None:
    result = run({"shard_index": index, "shard_count": count}, groups=("shard",))
    assert result["failed"] is True
    assert result["msg"] == (
        f"t: shard_index must be in 0..shard_count-1 and shard_count >= 1, got shard_index={index} shard_count={count}"
    )


def test_bad_shared_option_fails_before_the_job(run) -> None:
    ran: list[bool] = []
    result = run({"workers": 0}, groups=("batch",), job=lambda module: ran.append(True) or {})
    assert result["failed"] is True and ran == []


# --- the job's outcome --------------------------------------------------------------------------


def test_job_result_is_the_module_result(run) -> None:
    result = run({}, job=lambda module: {"changed": True, "images": ["a"]})
    assert result["changed"] is True and result["images"] == ["a"] and not result.get("failed")


def test_module_failure_is_its_message_and_result_keys(run) -> None:
    def job(module: BackurneModule) -> Mapping[str, Any]:
        raise ModuleFailure("image 'x': it broke", problems=["it broke"], images={"x": "failed"})

    result = run({}, job=job)
    assert result["failed"] is True
    assert result["msg"] == "image 'x': it broke"  # as it is: the core wrote the whole message
    assert result["problems"] == ["it broke"] and result["images"] == {"x": "failed"}
    assert "exception" not in result


def test_rbd_error_names_the_module(run) -> None:
    error = RbdError(["rbd", "ls"], 1, "rbd: error opening pool 'p': (2) No such file or directory", "node1")

    def job(module: BackurneModule) -> Mapping[str, Any]:
        raise error

    result = run({}, job=job)
    assert result["failed"] is True and result["msg"] == f"t: {error}"
    assert "(2) No such file or directory" in result["msg"] and "exception" not in result


def test_value_error_names_the_module(run) -> None:
    def job(module: BackurneModule) -> Mapping[str, Any]:
        raise ValueError("pool name 'a/b' contains '/'")

    result = run({}, job=job)
    assert result["msg"] == "t: pool name 'a/b' contains '/'" and "exception" not in result


def _job_with_a_bug(module: BackurneModule) -> Mapping[str, Any]:
    return {"changed": False, "n": {}["missing"]}


def test_unexpected_error_names_its_type(run) -> None:
    result = run({}, job=_job_with_a_bug)
    assert result["failed"] is True
    assert result["msg"] == "t: unexpected error: KeyError: 'missing'"


def test_unexpected_error_passes_the_traceback(run, monkeypatch: pytest.MonkeyPatch) -> None:
    # ansible-core 2.19 puts `exception` into the result only when the controller asks for
    # tracebacks of errors (ANSIBLE_DISPLAY_TRACEBACK=error sends _ansible_tracebacks_for). Under
    # pytest the controller's answer is installed (the controller code is imported), and a module
    # process caches its own: put the module side back, uncached, for this run.
    monkeypatch.setattr(_traceback, "_is_traceback_enabled", _traceback._is_module_traceback_enabled)
    monkeypatch.setattr(_traceback, "_module_tracebacks_enabled_events", None)
    result = run({"_ansible_tracebacks_for": ["error"]}, job=_job_with_a_bug)
    assert result["msg"] == "t: unexpected error: KeyError: 'missing'"
    assert result["exception"].startswith("Traceback (most recent call last):")
    assert "_job_with_a_bug" in result["exception"] and "KeyError: 'missing'" in result["exception"]


def test_fail_names_the_module_first(run) -> None:
    def job(module: BackurneModule) -> Mapping[str, Any]:
        module.fail("pool p is full", problems=["full"])

    result = run({}, job=job)
    assert result["msg"] == "t: pool p is full" and result["problems"] == ["full"]


def test_check_mode_is_seen(run) -> None:
    result = run({"_ansible_check_mode": True}, job=lambda module: {"changed": False, "check": module.check_mode})
    assert result["check"] is True
