# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The `backurne` wheel carries the core as backurne_core, never a partial ansible_collections
package (which, in site-packages, would sit where ansible-core looks for collections)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "collections" / "ansible_collections" / "backurne" / "rbd" / "plugins" / "module_utils"

# Run in a fresh interpreter whose only source of backurne is the unpacked wheel.
PROBE = """
import json, sys
from backurne_cli.main import build_parser
import backurne_api.core
import backurne_core.ceph.rbd as rbd
import backurne_core.stream.restore as restore
print(json.dumps({
    "core": rbd.__file__,
    "restore_imports_rbd_from": restore.RbdError.__module__,
    "prog": build_parser().prog,
    "collection_modules": sorted(m for m in sys.modules if m.startswith("ansible_collections")),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (built,) = out.glob("backurne-*.whl")
    return built


def test_wheel_ships_the_core_as_backurne_core_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("ansible_collections")]
    shipped = {
        n.removeprefix("backurne_core/_module_utils/") for n in names if n.startswith("backurne_core/_module_utils/")
    }
    in_collection = {str(p.relative_to(MODULE_UTILS)) for p in MODULE_UTILS.rglob("*.py")}
    assert shipped == in_collection


def test_installed_wheel_imports_the_core_under_its_own_name(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert not (target / "ansible_collections").exists()
    # PYTHONPATH: the wheel only (not src/, not collections/); the working directory: elsewhere.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANSIBLE_COLLECTIONS_PATH")}
    env["PYTHONPATH"] = str(target)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, timeout=120, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    seen = json.loads(probe.stdout)
    assert Path(seen["core"]).is_relative_to(target)
    assert seen["prog"] == "backurne"
    assert seen["collection_modules"] == []
    # The core's own imports were renamed too: restore's RbdError is backurne_core's.
    assert seen["restore_imports_rbd_from"].startswith("backurne_core.ceph.")
