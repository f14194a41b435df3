# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# Restoring Proxmox VE disk backups (the module backurne.rbd.proxmox_restore): as new disks of an
# existing guest (mode disk), or as a new qemu guest recreated from the saved config (mode
# guest). Everything is validated before the first image is created; a failed recreate removes
# the images it restored. The naming and config rules are proxmox/restore.py's.
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.failure import ModuleFailure
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import (
    ProxmoxerApi,
    PveApi,
    PveAuth,
    PveError,
    guest_config,
    list_guests,
    list_storages,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discovery import (
    META_CLUSTER,
    META_CONFIG,
    META_DISK,
    META_PENDING,
    META_TYPE,
    META_VMID,
    RbdStorage,
    parse_property_string,
    rbd_storages,
    split_volume,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.restore import (
    PveRestoreError,
    allocate_disk_names,
    free_unused_key,
    pending_note,
    recreate_config,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.restore import (
    RestoreError,
    RestoreRequest,
    plan_restore,
    restore_snapshot,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression, StreamOptions

# (pool, namespace) on the live cluster. Optional, not `str | None`: an alias is evaluated at
# import, and `|` of types needs 3.10 (the nodes run 3.9); typing.TypeAlias is 3.10+ too.
Target = tuple[str, Optional[str]]


def read_meta(backup: RbdRunner, pool: str, namespace: str | None, image: str) -> dict[str, Any]:
    """The guest config and identity saved beside a backup image (proxmox_backup_images)."""
    spec = ImageSpec(pool, namespace, image)
    try:
        out = backup.run(["image-meta", "list", *spec.options(), "--format=json"])
    except RbdError as exc:
        if exc.is_not_found:
            raise PveRestoreError(f"backup image {spec} does not exist") from None
        raise
    meta = backup.parse_json(out, ["image-meta", "list"]) if out.strip() else {}
    if not meta.get(META_CONFIG) or not meta.get(META_DISK):
        raise PveRestoreError(f"backup image {spec} has no saved Proxmox VE config (not a Proxmox VE disk backup)")
    try:
        config = json.loads(meta[META_CONFIG])
    except ValueError as exc:
        raise PveRestoreError(f"backup image {spec}: saved config is not JSON ({exc})") from None
    try:
        pending = json.loads(meta.get(META_PENDING) or "{}")
    except ValueError:
        pending = {}  # informative only: the saved config alone is restored
    return {
        "config": config,
        "pending": pending if isinstance(pending, dict) else {},
        "disk": meta[META_DISK],
        "vmid": meta.get(META_VMID, ""),
        "type": meta.get(META_TYPE, ""),
        "cluster": meta.get(META_CLUSTER, ""),
    }


def wait_task(api: PveApi, node: str, upid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = api.get(f"nodes/{node}/tasks/{upid}/status") or {}
        if status.get("status") == "stopped":
            if status.get("exitstatus") != "OK":
                raise PveError(f"task {upid}: {status.get('exitstatus')}")
            return
        if time.monotonic() > deadline:
            raise PveError(f"task {upid}: still running after {timeout:g} s")
        time.sleep(0.5)


def restore_job(image: str, key: str, storage: str, pool: str, namespace: str | None, name: str) -> dict[str, Any]:
    """One backup image to restore as `name` in pool[/namespace], and its entry in the result."""
    entry = {
        "image": image,
        "snapshot": None,
        "key": key,
        "storage": storage,
        "volume": f"{storage}:{name}",
        "target": None,
        "ok": False,
        "checksum_source": None,
        "checksum_target": None,
        "error": None,
    }
    return {"image": image, "pool": pool, "namespace": namespace, "name": name, "entry": entry}


def validate_restore_params(params: Mapping[str, Any]) -> None:
    if not params["images"] or len(set(params["images"])) != len(params["images"]):
        raise ModuleFailure("proxmox_restore: images must be a non-empty list without duplicates")
    if not params["hasher"] or params["timeout"] < 1:
        raise ModuleFailure("proxmox_restore: hasher must not be empty and timeout at least 1 second")


@dataclass
class GuestRestoreJob:
    """The whole proxmox_restore step: plan and validate everything, then (not in check mode)
    restore, attach or create the guest, and clean up after a failed recreate."""

    p: Mapping[str, Any]
    backup: RbdRunner
    live: RbdRunner
    check_mode: bool
    diff_mode: bool

    @property
    def namespace(self) -> str | None:
        """The backup namespace (an empty one is none)."""
        return self.p["namespace"] or None

    # -- planning ---------------------------------------------------------------------------

    def target_storage(self, storages: dict[str, RbdStorage], saved_value: str, where: str) -> RbdStorage:
        name = self.p["storage"]
        if name is None:
            volume = parse_property_string(saved_value, default_key="file", where=where).get("file", "")
            parts = split_volume(volume)
            if parts is None:
                raise PveRestoreError(f"{where}: the saved disk {saved_value!r} names no storage: give storage")
            name = parts[0]
        if name not in storages:
            raise PveRestoreError(f"{where}: storage {name!r} is not an RBD storage of this Proxmox VE cluster")
        return storages[name]

    def plan_disks(self, metas, storages, guests, api) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        p = self.p
        saved_ids = {m["vmid"] for m in metas.values()}
        if p["vmid"] is None and len(saved_ids) != 1:
            raise PveRestoreError(f"the images come from several guests ({', '.join(sorted(saved_ids))}): give vmid")
        vmid = p["vmid"] if p["vmid"] is not None else int(saved_ids.pop())
        guest = guests.get(vmid)
        if guest is None:
            raise PveRestoreError(f"guest {vmid} does not exist on this Proxmox VE cluster")
        node, kind = str(guest["node"]), str(guest["type"])
        config = guest_config(api, node, kind, vmid)
        listings: dict[Target, list[str]] = {}
        jobs: list[dict[str, Any]] = []
        taken_keys: list[str] = []
        picked: list[str] = []
        for image, meta in metas.items():
            where = f"backup image {image!r}"
            storage = self.target_storage(storages, str(meta["config"].get(meta["disk"], "")), where)
            where_to = (storage.pool, storage.namespace)
            if where_to not in listings:
                listings[where_to] = list(self.live.list_images(storage.pool, storage.namespace))
            name = allocate_disk_names(vmid, config, [*listings[where_to], *picked], 1)[0]
            picked.append(name)
            key = free_unused_key(config, taken_keys)
            taken_keys.append(key)
            jobs.append(restore_job(image, key, storage.name, storage.pool, storage.namespace, name))
        result = {"mode": "disk", "vmid": vmid, "node": node, "type": kind, "disks": [j["entry"] for j in jobs]}
        result["warnings_list"] = []
        return result, jobs

    def receives(self, target: Target, storages: dict[str, RbdStorage], saved: Mapping[str, Any]) -> bool:
        """Whether a (pool, namespace) may receive a restored disk: list only those."""
        if self.p["storage"] is not None:
            chosen = storages.get(self.p["storage"])
            return chosen is not None and (chosen.pool, chosen.namespace) == target
        names = {s.name for s in storages.values() if (s.pool, s.namespace) == target}
        return any(isinstance(v, str) and v.split(":", 1)[0] in names for v in saved.values())

    def plan_guest(self, metas, storages, guests) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        p = self.p
        ids = {(m["vmid"], m["type"], m["cluster"]) for m in metas.values()}
        if len(ids) != 1:
            raise PveRestoreError(
                "with mode=guest, the images must all be disks of one guest (vmid, type and cluster differ)"
            )
        keys = [m["disk"] for m in metas.values()]
        if len(set(keys)) != len(keys):
            raise PveRestoreError(f"with mode=guest, give one backup image per disk (several for {sorted(keys)})")
        new_vmid = p["new_vmid"]
        if new_vmid in guests:
            other = guests[new_vmid]
            kind = "VM" if other.get("type") == "qemu" else "CT"
            raise PveRestoreError(f"new_vmid: {kind} {new_vmid} already exists on node '{other.get('node')}'")
        guest_type = ids.pop()[1]
        # The newest saved config: every image of one run carries the same one; take the first image's.
        first = next(iter(metas.values()))
        saved = first["config"]
        needed = {(s.pool, s.namespace) for s in storages.values()}
        listings = {
            t: list(self.live.list_images(*t)) for t in sorted(needed, key=str) if self.receives(t, storages, saved)
        }
        plan = recreate_config(guest_type, saved, new_vmid, keys, storages, listings, p["storage"])
        by_key = {m["disk"]: image for image, m in metas.items()}
        jobs = [
            restore_job(by_key[key], key, disk["storage"], disk["pool"], disk["namespace"], disk["image"])
            for key, disk in plan.disks.items()
        ]
        unused = sorted(set(keys) - set(plan.disks))
        warnings = list(plan.warnings)
        note = pending_note(first.get("pending") or {})
        if note:
            warnings.append(note)
        if unused:
            warnings.append(f"backup images of disks the saved config does not restore: {', '.join(unused)}")
        result = {
            "mode": "guest",
            "vmid": new_vmid,
            "node": p["node"],
            "type": guest_type,
            "disks": [j["entry"] for j in jobs],
            "config": plan.config,
            "warnings_list": warnings,
        }
        return result, jobs

    def plan(self) -> tuple[PveApi, dict[str, Any], list[dict[str, Any]]]:
        """Everything validated (snapshot selected, target free) before the first restore runs."""
        p = self.p
        api = ProxmoxerApi(PveAuth.from_params(p))
        metas = {image: read_meta(self.backup, p["pool"], self.namespace, image) for image in p["images"]}
        storages = rbd_storages(list_storages(api))
        guests = {int(g["vmid"]): g for g in list_guests(api) if "vmid" in g}
        if p["mode"] == "disk":
            result, jobs = self.plan_disks(metas, storages, guests, api)
        else:
            result, jobs = self.plan_guest(metas, storages, guests)
        for job in jobs:
            planned = plan_restore(self.backup, self.live, self.restore_request(job, p["snapshot"]), p["snap_prefix"])
            job["entry"]["snapshot"] = planned.snapshot
            job["entry"]["target"] = planned.target
        return api, result, jobs

    # -- the run ------------------------------------------------------------------------------

    def restore_request(self, job: Mapping[str, Any], snapshot: str) -> RestoreRequest:
        """One planned image's restore: from the backup pool into its new name (never forced)."""
        source = (self.p["pool"], self.namespace, job["image"], snapshot)
        return RestoreRequest(*source, job["pool"], job["namespace"], job["name"])

    def restore_one(self, job: dict[str, Any]) -> str | None:
        """Stream one image (checksums compared); the error, or None."""
        p, entry = self.p, job["entry"]
        done = restore_snapshot(
            self.backup,
            self.live,
            self.restore_request(job, entry["snapshot"]),
            StreamOptions(Compression(enabled=p["compression"]), timeout=p["timeout"]),
            snap_prefix=p["snap_prefix"],
            verify=p["verify"],
            hasher=p["hasher"],
        )
        entry.update(checksum_source=done.checksum_source, checksum_target=done.checksum_target)
        if not done.ok:
            entry["error"] = f"restore of {job['image']!r} onto {entry['target']}: {done.error}"
            return str(entry["error"])
        return None

    def attach(self, api: PveApi, result: dict[str, Any], entry: dict[str, Any]) -> str | None:
        try:
            api.put(  # type: ignore[attr-defined]
                f"nodes/{result['node']}/{result['type']}/{result['vmid']}/config", **{entry["key"]: entry["volume"]}
            )
        except PveError as exc:
            entry["error"] = f"{entry['target']} restored, attaching it as {entry['key']} failed: {exc}"
            return str(entry["error"])
        entry["ok"] = True
        return None

    def create_guest(self, api: PveApi, result: dict[str, Any], restored: list[dict[str, Any]]) -> str | None:
        node = self.p["node"]
        try:
            upid = api.post(f"nodes/{node}/qemu", vmid=result["vmid"], **result["config"])
            result["upid"] = upid
            wait_task(api, node, str(upid), self.p["task_timeout"])
        except PveError as exc:
            return f"creating guest {result['vmid']} on {node}: {exc}"
        for job in restored:
            job["entry"]["ok"] = True
        return None

    def remove_restored(self, restored: list[dict[str, Any]]) -> str:
        """The images of a guest that does not exist: nobody else can know of them."""
        notes = []
        for job in restored:
            try:
                self.live.remove(ImageSpec(job["pool"], job["namespace"], job["name"]))
                notes.append(f"removed {job['entry']['target']}")
            except RbdError as exc:
                notes.append(f"could not remove {job['entry']['target']}: {exc}")
        return f" ({'; '.join(notes)})" if notes else ""

    def run(self, api: PveApi, result: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
        restored: list[dict[str, Any]] = []
        failed = None
        for job in jobs:
            failed = self.restore_one(job)
            if failed:
                break
            restored.append(job)
            if result["mode"] == "disk":
                failed = self.attach(api, result, job["entry"])
                if failed:
                    break
        if result["mode"] == "guest" and failed is None:
            failed = self.create_guest(api, result, restored)
        if failed and result["mode"] == "guest":
            failed += self.remove_restored(restored)
            restored = []
        changed = bool(restored) or "upid" in result
        if failed:
            raise ModuleFailure(f"proxmox_restore: {failed}", changed=changed, **result)
        return {"changed": changed, **result}

    def __call__(self) -> dict[str, Any]:
        validate_restore_params(self.p)
        try:
            api, result, jobs = self.plan()
        except (PveRestoreError, RestoreError, PveError, RbdError, ValueError) as exc:
            raise ModuleFailure(f"proxmox_restore: {exc}", changed=False) from exc
        if self.diff_mode:
            after = result.get("config") or {d["key"]: d["volume"] for d in result["disks"]}
            result["diff"] = {"before": {}, "after": after}
        if self.check_mode:
            return {"changed": True, **result}
        return self.run(api, result, jobs)
