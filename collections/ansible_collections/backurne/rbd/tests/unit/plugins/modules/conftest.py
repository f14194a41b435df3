# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

try:
    from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19+
except ImportError:  # ansible-core 2.16-2.18: AnsibleModule reads basic._ANSIBLE_ARGS

    @contextmanager
    def patch_module_args(args: Mapping[str, Any] | None = None) -> Iterator[None]:
        from ansible.module_utils import basic

        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args or {})}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved


class ModuleExit(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result)
        self.result = result


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture[str]) -> Callable[..., dict[str, Any]]:
    """Run a module's main() with the given arguments and return its JSON result."""

    def run(main: Callable[[], None], args: dict[str, Any]) -> dict[str, Any]:
        with patch_module_args(args), pytest.raises(SystemExit):
            main()
        return json.loads(capsys.readouterr().out)

    return run
