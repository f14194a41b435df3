# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The data stream between the clusters (module_utils/stream/transfer.py): a backup pulls it
    # from the live node, a restore pushes it there; the zstd side is the live node's for a
    # backup and this node's for a restore.
    DOCUMENTATION = r"""
options:
  compression:
    description: Compress the stream with zstd before it crosses ssh (on a WAN it pays; on one machine it costs).
    type: bool
    default: true
  compression_level:
    description: zstd level (1 to 19).
    type: int
    default: 1
  compression_threads:
    description: zstd threads (0 = one per core).
    type: int
    default: 0
  timeout:
    description:
      - Seconds one stream (one snapshot's transfer, or a restore and each of its checksums) may
        take before it is stopped and the image fails (playbook variable C(backurne_transfer_timeout)).
    type: int
    default: 21600
  stall_timeout:
    description:
      - Seconds the stream may go without moving a byte before it is stopped and the image fails
        with C(no data moved for N s (stalled)), naming the stage it stopped at (e.g. C(import)
        when a full cluster blocks C(rbd import-diff)). C(0) turns the watch off (O(timeout)
        still applies). Playbook variable C(backurne_stall_timeout).
      - A healthy stream can be silent while C(rbd export-diff) scans a long unchanged stretch
        of a large image without the fast-diff feature; raise it for such images.
    type: int
    default: 300
  bwlimit:
    description:
      - Bandwidth limit of each stream, in bytes per second on the wire (the compressed bytes
        that cross ssh), paced by this node's relay with a token bucket (burst 0.1 s of the rate,
        at least 64 KiB).
      - A number of bytes per second, or a number with a 1024-based unit C(K), C(M), C(G), C(T)
        (C(512K), C(100M) = 100 MiB/s, C(1.5G); C(100MiB) and C(100M/s) are read the same).
        Unset, empty or C(0) means no limit. A bad value fails the module before anything is done.
      - Playbook variable C(backurne_bwlimit) (a rate, or C(transfer:) and C(node:) keys).
    type: str
  bwlimit_node:
    description:
      - Total bandwidth limit of all the streams of this module run on this node (all its workers
        share one bucket), same units as O(bwlimit); both apply when both are set.
      - Two separate runs on one node (two playbooks at once) each get their own total.
      - Playbook variable C(backurne_bwlimit) (its C(node:) key).
    type: str
"""
