# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The filters' documentation lives beside this file, one YAML file per filter.
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.report.records import (
    checksum_records,
    image_records,
    report_lines,
)


def _usable(result: dict[str, Any] | None) -> dict[str, Any] | None:
    # A task skipped in this run (nothing to do for it) has no images to merge.
    return None if not result or result.get("skipped") else result


def _records(
    snapshot: dict[str, Any],
    cluster: str,
    *results: dict[str, Any] | None,
    pool: str | None = None,
    namespace: str | None = None,
    **named_results: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """image_records (transfer, checksum, retention_live, retention_backup by position or name),
    with skipped task results left out and an empty namespace as none."""
    return image_records(
        cluster,
        _usable(snapshot),
        *(_usable(result) for result in results),
        pool=pool,
        namespace=namespace or None,
        **{name: _usable(result) for name, result in named_results.items()},
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"image_records": _records, "report_lines": report_lines, "checksum_records": checksum_records}
