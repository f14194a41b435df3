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
# One lab per integration worker (BACKURNE_TEST_WORKERS, default 2): a fault test breaks
# cluster-wide things (caps, quotas, stopped daemons) that would hit a neighbour's test on a
# shared lab. Lab 1 is BACKURNE_LAB_DIR/_LIVE_IP/_BACKUP_IP (molecule uses it too); lab k+1 is
# "$BACKURNE_LAB_DIR-(k+1)" on both addresses' last byte + 2k. BACKURNE_LABS
# ("DIR:LIVE_IP:BACKUP_IP ...", one per worker) overrides the lot.
WORKERS=${BACKURNE_TEST_WORKERS:-2}
export BACKURNE_LAB_DIR=${BACKURNE_LAB_DIR:-/tmp/backurne-lab}
export BACKURNE_LAB_LIVE_IP=${BACKURNE_LAB_LIVE_IP:-127.0.0.11}
export BACKURNE_LAB_BACKUP_IP=${BACKURNE_LAB_BACKUP_IP:-127.0.0.12}
lab_specs() {
  local k live=$BACKURNE_LAB_LIVE_IP backup=$BACKURNE_LAB_BACKUP_IP
  local specs=("$BACKURNE_LAB_DIR:$live:$backup")
  for ((k = 1; k < WORKERS; k++)); do
    specs+=("$BACKURNE_LAB_DIR-$((k + 1)):${live%.*}.$((${live##*.} + 2 * k)):${backup%.*}.$((${backup##*.} + 2 * k))")
  done
  echo "${specs[*]}"
}
export BACKURNE_LABS=${BACKURNE_LABS:-$(lab_specs)}
# the first lab is also the one of everything that runs without xdist (molecule, -n 0)
read -r first_lab _ <<<"$BACKURNE_LABS"
IFS=: read -r BACKURNE_LAB_DIR BACKURNE_LAB_LIVE_IP BACKURNE_LAB_BACKUP_IP <<<"$first_lab"
# lab.sh with one lab's variables: lab_sh DIR:LIVE_IP:BACKUP_IP up|down
lab_sh() {
  local dir live backup
  IFS=: read -r dir live backup <<<"$1"
  BACKURNE_LAB_DIR=$dir BACKURNE_LAB_LIVE_IP=$live BACKURNE_LAB_BACKUP_IP=$backup tests/lab/lab.sh "$2"
}
lab_up() { # [N]: the first N labs (default: all), all at once (the bootstrap mostly waits)
  local spec pids=() rc=0 labs
  read -r -a labs <<<"$BACKURNE_LABS"
  for spec in "${labs[@]:0:${1:-${#labs[@]}}}"; do
    (lab_sh "$spec" up 2>&1 | sed -u "s|^|[${spec%%:*}] |") &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done  # fail if any did not come up
  return "$rc"
}
labs_down() {
  local spec
  for spec in $BACKURNE_LABS; do lab_sh "$spec" down >/dev/null 2>&1 || true; done
}
run_integration() {
  local nlabs
  nlabs=$(wc -w <<<"$BACKURNE_LABS")
  if ((nlabs < 2)); then
    pytest -q -p no:cacheprovider --durations=25 tests/integration
    return
  fi
  # loadfile: a file runs whole in one worker (module fixtures built once); files go out
  # slowest first (conftest.py orders them by tests/integration/durations.json).
  pytest -q -p no:cacheprovider --durations=25 -n "$nlabs" --dist loadfile --no-loadscope-reorder \
    tests/integration
}
run_molecule() {
  # Unmanaged instances are never destroyed, so molecule would remember "already prepared"
  # from an earlier run and skip prepare: start from a clean scenario state every time.
  (cd "$ROOT" && molecule reset --scenario-name default && molecule test --scenario-name default)
}

what=${1:-all}
case "$what" in
  unit) step ruff run_ruff; step unit run_unit ;;
  sanity) step sanity run_sanity ;;
  lint) step ansible-lint run_lint ;;
  integration) step lab-up lab_up; step integration run_integration ;;
  molecule) step lab-up lab_up 1; step molecule run_molecule ;;
  all)
    trap labs_down EXIT
    step ruff run_ruff
    step unit run_unit
    step lab-up lab_up
    step integration run_integration
    step molecule run_molecule
    step ansible-lint run_lint
    step sanity run_sanity
    ;;
  *) echo "usage: $0 all|unit|sanity|lint|integration|molecule" >&2; exit 2 ;;
esac
print_summary
