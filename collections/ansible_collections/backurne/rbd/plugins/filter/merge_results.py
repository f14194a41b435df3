# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Several backup nodes share one run, each with its shard of the images (module_utils/policy/sharding.py);
# what they did is merged here into one result per task, for the run-wide steps after them
# (live-side expiry, the report). The filters' documentation lives beside this file.
from collections.abc import Mapping, Sequence
from typing import Any

# Per-image snapshot listings a task returns for the images it handled (backup image -> names).
LISTINGS = ("backup_snapshots", "confirmed_snapshots")


def merge_results(results: Sequence[Any]) -> dict[str, Any]:
    """One registered result from several nodes' results of the same batch task.

    `images` and `failed_images` are concatenated (each node returned only its share), the
    listings (`backup_snapshots`, and the checksum's `confirmed_snapshots`) dicts merged,
    `changed` is any; skipped (or missing) results are left out, and when every result was
    skipped the merge is skipped too.
    """
    if isinstance(results, Mapping) or not isinstance(results, Sequence):
        raise TypeError(f"merge_results expects a list of registered results, got {type(results).__name__}")
    usable = [result for result in results if isinstance(result, Mapping) and result and not result.get("skipped")]
    if not usable:
        return {"skipped": True, "changed": False, "images": [], "failed_images": []}
    merged: dict[str, Any] = {"changed": False, "images": [], "failed_images": []}
    listings: dict[str, dict[str, Any]] = {key: {} for key in LISTINGS}
    for result in usable:
        merged["changed"] = merged["changed"] or bool(result.get("changed"))
        merged["images"] += list(result.get("images") or [])
        merged["failed_images"] += list(result.get("failed_images") or [])
        if result.get("failed") and not result.get("images"):
            # The task itself failed on that node (not one image): say so once per node.
            merged["failed_images"].append({"image": None, "error": str(result.get("msg") or "task failed")})
        for key in LISTINGS:
            listings[key].update(result.get(key) or {})
    merged.update({key: listing for key, listing in listings.items() if listing})
    return merged


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"merge_results": merge_results}
