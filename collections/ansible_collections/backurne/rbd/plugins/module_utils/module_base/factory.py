# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The one way a backurne module is made: its own options merged with the shared option groups
# (each documented by a doc fragment of the same name), the shared options validated once with
# the same messages in every module, and one place that turns the core's errors into fail_json
# (with the traceback when the error was not one the core raises on purpose).
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import RbdError
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    BACKUP_POOL_ARGS,
    BATCH_ARGS,
    CEPH_ARGS,
    LOCK_ARGS,
    POLICY_ARGS,
    POOL_PAIR_ARGS,
    SHARD_ARGS,
    SSH_ARGS,
    STREAM_ARGS,
    parse_duration_or_zero,
    parse_now,
)
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.policy.naming import NamingError, validate_prefix
from ansible_collections.backurne.rbd.plugins.module_utils.policy.retention import (
    PolicyError,
    Profile,
    parse_duration,
    parse_profiles,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.options import PVE_AUTH_ARGS, PVE_AUTH_TOGETHER

if TYPE_CHECKING:
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import StreamOptions

# Option group name -> argument spec. The doc fragment backurne.rbd.NAME documents group NAME
# (backup_pool: backurne.rbd.pool_pair.backup_pool, the first half of the pair).
OPTION_GROUPS: dict[str, Mapping[str, dict[str, Any]]] = {
    "ceph": CEPH_ARGS,
    "ssh": SSH_ARGS,
    "backup_pool": BACKUP_POOL_ARGS,
    "pool_pair": POOL_PAIR_ARGS,
    "policy": POLICY_ARGS,
    "batch": BATCH_ARGS,
    "shard": SHARD_ARGS,
    "proxmox": PVE_AUTH_ARGS,
    "stream": STREAM_ARGS,
    "lock": LOCK_ARGS,
}


__all__ = ["OPTION_GROUPS", "BackurneModule", "ModuleFailure", "SharedOptions", "create_module"]


@dataclass(frozen=True)
class SharedOptions:
    """The shared options, validated: only those of the groups the module declared are set."""

    prefix: str | None = None
    profiles: dict[str, Profile] | None = None
    now: datetime | None = None
    workers: int | None = None
    shard_index: int = 0
    shard_count: int = 1
    # group "stream": zstd and the limits in seconds (stall_timeout 0 becomes None: watch off)
    stream: StreamOptions | None = None
    # group "lock": age after which another run's lock on a backup image is stale
    lock_ttl: timedelta | None = None


class BackurneModule:
    """An AnsibleModule with the module's name (the first word of every message) and the validated
    shared options."""

    def __init__(self, name: str, ansible_module: AnsibleModule, shared: SharedOptions) -> None:
        self.name = name
        self.ansible = ansible_module
        self.params: dict[str, Any] = ansible_module.params
        self.shared = shared

    @property
    def check_mode(self) -> bool:
        return bool(self.ansible.check_mode)

    @property
    def diff_mode(self) -> bool:
        return bool(self.ansible._diff)  # pylint: disable=protected-access

    def fail(self, msg: str, **result: Any) -> NoReturn:
        """Fail naming this module first (the messages tests and operators grep for)."""
        self.ansible.fail_json(msg=f"{self.name}: {msg}", **result)
        raise AssertionError("fail_json returned")  # only when a test stubs fail_json

    def duration_or_zero(self, key: str) -> timedelta:
        """A duration option where 0 is legitimate (due_tolerance, extra_retention_time); a bad
        value fails as a bad shared option does (``NAME: bad input: ...``)."""
        try:
            return parse_duration_or_zero(self.params[key])
        except ValueError as exc:  # PolicyError is a ValueError
            self.fail(f"bad input: {exc}")

    def run(self, job: Callable[[], Mapping[str, Any]]) -> NoReturn:
        """Run the module's job and exit with its result.

        ModuleFailure: its message as it is (the core names the image and the cause), with its
        result keys. RbdError/ValueError that escaped the job: the module's name and the error.
        Anything else is a bug: the message plus the traceback (``exception=``), so it can be fixed.
        """
        try:
            result = dict(job())
        except ModuleFailure as failure:
            self.ansible.fail_json(msg=failure.msg, **failure.result)
        except (RbdError, ValueError) as exc:
            self.ansible.fail_json(msg=f"{self.name}: {exc}")
        except Exception as exc:  # pylint: disable=broad-exception-caught
            self.ansible.fail_json(
                msg=f"{self.name}: unexpected error: {type(exc).__name__}: {exc}", exception=traceback.format_exc()
            )
        self.ansible.exit_json(**result)
        raise AssertionError("exit_json returned")


def _merged_spec(own: Mapping[str, dict[str, Any]], groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {}
    for group in groups:
        if group not in OPTION_GROUPS:
            raise KeyError(f"unknown option group {group!r}")
        spec.update({key: dict(value) for key, value in OPTION_GROUPS[group].items()})
    spec.update(own)  # a module's own definition wins (another default, say)
    return spec


def _shared_options(name: str, params: Mapping[str, Any], groups: Sequence[str]) -> SharedOptions | str:
    """The validated shared options, or the message naming what is wrong."""
    values: dict[str, Any] = {}
    if "policy" in groups:
        try:
            values["prefix"] = validate_prefix(params["snap_prefix"])
            values["profiles"] = parse_profiles(params["profiles"])
            values["now"] = parse_now(params["now"])
        except (NamingError, PolicyError, ValueError) as exc:
            return f"{name}: bad input: {exc}"
    if "batch" in groups:
        if params["workers"] < 1:
            return f"{name}: workers must be at least 1, got {params['workers']}"
        values["workers"] = params["workers"]
    if "shard" in groups:
        index, count = params["shard_index"], params["shard_count"]
        if count < 1 or not 0 <= index < count:
            return (
                f"{name}: shard_index must be in 0..shard_count-1 and shard_count >= 1, "
                f"got shard_index={index} shard_count={count}"
            )
        values.update(shard_index=index, shard_count=count)
    if "stream" in groups:
        stream = _stream_options(name, params)
        if isinstance(stream, str):
            return stream
        values["stream"] = stream
    if "lock" in groups:
        try:
            values["lock_ttl"] = parse_duration(params["lock_ttl"])
        except PolicyError as exc:
            return f"{name}: lock_ttl: {exc}"
    return SharedOptions(**values)


def _stream_options(name: str, params: Mapping[str, Any]) -> StreamOptions | str:
    """The stream group's options, or the message naming what is wrong."""
    # Imported here: only the modules with the stream group load the transfer code (the others
    # start faster on the node; AnsiballZ still ships it, its dependency finder reads every import).
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.throttle import BandwidthLimit
    from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, StreamOptions

    timeout, stall = params["timeout"], params["stall_timeout"]
    if timeout < 1 or stall < 0:
        return (
            f"{name}: timeout must be at least 1 second and stall_timeout at least 0 (0 = off), "
            f"got timeout={timeout} stall_timeout={stall}"
        )
    try:
        compression = Compression(
            enabled=params["compression"], level=params["compression_level"], threads=params["compression_threads"]
        )
        bwlimit = BandwidthLimit.from_options(params["bwlimit"], params["bwlimit_node"])
    except ValueError as exc:
        return f"{name}: {exc}"
    return StreamOptions(compression, timeout, stall or None, bwlimit)


def create_module(
    name: str,
    argument_spec: Mapping[str, dict[str, Any]],
    groups: Sequence[str] = ("ceph",),
    supports_check_mode: bool = True,
    **module_kwargs: Any,
) -> BackurneModule:
    """Build the module: own options + the named option groups; fail at once on a bad shared option.

    ``module_kwargs`` go to AnsibleModule as they are (mutually_exclusive, required_together, ...).
    The ``proxmox`` group brings its own required_together (a token id needs its secret).
    """
    if "proxmox" in groups:
        together = [*module_kwargs.pop("required_together", []), *PVE_AUTH_TOGETHER]
        module_kwargs["required_together"] = together
    ansible_module = AnsibleModule(
        argument_spec=_merged_spec(argument_spec, groups), supports_check_mode=supports_check_mode, **module_kwargs
    )
    shared = _shared_options(name, ansible_module.params, groups)
    if isinstance(shared, str):
        ansible_module.fail_json(msg=shared)
        raise AssertionError("fail_json returned")
    return BackurneModule(name, ansible_module, shared)
