# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Per-image reporting records, merged from the results of one cluster's backup tasks. The filter
# plugin exposes them to playbooks; the CLI and a reporting callback can use the same records.
from collections.abc import Mapping, Sequence
from typing import Any


def _by_image(result: Mapping[str, Any] | None, key: str = "images") -> dict[str, Mapping[str, Any]]:
    if not result or not isinstance(result.get(key), list):
        return {}
    return {item["image"]: item for item in result[key] if isinstance(item, Mapping) and "image" in item}


def image_records(
    cluster: str,
    snapshot: Mapping[str, Any] | None,
    transfer: Mapping[str, Any] | None = None,
    checksum: Mapping[str, Any] | None = None,
    retention_live: Mapping[str, Any] | None = None,
    retention_backup: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One record per image the snapshot task planned for, in image order."""
    transfers = _by_image(transfer)
    sums = _by_image(checksum)
    expired_live = _by_image(retention_live)
    expired_backup = {item.get("image"): item for item in (retention_backup or {}).get("images", []) or []}
    records = []
    for plan in (snapshot or {}).get("images", []) or []:
        image = plan["image"]
        sent = transfers.get(image, {})
        summed = sums.get(image)
        backup_image = plan.get("backup_image")
        errors = [
            text
            for text in (
                plan.get("error"),
                sent.get("error") if not sent.get("ok", True) else None,
                summed.get("error") if summed else None,
                expired_live.get(image, {}).get("error"),
                expired_backup.get(backup_image, {}).get("error"),
            )
            if text
        ]
        status = sent.get("status") or ("failed" if not plan.get("ok", True) else "up-to-date")
        if errors:
            status = "failed"
        elif status == "up-to-date" and plan.get("kind", "none") != "none":
            status = "planned"
        records.append(
            {
                "cluster": cluster,
                "image": image,
                "backup_image": backup_image,
                "profiles": list(plan.get("due", [])),
                "kind": sent.get("kind") or plan.get("kind", "none"),
                "status": status,
                "snapshots": list(sent.get("snapshots", [])),
                "bytes_logical": int(sent.get("bytes_logical", 0) or 0),
                "bytes_wire": int(sent.get("bytes_wire", 0) or 0),
                "duration": float(sent.get("duration", 0.0) or 0.0),
                "verified": None if summed is None else bool(summed.get("match")),
                "expired_live": len(expired_live.get(image, {}).get("deleted", [])),
                "expired_backup": len(expired_backup.get(backup_image, {}).get("deleted", [])),
                "error": "; ".join(errors) or None,
                "note": sent.get("note"),
            }
        )
    return records


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def report_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """A fixed-width table, one line per image, plus a summary line."""
    header = ("cluster", "image", "profiles", "result", "logical", "wire", "secs", "verified", "expired")
    rows = [header]
    for rec in records:
        verified = {None: "-", True: "yes", False: "NO"}[rec["verified"]]
        result = rec["status"] if rec["status"] != "transferred" else rec["kind"]
        rows.append(
            (
                str(rec["cluster"]),
                str(rec["image"]),
                ",".join(rec["profiles"]) or "-",
                result,
                _size(rec["bytes_logical"]),
                _size(rec["bytes_wire"]),
                f"{rec['duration']:.1f}",
                verified,
                f"{rec['expired_live']}/{rec['expired_backup']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    failed = sum(1 for rec in records if rec["status"] == "failed")
    moved = sum(1 for rec in records if rec["status"] == "transferred")
    lines.append(
        f"{len(records)} image(s): {moved} transferred, {failed} failed, "
        f"{len(records) - moved - failed} unchanged or planned; "
        f"{_size(sum(rec['bytes_logical'] for rec in records))} logical, "
        f"{_size(sum(rec['bytes_wire'] for rec in records))} on the wire"
    )
    return lines
