#!/usr/bin/env bash
# Runs the test suites. `all` is what `make test` (and so CI) runs: every suite, the lab started
# once and stopped on exit, also on failure. Any suite failing fails the run; pytest's exit 5
# ("no tests collected") is a failure like any other non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COLLECTION=$ROOT/collections/ansible_collections/backurne/rbd
export PATH=$ROOT/.venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$ROOT/collections
export PYTHONPATH=$ROOT/collections${PYTHONPATH:+:$PYTHONPATH}
export ANSIBLE_CONFIG=$ROOT/ansible.cfg

summary=()
step() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== ${name}"
  if "$@"; then
    summary+=("ok      ${name} ($((SECONDS - t0)) s)")
  else
    local rc=$?
    summary+=("FAILED  ${name} ($((SECONDS - t0)) s, exit ${rc})")
    print_summary
    exit "$rc"
  fi
}
print_summary() {
  echo "=== summary"
  printf '%s\n' "${summary[@]}"
}

run_unit() {
  pytest -q -p no:cacheprovider "$COLLECTION/tests/unit" tests/cli
}
run_ruff() {
  ruff check "$COLLECTION" src tests bench scripts && ruff format --check "$COLLECTION" src tests bench scripts
}
run_sanity() {
  bash scripts/offline-get-pip.sh "$ROOT/.venv/bin/python"
  (cd "$COLLECTION" && ansible-test sanity --venv --python 3.11 --requirements --color no)
}
run_lint() {
  ansible-lint  # settings in .ansible-lint: production profile, offline
}
lab_up() {
  tests/lab/lab.sh up
}
run_integration() {
  pytest -q -p no:cacheprovider --durations=25 tests/integration
}
run_molecule() {
  # Unmanaged instances are never destroyed, so molecule would remember "already prepared"
  # from an earlier run and skip prepare: start from a clean scenario state every time.
  (cd "$ROOT" && molecule reset --scenario-name default && molecule test --scenario-name default)
}

# The compatibility matrix (scripts/compat.sh): node Python 3.9/3.13, ansible-core 2.16-2.19.
run_compat_python() {
  bash scripts/compat.sh python
}
run_compat_ansible() {
  bash scripts/compat.sh ansible
}

what=${1:-all}
case "$what" in
  unit) step ruff run_ruff; step unit run_unit ;;
  sanity) step sanity run_sanity ;;
  lint) step ansible-lint run_lint ;;
  integration) step lab-up lab_up; step integration run_integration ;;
  molecule) step lab-up lab_up; step molecule run_molecule ;;
  compat) step lab-up lab_up; step compat-python run_compat_python; step compat-ansible run_compat_ansible ;;
  compat-python) step lab-up lab_up; step compat-python run_compat_python ;;
  compat-ansible) step lab-up lab_up; step compat-ansible run_compat_ansible ;;
  all)
    trap 'tests/lab/lab.sh down >/dev/null 2>&1 || true' EXIT
    step ruff run_ruff
    step unit run_unit
    step lab-up lab_up
    step integration run_integration
    step molecule run_molecule
    step compat-python run_compat_python
    step compat-ansible run_compat_ansible
    step ansible-lint run_lint
    step sanity run_sanity
    ;;
  *) echo "usage: $0 all|unit|sanity|lint|integration|molecule|compat|compat-python|compat-ansible" >&2; exit 2 ;;
esac
print_summary
