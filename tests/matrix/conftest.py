"""The compatibility matrix (scripts/compat.sh, `make compat`) reuses the integration suite's lab
fixtures and playbook helpers: one lab, one namespace per run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(INTEGRATION))  # playbook_helpers

# The integration conftest under a name of its own (two modules named "conftest" would clash).
_spec = importlib.util.spec_from_file_location("backurne_integration_conftest", INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_integration = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _integration
_spec.loader.exec_module(_integration)

lab = _integration.lab
ns = _integration.ns
