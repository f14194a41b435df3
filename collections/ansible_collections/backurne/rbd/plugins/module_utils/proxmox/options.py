# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The Proxmox VE API options, named as community.proxmox names them (same PROXMOX_* environment
# fallbacks), documented by the doc fragment backurne.rbd.proxmox. Separate from pve_client
# because env_fallback is Ansible's.
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

PVE_AUTH_ARGS: dict[str, dict[str, Any]] = {
    "api_host": {"type": "str", "fallback": (env_fallback, ["PROXMOX_HOST"])},
    "api_port": {"type": "int", "fallback": (env_fallback, ["PROXMOX_PORT"])},
    "api_user": {"type": "str", "fallback": (env_fallback, ["PROXMOX_USER"])},
    "api_password": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PROXMOX_PASSWORD"])},
    "api_token_id": {"type": "str", "no_log": False, "fallback": (env_fallback, ["PROXMOX_TOKEN_ID"])},
    "api_token_secret": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PROXMOX_TOKEN_SECRET"])},
    "validate_certs": {"type": "bool", "default": True, "fallback": (env_fallback, ["PROXMOX_VALIDATE_CERTS"])},
    "ca_path": {"type": "path", "fallback": (env_fallback, ["PROXMOX_CA_PATH"])},
    "api_timeout": {"type": "int", "default": 10},
}

PVE_AUTH_TOGETHER = [("api_token_id", "api_token_secret")]


def require_pve_api(module: AnsibleModule, name: str, import_error: str | None) -> None:
    """Fail the module unless proxmoxer imports and the API host and user are set.

    `import_error` is pve_client.PROXMOXER_IMPORT_ERROR (passed in: pve_client imports proxmoxer,
    this file must not). Host and user have no default: an option or its PROXMOX_* variable.
    """
    if import_error is not None:
        module.fail_json(msg=missing_required_lib("proxmoxer"), exception=import_error)
    for key in ("api_host", "api_user"):
        if not module.params[key]:
            module.fail_json(msg=f"{name}: {key} is required (or PROXMOX_{key[4:].upper()} in the environment)")
