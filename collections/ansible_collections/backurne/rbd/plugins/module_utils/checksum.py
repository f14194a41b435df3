# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Proof that a backup snapshot holds what the live one holds: hash `rbd export IMG@SNAP -` on
# each side, where the data lives (only the hash crosses the network), and compare.
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.rbd import ImageSpec, RbdError, RbdRunner

DEFAULT_HASHER: tuple[str, ...] = ("xxhsum",)


@dataclass
class ChecksumResult:
    image: str
    snapshot: str
    live: str | None
    backup: str | None
    match: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_checksum(
    runner: RbdRunner,
    pool: str,
    namespace: str | None,
    image: str,
    snap: str,
    hasher: Sequence[str] = DEFAULT_HASHER,
    timeout: float | None = None,
) -> str:
    """Hash of the full content of image@snap, computed on the runner's node.

    `timeout` None means no limit (the time grows with the image: ~1.5 s/GiB here).
    """
    spec = ImageSpec(pool, namespace, image, snap)
    if not hasher:
        raise ValueError("empty hasher command")
    export = runner.access.rbd_argv("export", "--no-progress", *spec.options(), "--path=-")
    # pipefail in run_pipeline: a failed export must not yield the hash of a truncated stream.
    out = runner.run_pipeline([export, list(hasher)], timeout=timeout, action="checksum of", subject=str(spec))
    words = out.split()
    if not words:
        raise RbdError([], 0, "", runner.label, action="checksum of", subject=str(spec), cause="hasher printed nothing")
    return words[0]


def compare_snapshot(
    live_runner: RbdRunner,
    backup_runner: RbdRunner,
    live_loc: ImageSpec | str,
    backup_loc: ImageSpec | str,
    snap: str,
    hasher: Sequence[str] = DEFAULT_HASHER,
    timeout: float | None = None,
) -> ChecksumResult:
    """Hash snap on both sides at once (each side reads its own cluster) and compare."""
    live_spec = ImageSpec.of(live_loc).at(None)
    backup_spec = ImageSpec.of(backup_loc).at(None)

    def side(runner: RbdRunner, spec: ImageSpec) -> str:
        return snapshot_checksum(runner, spec.pool, spec.namespace, spec.image, snap, hasher, timeout)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backurne-checksum") as pool:
        futures = {
            "live": pool.submit(side, live_runner, live_spec),
            "backup": pool.submit(side, backup_runner, backup_spec),
        }
        hashes: dict[str, str | None] = {}
        errors: list[str] = []
        for name, future in futures.items():
            try:
                hashes[name] = future.result()
            except (RbdError, ValueError, OSError) as exc:
                hashes[name] = None
                errors.append(f"{name}: {exc}")
    live_hash, backup_hash = hashes["live"], hashes["backup"]
    match = live_hash is not None and live_hash == backup_hash
    error = "; ".join(errors) or (None if match else f"checksums differ: live {live_hash}, backup {backup_hash}")
    return ChecksumResult(str(live_spec), snap, live_hash, backup_hash, match, error)
