"""backurne's core library for the CLI and the REST API, under a name of its own.

The core is the collection's ``plugins/module_utils`` (one copy of the code, the one the modules
run). The CLI and the API must not import it as ``ansible_collections.backurne.rbd...`` from
site-packages: a partial collection there sits on ``sys.path``, where ansible-core's collection
loader looks, and would shadow (or be shadowed by) an installed ``backurne.rbd``. So the
``backurne`` wheel ships those files as package data (``backurne_core/_module_utils``) and this
package serves them as ``backurne_core.ceph.rbd``, ``backurne_core.policy.naming``, ...: a
finder maps each name onto its file, and the loader rewrites the modules' absolute imports of
``ansible_collections.backurne.rbd.plugins.module_utils`` to ``backurne_core`` while compiling.
No ``ansible_collections`` name ever enters ``sys.modules`` or ``site-packages``.

From a source checkout (``pip install -e .``, ``PYTHONPATH=src``) the files are read in place
from the collection in the repository. Nothing is written next to them: the rewritten code is
never cached as bytecode, so a ``.pyc`` of the real module can never be confused with it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COLLECTION_PACKAGE = "ansible_collections.backurne.rbd.plugins.module_utils"
_HERE = Path(__file__).resolve().parent
# The wheel's copy (package data) first, then the collection of the checkout this file is in.
_CANDIDATES = (
    _HERE / "_module_utils",
    _HERE.parents[1] / "collections" / "ansible_collections" / "backurne" / "rbd" / "plugins" / "module_utils",
)


def _find_core_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "ceph" / "rbd.py").is_file():
            return candidate
    searched = ", ".join(str(c) for c in _CANDIDATES)
    raise ImportError(f"backurne_core: the collection's module_utils were not found (searched {searched})")


CORE_DIR = _find_core_dir()
# Submodules are served by _CoreFinder only (an empty __path__ keeps the path finder out).
__path__: list[str] = []


class _CoreLoader(importlib.machinery.SourceFileLoader):
    """Compile a core module with its collection imports renamed to backurne_core."""

    def get_code(self, fullname: str):  # type: ignore[override]
        # Never read nor write a bytecode cache: __pycache__ beside the source holds the
        # collection's own (unrewritten) bytecode.
        source = self.get_data(self.path).decode("utf-8")
        return compile(source.replace(COLLECTION_PACKAGE, __name__), self.path, "exec", dont_inherit=True)


class _CoreFinder(importlib.abc.MetaPathFinder):
    """Map backurne_core.A.B onto CORE_DIR/A/B.py (or CORE_DIR/A/B/__init__.py)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(__name__ + "."):
            return None
        relative = Path(*fullname.split(".")[1:])
        package_dir = CORE_DIR / relative
        if (package_dir / "__init__.py").is_file():
            init = package_dir / "__init__.py"
            return importlib.util.spec_from_file_location(
                fullname, init, loader=_CoreLoader(fullname, str(init)), submodule_search_locations=[]
            )
        module_file = CORE_DIR / relative.with_suffix(".py")
        if module_file.is_file():
            return importlib.util.spec_from_file_location(
                fullname, module_file, loader=_CoreLoader(fullname, str(module_file))
            )
        return None


if not any(isinstance(finder, _CoreFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _CoreFinder())
