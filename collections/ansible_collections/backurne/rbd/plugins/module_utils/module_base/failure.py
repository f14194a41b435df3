# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The failure a job of the core reports on purpose. Kept apart from the factory (which imports
# Ansible) so that the core's jobs can raise it and still be used and tested without Ansible.
from typing import Any


class ModuleFailure(Exception):
    """A failure the core reports on purpose: fail_json with this message and these result keys."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result
