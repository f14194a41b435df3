#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: proxmox_restore
short_description: Restore Proxmox VE disk backups as new disks of a guest, or recreate a guest
version_added: 0.1.0
description:
  - Runs on a backup node. Each backup image's snapshot is restored with the pipeline of
    M(backurne.rbd.restore) (C(rbd export-diff | zstd | ssh LIVE "zstd -d | rbd import-diff"),
    checksums compared) into a new image named as Proxmox VE names disks,
    C(vm-VMID-disk-N), N being the lowest index used neither by the guest's config nor by an
    image of the target pool/namespace. Existing images and disks are never touched.
  - O(mode=disk) attaches each restored image to the guest O(vmid) as the next free C(unusedN)
    entry (C(STORAGE:IMAGE)); the operator then moves it to a bus in the Proxmox VE UI.
  - O(mode=guest) recreates a qemu guest from the config saved on the backup images
    (C(backurne.pve.config)) under the new id O(new_vmid) on O(node), every backed-up disk
    restored as C(vm-NEWVMID-disk-N). It gets a new C(smbios1) uuid (the uuid is the guest's
    identity, also for backurne's backup image names), no MAC address (Proxmox VE generates
    new ones) and a new C(vmgenid); cdroms become C(none,media=cdrom), a cloud-init drive is
    regenerated, disks without a backup (C(backup=0), non-RBD storages) are dropped with a
    warning. A container cannot be recreated through the API (Proxmox VE creates containers
    only from a template); restore its disks with O(mode=disk).
  - The saved config is the one the guest ran with when backed up (C(current=1)), the state its
    disks' snapshots hold. Changes that were pending then (C(backurne.pve.pending)) are not
    recreated; a warning names them.
  - The target storages must be RBD storages of the Proxmox VE cluster whose pool/namespace
    lies on the Ceph cluster reached through O(live_host).
  - Everything is validated (images, saved configs, snapshots, guest ids, storages) before the
    first image is created; a bad request fails the task and changes nothing. A failed recreate
    removes the images it restored.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.ceph
  - backurne.rbd.ssh
  - backurne.rbd.proxmox
attributes:
  check_mode:
    support: full
    description: Validates the request and returns the plan (image names, unusedN keys, new config); nothing is created.
  diff_mode:
    support: full
    description:
      - The guest config entries the restore adds (O(mode=disk)), or the new guest's config (O(mode=guest)),
        before and after.
requirements:
  - proxmoxer
options:
  mode:
    description: C(disk) restores new disks of an existing guest, C(guest) recreates a qemu guest.
    type: str
    choices: [disk, guest]
    default: disk
  pool:
    description: Backup pool holding the backup images.
    type: str
    default: rbd
  namespace:
    description: RBD namespace inside the backup pool.
    type: str
  images:
    description:
      - Backup images of Proxmox VE disks, e.g. C(7b10d7af-...;scsi0;web1). With O(mode=guest), the
        guest's backup images to restore (all of one guest); its disks without one are dropped.
    type: list
    elements: str
    required: true
  snapshot:
    description:
      - Snapshot of each image to restore - an exact name, C(latest), or C(before:ISOTIME)
        (the same selector for every image, so a guest's disks come from the same run).
    type: str
    default: latest
  vmid:
    description: O(mode=disk) - the guest that gets the disks. Default the guest the backup was made of.
    type: int
  new_vmid:
    description: O(mode=guest) - the id of the new guest; it must not exist.
    type: int
  node:
    description:
      - O(mode=guest) - the node the new guest is created on (required). O(mode=disk) - ignored, the
        guest's node is looked up.
    type: str
  storage:
    description: RBD storage that receives every restored image. Default each disk's own storage.
    type: str
  snap_prefix:
    description: Prefix of backurne's snapshots; only those can be restored.
    type: str
    default: backup
  compression:
    description: Compress the stream with zstd on the backup node.
    type: bool
    default: true
  timeout:
    description: Seconds the stream (and each checksum) of one image may take.
    type: int
    default: 21600
  verify:
    description: Compare the checksums of each backup snapshot and its restored image.
    type: bool
    default: true
  hasher:
    description: Hash command reading an image on stdin (an argument list).
    type: list
    elements: str
    default: [xxhsum]
  task_timeout:
    description: Seconds to wait for the Proxmox VE task that creates the guest.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: Restore the newest backup of web1's scsi0 as a new (unused) disk of guest 100
  backurne.rbd.proxmox_restore:
    mode: disk
    pool: backups
    images: ["7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1"]
    live_host: 10.0.10.5
    api_host: pve1.example.com
    api_user: backurne@pve
    api_token_id: backurne
    api_token_secret: "{{ vault_pve_token }}"

- name: Recreate web1 as guest 250 from last night's backups
  backurne.rbd.proxmox_restore:
    mode: guest
    new_vmid: 250
    node: pve1
    snapshot: "before:2026-11-30T06:00:00"
    pool: backups
    images:
      - "7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1"
      - "7b10d7af-b932-4c66-b2c3-3996152ec465;efidisk0;web1"
    live_host: 10.0.10.5
    api_host: pve1.example.com
    api_user: backurne@pve
    api_token_id: backurne
    api_token_secret: "{{ vault_pve_token }}"
"""

RETURN = r"""
vmid:
  description: The guest that got the disks (O(mode=disk)) or the new guest (O(mode=guest)).
  type: int
  returned: always
  sample: 250
node:
  description: Node of that guest.
  type: str
  returned: always
  sample: pve1
disks:
  description: One entry per backup image.
  type: list
  elements: dict
  returned: always
  contains:
    image:
      description: Backup image.
      type: str
    snapshot:
      description: The snapshot restored.
      type: str
    key:
      description: The config key of the restored disk (C(unusedN) with O(mode=disk), e.g. C(scsi0) with O(mode=guest)).
      type: str
    storage:
      description: Proxmox VE storage of the new image.
      type: str
    volume:
      description: Its volume id, C(STORAGE:vm-VMID-disk-N).
      type: str
    target:
      description: The new image, pool[/namespace]/image.
      type: str
    ok:
      description: Whether this disk was restored (and attached).
      type: bool
    checksum_source:
      description: Hash of the backup snapshot.
      type: str
    checksum_target:
      description: Hash of the restored image.
      type: str
    error:
      description: Why it failed.
      type: str
  sample:
    - image: "7b10d7af-b932-4c66-b2c3-3996152ec465;scsi0;web1"
      snapshot: "backup;daily;7;2026-11-29T10:00:00.000000"
      key: unused1
      storage: ceph-vm
      volume: "ceph-vm:vm-100-disk-5"
      target: rbd/pve/vm-100-disk-5
      ok: true
      checksum_source: 9f0c2b8e1d7a6c55
      checksum_target: 9f0c2b8e1d7a6c55
      error: null
config:
  description: O(mode=guest) - the config the new guest is (or would be) created with.
  type: dict
  returned: when O(mode=guest)
  sample: {name: web1, smbios1: "uuid=0d8e...", scsi0: "ceph-vm:vm-250-disk-0,discard=on,size=4M"}
upid:
  description: O(mode=guest) - the Proxmox VE task that created the guest.
  type: str
  returned: when a guest was created
warnings_list:
  description: Disks dropped from a recreated guest, and why.
  type: list
  elements: str
  returned: always
"""

import json
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rbd import ImageSpec, RbdError, RbdRunner
from ansible_collections.backurne.rbd.plugins.module_utils.module_base.args import (
    CEPH_ARGS,
    SSH_ARGS,
    ceph_access,
    live_ssh_target,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import (
    PROXMOXER_IMPORT_ERROR,
    ProxmoxerApi,
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
    parse_property_string,
    rbd_storages,
    split_volume,
)
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.options import (
    PVE_AUTH_ARGS,
    PVE_AUTH_TOGETHER,
    require_pve_api,
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
    plan_restore,
    restore_snapshot,
)
from ansible_collections.backurne.rbd.plugins.module_utils.stream.transfer import Compression


def _read_meta(backup: RbdRunner, pool: str, namespace: str | None, image: str) -> dict[str, Any]:
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


def _wait_task(api: ProxmoxerApi, node: str, upid: str, timeout: float) -> None:
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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CEPH_ARGS,
            **SSH_ARGS,
            **PVE_AUTH_ARGS,
            "mode": {"type": "str", "choices": ["disk", "guest"], "default": "disk"},
            "pool": {"type": "str", "default": "rbd"},
            "namespace": {"type": "str"},
            "images": {"type": "list", "elements": "str", "required": True},
            "snapshot": {"type": "str", "default": "latest"},
            "vmid": {"type": "int"},
            "new_vmid": {"type": "int"},
            "node": {"type": "str"},
            "storage": {"type": "str"},
            "snap_prefix": {"type": "str", "default": "backup"},
            "compression": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 21600},
            "verify": {"type": "bool", "default": True},
            "hasher": {"type": "list", "elements": "str", "default": ["xxhsum"]},
            "task_timeout": {"type": "int", "default": 120},
        },
        required_if=[("mode", "guest", ("new_vmid", "node"))],
        required_together=PVE_AUTH_TOGETHER,
        supports_check_mode=True,
    )
    p = module.params
    require_pve_api(module, "proxmox_restore", PROXMOXER_IMPORT_ERROR)
    if not p["images"] or len(set(p["images"])) != len(p["images"]):
        module.fail_json(msg="proxmox_restore: images must be a non-empty list without duplicates")
    if not p["hasher"] or p["timeout"] < 1:
        module.fail_json(msg="proxmox_restore: hasher must not be empty and timeout at least 1 second")
    namespace = p["namespace"] or None
    backup = RbdRunner(ceph_access(p))
    try:
        live = RbdRunner(ceph_access(p["live_ceph"] or {}), ssh=live_ssh_target(p))
        api = ProxmoxerApi(PveAuth.from_params(p))
        metas = {image: _read_meta(backup, p["pool"], namespace, image) for image in p["images"]}
        storages = rbd_storages(list_storages(api))
        guests = {int(g["vmid"]): g for g in list_guests(api) if "vmid" in g}
        if p["mode"] == "disk":
            result, jobs = _plan_disks(p, metas, storages, guests, api, live)
        else:
            result, jobs = _plan_guest(p, metas, storages, guests, live)
        # Every restore validated (snapshot selected, target free) before the first one runs.
        for job in jobs:
            planned = plan_restore(
                backup,
                live,
                p["pool"],
                namespace,
                job["image"],
                p["snapshot"],
                job["pool"],
                job["namespace"],
                job["name"],
                False,
                p["snap_prefix"],
            )
            job["entry"]["snapshot"] = planned.snapshot
            job["entry"]["target"] = planned.target
    except (PveRestoreError, RestoreError, PveError, RbdError, ValueError) as exc:
        module.fail_json(msg=f"proxmox_restore: {exc}", changed=False)
    if module._diff:
        after = result.get("config") or {d["key"]: d["volume"] for d in result["disks"]}
        result["diff"] = {"before": {}, "after": after}
    if module.check_mode:
        module.exit_json(changed=True, **result)
    _run(module, p, backup, live, api, result, jobs)


def _target(p: dict[str, Any], storages: dict[str, Any], saved_value: str, where: str) -> Any:
    name = p["storage"]
    if name is None:
        parts = split_volume(parse_property_string(saved_value, default_key="file", where=where).get("file", ""))
        if parts is None:
            raise PveRestoreError(f"{where}: the saved disk {saved_value!r} names no storage: give storage")
        name = parts[0]
    if name not in storages:
        raise PveRestoreError(f"{where}: storage {name!r} is not an RBD storage of this Proxmox VE cluster")
    return storages[name]


def _job(image: str, key: str, storage: str, pool: str, namespace: str | None, name: str) -> dict[str, Any]:
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


def _plan_disks(p, metas, storages, guests, api, live) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    saved_ids = {m["vmid"] for m in metas.values()}
    if p["vmid"] is None and len(saved_ids) != 1:
        raise PveRestoreError(f"the images come from several guests ({', '.join(sorted(saved_ids))}): give vmid")
    vmid = p["vmid"] if p["vmid"] is not None else int(saved_ids.pop())
    guest = guests.get(vmid)
    if guest is None:
        raise PveRestoreError(f"guest {vmid} does not exist on this Proxmox VE cluster")
    node, kind = str(guest["node"]), str(guest["type"])
    config = guest_config(api, node, kind, vmid)
    listings: dict[tuple[str, str | None], list[str]] = {}
    jobs: list[dict[str, Any]] = []
    taken_keys: list[str] = []
    picked: list[str] = []
    for image, meta in metas.items():
        where = f"backup image {image!r}"
        saved_value = str(meta["config"].get(meta["disk"], ""))
        storage = _target(p, storages, saved_value, where)
        where_to = (storage.pool, storage.namespace)
        if where_to not in listings:
            listings[where_to] = list(live.list_images(storage.pool, storage.namespace))
        name = allocate_disk_names(vmid, config, [*listings[where_to], *picked], 1)[0]
        picked.append(name)
        key = free_unused_key(config, taken_keys)
        taken_keys.append(key)
        jobs.append(_job(image, key, storage.name, storage.pool, storage.namespace, name))
    result = {"mode": "disk", "vmid": vmid, "node": node, "type": kind, "disks": [j["entry"] for j in jobs]}
    result["warnings_list"] = []
    return result, jobs


def _plan_guest(p, metas, storages, guests, live) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    saved = next(iter(metas.values()))["config"]
    needed = {(s.pool, s.namespace) for s in storages.values()}
    listings = {t: list(live.list_images(*t)) for t in sorted(needed, key=str) if _used(t, storages, saved, p)}
    plan = recreate_config(guest_type, saved, new_vmid, keys, storages, listings, p["storage"])
    by_key = {m["disk"]: image for image, m in metas.items()}
    jobs = []
    for key, disk in plan.disks.items():
        jobs.append(_job(by_key[key], key, disk["storage"], disk["pool"], disk["namespace"], disk["image"]))
    unused = sorted(set(keys) - set(plan.disks))
    warnings = list(plan.warnings)
    note = pending_note(next(iter(metas.values())).get("pending") or {})
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


def _used(target: tuple[str, str | None], storages: dict[str, Any], saved: dict[str, Any], p: dict[str, Any]) -> bool:
    """Whether a (pool, namespace) may receive a restored disk: list only those."""
    if p["storage"] is not None:
        chosen = storages.get(p["storage"])
        return chosen is not None and (chosen.pool, chosen.namespace) == target
    names = {s.name for s in storages.values() if (s.pool, s.namespace) == target}
    return any(isinstance(v, str) and v.split(":", 1)[0] in names for v in saved.values())


def _run(module, p, backup, live, api, result, jobs) -> None:
    compression = Compression(enabled=p["compression"])
    restored: list[dict[str, Any]] = []
    failed = None
    for job in jobs:
        entry = job["entry"]
        done = restore_snapshot(
            backup,
            live,
            p["pool"],
            p["namespace"] or None,
            job["image"],
            entry["snapshot"],
            job["pool"],
            job["namespace"],
            job["name"],
            False,
            compression,
            timeout=p["timeout"],
            snap_prefix=p["snap_prefix"],
            verify=p["verify"],
            hasher=p["hasher"],
        )
        entry.update(checksum_source=done.checksum_source, checksum_target=done.checksum_target)
        if not done.ok:
            entry["error"] = f"restore of {job['image']!r} onto {entry['target']}: {done.error}"
            failed = entry["error"]
            break
        restored.append(job)
        if result["mode"] == "disk":
            try:
                api.put(
                    f"nodes/{result['node']}/{result['type']}/{result['vmid']}/config",
                    **{entry["key"]: entry["volume"]},
                )
                entry["ok"] = True
            except PveError as exc:
                entry["error"] = f"{entry['target']} restored, attaching it as {entry['key']} failed: {exc}"
                failed = entry["error"]
                break
    if result["mode"] == "guest" and failed is None:
        try:
            upid = api.post(f"nodes/{p['node']}/qemu", vmid=result["vmid"], **result["config"])
            result["upid"] = upid
            _wait_task(api, p["node"], str(upid), p["task_timeout"])
            for job in restored:
                job["entry"]["ok"] = True
        except PveError as exc:
            failed = f"creating guest {result['vmid']} on {p['node']}: {exc}"
    if failed and result["mode"] == "guest":
        # The images belong to a guest that does not exist: nobody else can know of them.
        notes = []
        for job in restored:
            try:
                live.remove(ImageSpec(job["pool"], job["namespace"], job["name"]))
                notes.append(f"removed {job['entry']['target']}")
            except RbdError as exc:
                notes.append(f"could not remove {job['entry']['target']}: {exc}")
        if notes:
            failed += f" ({'; '.join(notes)})"
        restored = []
    changed = bool(restored) or "upid" in result
    if failed:
        module.fail_json(msg=f"proxmox_restore: {failed}", changed=changed, **result)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
