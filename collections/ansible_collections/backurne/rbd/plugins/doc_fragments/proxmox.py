# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # Proxmox VE API access, named as community.proxmox names it (with its PROXMOX_* fallbacks).
    DOCUMENTATION = r"""
options:
  api_host:
    description:
      - Host name or address of a Proxmox VE node (the API listens on port 8006).
      - Falls back to the environment variable E(PROXMOX_HOST).
    type: str
  api_port:
    description:
      - Port of the API; 8006 when not given.
      - Falls back to E(PROXMOX_PORT).
    type: int
  api_user:
    description:
      - User, with its realm, e.g. C(backurne@pve). For an API token, the token's user.
      - Falls back to E(PROXMOX_USER).
    type: str
  api_password:
    description:
      - Password of O(api_user) (ticket authentication). Never printed.
      - Falls back to E(PROXMOX_PASSWORD).
    type: str
  api_token_id:
    description:
      - Name of an API token of O(api_user) (the part after C(!)). Requires O(api_token_secret).
      - Falls back to E(PROXMOX_TOKEN_ID).
    type: str
  api_token_secret:
    description:
      - Secret (UUID) of the API token O(api_token_id). Never printed.
      - Falls back to E(PROXMOX_TOKEN_SECRET).
    type: str
  validate_certs:
    description:
      - Verify the API's TLS certificate (against O(ca_path) when given, else the system CAs).
      - Falls back to E(PROXMOX_VALIDATE_CERTS).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the API's certificate (PVE's own C(/etc/pve/pve-root-ca.pem)).
      - Falls back to E(PROXMOX_CA_PATH).
    type: path
  api_timeout:
    description: Seconds one API request may take.
    type: int
    default: 10
requirements:
  - proxmoxer (Python library, 1.2 or later; Debian package C(python3-proxmoxer))
  - requests
"""
