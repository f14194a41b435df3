# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The Proxmox VE API options of one live cluster, for the module_defaults of the Proxmox modules
# in the playbooks' task files: written once here, from the modules' own option list, instead of
# nine templated lines per task. The filter's documentation lives beside this file.
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.backurne.rbd.plugins.module_utils.proxmox.options import PVE_AUTH_ARGS


def pve_api(proxmox: Any) -> dict[str, Any]:
    """The API options a live cluster's ``proxmox`` settings give (the keys it sets, nothing else:
    an absent option keeps the module's default), with ``validate_certs`` true unless they say
    otherwise, as the playbooks always passed it."""
    if not isinstance(proxmox, Mapping):
        raise AnsibleFilterError(f"pve_api expects a live cluster's proxmox settings, got {type(proxmox).__name__}")
    api = {key: proxmox[key] for key in PVE_AUTH_ARGS if key in proxmox}
    api.setdefault("validate_certs", True)
    return api


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pve_api": pve_api}
