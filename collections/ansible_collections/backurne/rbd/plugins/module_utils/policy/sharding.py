# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# How the images of one run are split across several backup nodes (the order within a batch is
# policy/priority.py).
#
# Shard of a backup image: the first 8 bytes of sha256(backup image name, UTF-8), big-endian,
# mod the number of nodes. A cryptographic hash only because it is stable everywhere (Python's
# hash() is salted per process) and spreads names that differ in one character evenly; it is
# computed once per image per run. The backup image name (IDENT;DISK;COMMENT) is the key
# because it is what the cluster-wide lock protects, and the backup side's expiry works on it
# too, so one node owns an image for its transfer, its verification and its backup-side expiry.
import hashlib


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that owns backup image `name`."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(name: str, index: int, count: int) -> bool:
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
    return count == 1 or shard_of(name, count) == index
