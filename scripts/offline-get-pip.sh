#!/usr/bin/env bash
# ansible-test's --venv/--requirements bootstraps pip in each sanity venv by downloading a
# get-pip script from a host this machine cannot reach. It first looks in its cache for
# ~/.ansible/test/cache/get_pip_<ver>.py, so we put a tiny stand-in there that installs the
# pip wheel fetched from PyPI (which is reachable) instead.
set -euo pipefail
PY=${1:-python3}
PIP_VERSION=24.2
cache="${HOME}/.ansible/test/cache"
wheel_dir="${cache}/pip-wheel"
script="${cache}/get_pip_${PIP_VERSION//./_}.py"
mkdir -p "$wheel_dir"
wheel=$(ls "$wheel_dir"/pip-"${PIP_VERSION}"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  "$PY" -m pip download -q --no-deps -d "$wheel_dir" "pip==${PIP_VERSION}"
  wheel=$(ls "$wheel_dir"/pip-"${PIP_VERSION}"-*.whl | head -n1)
fi
cat > "$script" <<PYEOF
# Stand-in for get-pip.py written by backurne's scripts/offline-get-pip.sh.
import sys

WHEEL = "${wheel}"
sys.path.insert(0, WHEEL)
from pip._internal.cli.main import main  # noqa: E402

dropped = ("--no-setuptools", "--no-wheel")
rest = [a for a in sys.argv[1:] if a not in dropped and not a.startswith("pip==")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", WHEEL, *rest]))
PYEOF
echo "offline get-pip ready: $script"
