#!/usr/bin/python
# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: proxmox_discover
short_description: Find the RBD disks of a Proxmox VE cluster's guests, grouped per live Ceph endpoint
version_added: 0.1.0
description:
  - Runs where the Proxmox VE API is reachable (usually the controller). Reads C(/cluster/resources)
    (qemu and lxc guests), each guest's config and C(/storage), and returns the disks to back up,
    grouped per live Ceph endpoint, with their pool, namespace, RBD image, backup image name,
    guest, profiles and the guest's config.
  - "qemu: C(ide), C(sata), C(scsi), C(virtio), C(efidisk0), C(tpmstate0) on RBD storages; cdroms
    (cloud-init disks too), C(backup=0) disks, C(unusedN) volumes and non-RBD storages are skipped.
    A linked clone C(base-X-disk-N/vm-Y-disk-M) is the RBD image after the slash."
  - "lxc: C(rootfs) always, C(mpN) only with C(backup=1), never bind mounts."
  - "Tags: C(<tag_prefix>-off) switches a guest's backups off; C(<tag_prefix>-<profile>) adds the
    profile of that name from O(profile_catalogue) to the guest's profiles."
  - A guest the resource list shows without a name (no statistics yet) is named after its config
    (C(name), C(hostname) for containers).
  - The config returned is the current one (C(current=1)), the state the snapshots hold. Pending
    changes come apart, in RV(disks[].pending).
  - Also reads C(/nodes) and C(/cluster/status). RV(coverage) says which guests this listing
    positively saw; a node offline, a failed read or a refused config makes it incomplete (with a
    warning naming the guests not seen), and no backup of a guest not seen may then fade out.
  - Reads only; changes nothing.
author:
  - backurne developers (@backurne)
extends_documentation_fragment:
  - backurne.rbd.proxmox
  - backurne.rbd.attributes
attributes:
  check_mode:
    support: full
    description: Reads only; the same result in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
options:
  live_cluster:
    description:
      - Name of this live cluster in backurne (the first level of O(ceph_endpoint)).
    type: str
    required: true
  ceph_endpoint:
    description:
      - Which live Ceph node serves a Proxmox storage, as in backurne 2.x, a dict of dicts.
        C(ceph_endpoint[live_cluster][storage]) first, then C(ceph_endpoint[default][storage]),
        else the storage name itself. Values are inventory host names.
    type: dict
    default: {}
  use_smbios:
    description:
      - Name qemu backups after the guest's smbios1 uuid and disk adapter (C(UUID;scsi0;VMNAME)),
        which survive renames and storage moves. Otherwise C(STORAGE;IMAGE;VMNAME).
    type: bool
    default: true
  uuid_fallback:
    description:
      - With O(use_smbios), a qemu guest without smbios1 uuid is named as if O(use_smbios) were
        off. With V(false) such a guest is skipped with a warning.
    type: bool
    default: true
  include_templates:
    description: Back up templates too.
    type: bool
    default: false
  tag_prefix:
    description: Prefix of the Proxmox tags backurne reads (C(backurne-off), C(backurne-hourly)).
    type: str
    default: backurne
  profiles:
    description: Profiles every guest gets (as in M(backurne.rbd.snapshot)).
    type: dict
    default: {daily: {count: 30}}
  profile_catalogue:
    description: Profiles a guest gets only when a C(<tag_prefix>-<name>) tag names them.
    type: dict
    default: {}
  profiles_api:
    description:
      - "URL to POST each guest's info to (JSON). The answer is a JSON object of extra profiles
        (C({\"hourly\": {\"count\": 24}}), or under a C(profiles) key) or C({\"backup\": false}).
        On any failure the guest keeps its other profiles and a warning says why."
    type: str
  profiles_api_timeout:
    description: Seconds the O(profiles_api) may take per guest.
    type: int
    default: 10
  only_guests:
    description: Shell patterns on guest names or vmids narrowing this run. All when empty.
    type: list
    elements: str
    default: []
  exclude_guests:
    description: Shell patterns on guest names or vmids never backed up.
    type: list
    elements: str
    default: []
  workers:
    description: Guest configs read at once.
    type: int
    default: 4
"""

EXAMPLES = r"""
- name: Find the disks of the Proxmox cluster
  backurne.rbd.proxmox_discover:
    api_host: pve1.example.org
    api_user: backurne@pve
    api_token_id: backup
    api_token_secret: "{{ vault_pve_token_secret }}"
    ca_path: /etc/backurne/pve-root-ca.pem
    live_cluster: pve-a
    ceph_endpoint:
      default: {ceph-vm: ceph-a-client, ceph-ct: ceph-a-client}
    profiles: {daily: {count: 30}}
    profile_catalogue: {hourly: {count: 24}}
  register: pve
"""

RETURN = r"""
disks:
  description: One item per disk to back up.
  returned: success
  type: list
  elements: dict
  contains:
    endpoint:
      description: Inventory host of the live Ceph node serving the disk's storage.
      type: str
    storage:
      description: Proxmox storage name.
      type: str
    pool:
      description: RBD pool of the storage.
      type: str
    namespace:
      description: RBD namespace of the storage, or null.
      type: str
    image:
      description: RBD image.
      type: str
    disk:
      description: Config key of the disk (C(scsi0), C(rootfs), C(mp1)...).
      type: str
    backup_image:
      description: Backup image name C(IDENT;DISK;VMNAME).
      type: str
    guest:
      description: vmid, name, node, type, running, status, template, tags, agent, freeze.
      type: dict
    profiles:
      description: The guest's profiles (defaults, tags, profiles_api).
      type: dict
    config:
      description: The guest's current Proxmox config (C(GET config?current=1)), without pending changes.
      type: dict
    pending:
      description:
        - The guest's pending changes (C(GET pending), the entries with a pending value or delete),
          config key to C(value) (current), C(pending) (new value) and/or C(delete) (1, or 2 forced).
      type: dict
endpoints:
  description: The disks per endpoint.
  returned: success
  type: dict
groups:
  description:
    - Each distinct (endpoint, pool, namespace) with disks, for per-pool live expiry, with its
      C(image_map) (RBD image to backup image, input of M(backurne.rbd.retention)).
  returned: success
  type: list
  elements: dict
guests:
  description: The guests with disks to back up.
  returned: success
  type: list
  elements: dict
excluded:
  description: Guests and disks not backed up, with the reason (not C(skipped), which Ansible reads as a skipped task).
  returned: success
  type: list
  elements: dict
  sample: [{vmid: 100, name: web1, disk: scsi1, reason: "backup=0"}]
failed_guests:
  description:
    - Guests or disks that should be backed up but cannot be (config unreadable or refused by
      PVE's rules, no smbios uuid while O(uuid_fallback=false)), with C(vmid), C(name), C(disk), C(error).
  returned: success
  type: list
  elements: dict
profiles:
  description: Every profile definition any guest uses (for expiry).
  returned: success
  type: dict
coverage:
  description:
    - What this listing positively saw (input O(backurne.rbd.proxmox_backup_images#module:coverage)).
      C(complete) is false when a node is offline (C(/nodes) or C(/cluster/status)), C(/nodes) or
      C(/cluster/status) could not be read, or a guest's config could not be read or used.
  returned: success
  type: dict
  contains:
    complete:
      description: Every node online, every read done, every guest's config usable.
      type: bool
    problems:
      description: Why the listing is incomplete.
      type: list
      elements: str
    seen:
      description: vmids listed and positively seen (read, or deliberately not backed up).
      type: list
      elements: int
    unseen:
      description: Guests listed but not seen, each with C(vmid), C(name) (C(?) when unknown), C(node), C(reason).
      type: list
      elements: dict
    unselected:
      description: vmids outside O(only_guests).
      type: list
      elements: int
unmatched_limits:
  description: The patterns of O(only_guests) that match no guest name or vmid of the cluster (with a warning).
  returned: success
  type: list
  elements: str
"""

from ansible_collections.backurne.rbd.plugins.module_utils.module_base.factory import create_module
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.client import PROXMOXER_IMPORT_ERROR
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.discover_job import DiscoveryJob
from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.options import require_pve_api


def main() -> None:
    module = create_module(
        "proxmox_discover",
        {
            "live_cluster": {"type": "str", "required": True},
            "ceph_endpoint": {"type": "dict", "default": {}},
            "use_smbios": {"type": "bool", "default": True},
            "uuid_fallback": {"type": "bool", "default": True},
            "include_templates": {"type": "bool", "default": False},
            "tag_prefix": {"type": "str", "default": "backurne"},
            "profiles": {"type": "dict", "default": {"daily": {"count": 30}}},
            "profile_catalogue": {"type": "dict", "default": {}},
            "profiles_api": {"type": "str"},
            "profiles_api_timeout": {"type": "int", "default": 10},
            "only_guests": {"type": "list", "elements": "str", "default": []},
            "exclude_guests": {"type": "list", "elements": "str", "default": []},
            "workers": {"type": "int", "default": 4},
        },
        groups=("proxmox",),
    )
    require_pve_api(module.ansible, "proxmox_discover", PROXMOXER_IMPORT_ERROR)
    module.run(DiscoveryJob(module.params, module.ansible.warn))


if __name__ == "__main__":
    main()
