# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""backurne.rbd.pve_api: a Proxmox live cluster's API options, for the playbooks' module_defaults."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.backurne.rbd.plugins.filter.pve_api import FilterModule, pve_api


def test_only_the_api_options_the_settings_give() -> None:
    settings = {
        "api_host": "pve1.example.org",
        "api_user": "backurne@pve",
        "api_token_id": "backup",
        "api_token_secret": "s3cret",
        "api_delegate": "pve-jump",  # the playbooks' own option, not the modules'
        "freeze": False,
        "use_smbios": True,
    }
    assert pve_api(settings) == {
        "api_host": "pve1.example.org",
        "api_user": "backurne@pve",
        "api_token_id": "backup",
        "api_token_secret": "s3cret",
        "validate_certs": True,  # as the task files always passed it
    }


def test_an_explicit_choice_is_kept() -> None:
    settings = {"api_host": "h", "api_user": "u", "api_password": "p", "validate_certs": False, "api_timeout": 30}
    assert pve_api(settings) == {**settings}


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="proxmox settings, got str"):
        pve_api("pve1")


def test_registered_name() -> None:
    assert FilterModule().filters()["pve_api"] is pve_api
