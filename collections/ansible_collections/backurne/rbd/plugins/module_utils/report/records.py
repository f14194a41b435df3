# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Per-image reporting records, merged from the results of one cluster's backup tasks. The filter
# plugin exposes them to playbooks; the CLI and a reporting callback can use the same records.
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict
from ansible_collections.backurne.rbd.plugins.module_utils.report.units import human_bytes

# The fields of a record (image_records, checksum_records): the callback keeps only these, so no
# other value (a module argument such as a password or a token) can reach its outputs.
RECORD_FIELDS = (
    "cluster",
    "image",
    "pool",
    "namespace",
    "rbd_image",
    "backup_image",
    "profiles",
    "kind",
    "status",
    "snapshots",
    "bytes_logical",
    "bytes_wire",
    "duration",
    "verified",
    "expired_live",
    "expired_backup",
    "error",
    "note",
    "may_be_frozen",
    "set_aside",
)
REDACTED = "********"
_SECRET_KEY = re.compile(r"password|secret|token(?!_id)|passphrase|(^|_)key$", re.IGNORECASE)
# Ansible's own placeholder for a no_log value.
_NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
_MIN_SECRET_LENGTH = 4


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
    pool: str | None = None,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """One record per image the snapshot task planned for, in image order.

    ``pool``/``namespace``: the live pool of a plain cluster (Proxmox VE plans carry their own
    ``source_pool``/``source_namespace``); ``rbd_image`` is then ``POOL[/NAMESPACE]/IMAGE``.
    """
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
        # The guest's fsfreeze was not confirmed undone (proxmox_snapshot): the disk's backup is
        # what it is, the guest is what the operator must look at.
        freeze = plan.get("freeze") or {}
        may_be_frozen = freeze.get("state") == "may-be-frozen"
        notes = [text for text in (sent.get("note"), freeze.get("message") if may_be_frozen else None) if text]
        status = sent.get("status") or ("failed" if not plan.get("ok", True) else "up-to-date")
        if errors:
            status = "failed"
        elif status == "up-to-date" and plan.get("kind", "none") != "none":
            status = "planned"
        live_pool = plan.get("source_pool") or pool
        live_ns = plan.get("source_namespace") if plan.get("source_pool") else namespace
        records.append(
            {
                "cluster": cluster,
                "image": image,
                "pool": live_pool,
                "namespace": live_ns or None,
                "rbd_image": rbd_image_spec(live_pool, live_ns, image),
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
                "note": _join_notes(*notes, summed.get("note") if summed else None),
                "may_be_frozen": may_be_frozen,
                "set_aside": _set_aside(summed),
            }
        )
    return records


def _join_notes(*notes: Any) -> str | None:
    return "; ".join(str(note) for note in notes if note) or None


def _set_aside(summed: Mapping[str, Any] | None) -> list[str]:
    """Backup snapshots the checksum found unequal to live and removed (self-healing)."""
    names = (summed or {}).get("set_aside")
    return [str(name) for name in names] if isinstance(names, list) else []


def secret_values(args: Any) -> set[str]:
    """Every string value under a secret-looking key (password, token secret, keyring...), at any depth."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, secret or bool(_SECRET_KEY.search(str(key))))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, secret)
        elif secret and isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH and value != _NO_LOG_PLACEHOLDER:
            found.add(value)

    walk(args, False)
    return found


def sanitize_record(record: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The record's known fields only, with every occurrence of a secret value replaced."""
    ordered = sorted(set(secrets), key=len, reverse=True)  # a longer secret may contain a shorter one

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in ordered:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list):
            return [scrub(item) for item in value]
        return value

    return {key: scrub(record.get(key)) for key in RECORD_FIELDS}


def syslog_line(record: Mapping[str, Any]) -> str:
    """One line per image for syslog (backurne 2.x's report_time): what happened, how big, how long."""
    verified = {None: "-", True: "yes", False: "NO"}.get(record.get("verified"), "-")
    line = (
        f"cluster={record.get('cluster')} image={record.get('image')} status={record.get('status')} "
        f"kind={record.get('kind')} profiles={','.join(record.get('profiles') or []) or '-'} "
        f"bytes_logical={int(record.get('bytes_logical') or 0)} bytes_wire={int(record.get('bytes_wire') or 0)} "
        f"duration={float(record.get('duration') or 0.0):.3f}s verified={verified}"
    )
    if record.get("error"):
        line += f" error={' '.join(str(record['error']).split())}"
    return line


def checksum_records(cluster: str, checksum: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Records of a verify run: one per image whose newest shared snapshot was hashed."""
    records = []
    for item in (checksum or {}).get("images", []) or []:
        # An item names its live pool and namespace when the checksum task was given them per item
        # (Proxmox disks); otherwise they are unknown here and the table shows the bare image.
        pool, namespace = item.get("source_pool"), item.get("source_namespace")
        records.append(
            {
                "cluster": cluster,
                "image": item["image"],
                "pool": pool,
                "namespace": namespace or None,
                "rbd_image": rbd_image_spec(pool, namespace, item["image"]),
                "backup_image": item.get("backup_image"),
                "profiles": [],
                "kind": "verify",
                "status": "skipped" if item.get("skipped") else ("verified" if item.get("match") else "failed"),
                "snapshots": [item["snapshot"]] if item.get("snapshot") else [],
                "bytes_logical": 0,
                "bytes_wire": 0,
                "duration": 0.0,
                "verified": None if item.get("skipped") else bool(item.get("match")),
                "expired_live": 0,
                "expired_backup": 0,
                "error": item.get("error"),
                "note": _join_notes(item.get("skipped"), item.get("note")),
                "may_be_frozen": False,
                "set_aside": _set_aside(item),
            }
        )
    return records


def rbd_image_spec(pool: str | None, namespace: str | None, image: str) -> str:
    """``pool/namespace/image`` as rbd writes it (``pool/image`` without a namespace); the bare
    image when the pool is unknown."""
    return "/".join(part for part in (pool, namespace, image) if part) if pool else image


def report_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """A fixed-width table, one line per image, plus a summary line."""
    header = ("cluster", "image", "profiles", "result", "logical", "wire", "secs", "verified", "expired")
    rows = [header]
    for rec in records:
        verified = {None: "-", True: "yes", False: "NO"}[rec["verified"]]
        result = rec["status"] if rec["status"] != "transferred" else rec["kind"]
        if rec.get("may_be_frozen"):
            result += ", MAY BE FROZEN"
        rows.append(
            (
                str(rec["cluster"]),
                # With pool and namespace: one image name may exist in several pools/namespaces.
                str(rec.get("rbd_image") or rec["image"]),
                ",".join(rec["profiles"]) or "-",
                result,
                human_bytes(rec["bytes_logical"], largest="GiB"),
                human_bytes(rec["bytes_wire"], largest="GiB"),
                f"{rec['duration']:.1f}",
                verified,
                f"{rec['expired_live']}/{rec['expired_backup']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip_strict(row, widths)).rstrip() for row in rows]
    failed = sum(1 for rec in records if rec["status"] == "failed")
    moved = sum(1 for rec in records if rec["status"] == "transferred")
    deferred = sum(1 for rec in records if rec["status"] == "deferred")
    frozen = sum(1 for rec in records if rec.get("may_be_frozen"))
    lines.append(
        f"{len(records)} image(s): {moved} transferred, {failed} failed, "
        + (f"{deferred} deferred (backup window ended), " if deferred else "")
        + f"{len(records) - moved - failed - deferred} unchanged or planned; "
        f"{human_bytes(sum(rec['bytes_logical'] for rec in records), largest='GiB')} logical, "
        f"{human_bytes(sum(rec['bytes_wire'] for rec in records), largest='GiB')} on the wire"
        + (f"; {frozen} of a guest that may be frozen" if frozen else "")
    )
    return lines


def run_summary(records: Sequence[Mapping[str, Any]], started: float, finished: float) -> dict[str, Any]:
    """Counts for a whole run (images ok / failed / deferred / skipped, bytes, duration).

    ``deferred``: images whose transfer the backup window kept from starting (not failed)."""
    failed = sum(1 for rec in records if rec["status"] == "failed")
    transferred = sum(1 for rec in records if rec["status"] == "transferred")
    deferred = sum(1 for rec in records if rec["status"] == "deferred")
    return {
        "started": started,
        "finished": finished,
        "duration": round(finished - started, 3),
        "images": len(records),
        "transferred": transferred,
        "failed": failed,
        "deferred": deferred,
        "skipped": len(records) - transferred - failed - deferred,
        "bytes_logical": sum(int(rec["bytes_logical"]) for rec in records),
        "bytes_wire": sum(int(rec["bytes_wire"]) for rec in records),
    }


def _label(value: Any) -> str:
    # Prometheus label values: backslash, double quote and newline must be escaped.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_lines(
    records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], with_history: bool = False
) -> list[str]:
    """Metrics in the Prometheus text exposition format (for node_exporter's textfile collector).

    ``with_history``: each record carries ``last_success`` (epoch seconds, 0 for never), read
    from the backup node's history (module report_metrics): every image gets the sample, a
    failed one its last success. Without it (the controller's callback, which has no history)
    only the images that succeeded in this run get one, at the run's end.
    """
    per_image = [
        ("backurne_image_last_success_timestamp_seconds", "gauge", "End of the run that last backed up the image."),
        ("backurne_image_transfer_duration_seconds", "gauge", "Time spent transferring the image in this run."),
        ("backurne_image_transfer_bytes", "gauge", "Bytes of diff streams (kind=logical) and on the wire (kind=wire)."),
        ("backurne_image_failed", "gauge", "1 when the image failed in this run."),
    ]
    lines: list[str] = []
    for name, kind, text in per_image:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for rec in records:
            labels = f'cluster="{_label(rec["cluster"])}",image="{_label(rec["image"])}"'
            if name == "backurne_image_last_success_timestamp_seconds":
                if with_history:
                    lines.append(f"{name}{{{labels}}} {float(rec.get('last_success') or 0):.3f}")
                elif rec["status"] in ("transferred", "up-to-date"):
                    lines.append(f"{name}{{{labels}}} {summary['finished']:.3f}")
            elif name == "backurne_image_transfer_duration_seconds":
                lines.append(f"{name}{{{labels}}} {float(rec['duration']):.3f}")
            elif name == "backurne_image_transfer_bytes":
                lines.append(f'{name}{{{labels},kind="logical"}} {int(rec["bytes_logical"])}')
                lines.append(f'{name}{{{labels},kind="wire"}} {int(rec["bytes_wire"])}')
            else:
                lines.append(f"{name}{{{labels}}} {1 if rec['status'] == 'failed' else 0}")
    for key in ("transferred", "failed", "deferred", "skipped"):
        name = f"backurne_run_images_{key}"
        lines += [f"# HELP {name} Images {key} in the last run.", f"# TYPE {name} gauge", f"{name} {summary[key]}"]
    lines += [
        "# HELP backurne_run_duration_seconds Duration of the last run.",
        "# TYPE backurne_run_duration_seconds gauge",
        f"backurne_run_duration_seconds {summary['duration']:.3f}",
        "# HELP backurne_run_finished_timestamp_seconds End of the last run.",
        "# TYPE backurne_run_finished_timestamp_seconds gauge",
        f"backurne_run_finished_timestamp_seconds {summary['finished']:.3f}",
    ]
    return lines
