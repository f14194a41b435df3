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


def _records(
    snapshot: dict[str, Any],
    cluster: str,
    transfer: dict[str, Any] | None = None,
    checksum: dict[str, Any] | None = None,
    retention_live: dict[str, Any] | None = None,
    retention_backup: dict[str, Any] | None = None,
    pool: str | None = None,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    def usable(result: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if not result or result.get("skipped") else result

    return image_records(
        cluster,
        usable(snapshot),
        usable(transfer),
        usable(checksum),
        usable(retention_live),
        usable(retention_backup),
        pool=pool,
        namespace=namespace or None,
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"image_records": _records, "report_lines": report_lines, "checksum_records": checksum_records}
