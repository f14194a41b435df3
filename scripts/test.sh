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

# --- Ceph version compatibility: the core integration tests with each cluster on another Ceph
# version (tests/lab/lab.sh BACKURNE_LAB_CEPH_LIVE/_BACKUP; 18 and 20 run in Debian chroots built
# once per machine under /var/cache/backurne-lab/chroots). Pairs are live:backup.
COMPAT_CEPH_PAIRS=${BACKURNE_COMPAT_CEPH_PAIRS:-18:16 20:18}
COMPAT_CEPH_LAB_DIR=${BACKURNE_COMPAT_CEPH_LAB_DIR:-${BACKURNE_LAB_DIR:-/tmp/backurne-lab}-compat-ceph}
COMPAT_CEPH_LIVE_IP=${BACKURNE_COMPAT_CEPH_LIVE_IP:-127.0.0.17}
COMPAT_CEPH_BACKUP_IP=${BACKURNE_COMPAT_CEPH_BACKUP_IP:-127.0.0.18}
# full, incremental, verify, restore, retention, map, in-process listings vs `rbd ls -l`, and
# what differs between versions (test_ceph_versions.py): kept small, it runs once per pair
COMPAT_CEPH_TESTS=(
  tests/integration/test_ceph_versions.py
  tests/integration/test_backup_playbook.py::test_full_then_incremental
  tests/integration/test_backup_playbook.py::test_expiry_on_both_sides_with_injected_now
  tests/integration/test_verify_playbook.py::test_verify_passes_then_catches_a_tampered_backup
  tests/integration/test_restore_playbook.py::test_restore_new_image_equals_backup_snapshot
  tests/integration/test_cli_mapping.py::test_map_reads_files_back_and_unmap_leaves_nothing
  tests/integration/test_rados_direct.py::test_same_listing_as_rbd_ls_for_every_snapshot_kind
)
COMPAT_CEPH_PREBUILD_PIDS=()
compat_ceph_versions() { # the chroot versions the pairs need (16 is the host's)
  local pair
  for pair in $COMPAT_CEPH_PAIRS; do printf '%s\n%s\n' "${pair%%:*}" "${pair##*:}"; done | grep -vx 16 | sort -u
}
compat_ceph_prebuild() {
  # debootstrap + apt are network-bound (minutes, once per machine): overlap them with the
  # other stages; a no-op when the cached chroots exist
  local v
  mkdir -p "$COMPAT_CEPH_LAB_DIR.logs"
  for v in $(compat_ceph_versions); do
    tests/lab/chroot.sh build "$v" >"$COMPAT_CEPH_LAB_DIR.logs/chroot-$v.log" 2>&1 &
    COMPAT_CEPH_PREBUILD_PIDS+=($!)
  done
}
compat_ceph_lab() { # live backup lab.sh-args...
  local live=$1 backup=$2
  shift 2
  BACKURNE_LAB_DIR=$COMPAT_CEPH_LAB_DIR BACKURNE_LAB_LIVE_IP=$COMPAT_CEPH_LIVE_IP \
    BACKURNE_LAB_BACKUP_IP=$COMPAT_CEPH_BACKUP_IP BACKURNE_LAB_CEPH_LIVE=$live \
    BACKURNE_LAB_CEPH_BACKUP=$backup "$@"
}
compat_ceph_down() {
  compat_ceph_lab 16 16 tests/lab/lab.sh down
}
run_compat_ceph() {
  local pid pair live backup t0 rc=0
  for pid in "${COMPAT_CEPH_PREBUILD_PIDS[@]}"; do
    # a failed prebuild is retried (and reported) by lab.sh up
    wait "$pid" || echo "chroot prebuild failed: $(tail -n 5 "$COMPAT_CEPH_LAB_DIR".logs/chroot-*.log)"
  done
  for pair in $COMPAT_CEPH_PAIRS; do
    live=${pair%%:*}
    backup=${pair##*:}
    t0=$SECONDS
    echo "--- Ceph $live (live) -> Ceph $backup (backup)"
    if compat_ceph_lab "$live" "$backup" tests/lab/lab.sh up \
      && compat_ceph_lab "$live" "$backup" pytest -q -p no:cacheprovider "${COMPAT_CEPH_TESTS[@]}"; then
      echo "--- Ceph $live -> $backup: passed ($((SECONDS - t0)) s)"
    else
      rc=1
      echo "--- Ceph $live -> $backup: FAILED ($((SECONDS - t0)) s)"
    fi
  done
  compat_ceph_down
  return "$rc"
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
  molecule) step lab-up lab_up 1; step molecule run_molecule ;;
  compat-ceph)
    trap 'compat_ceph_down >/dev/null 2>&1 || true' EXIT
    step compat-ceph run_compat_ceph
    ;;
  compat) step lab-up lab_up 1; step compat-python run_compat_python; step compat-ansible run_compat_ansible ;;
  compat-python) step lab-up lab_up 1; step compat-python run_compat_python ;;
  compat-ansible) step lab-up lab_up 1; step compat-ansible run_compat_ansible ;;
  all)
    trap 'labs_down; compat_ceph_down >/dev/null 2>&1 || true' EXIT
    compat_ceph_prebuild
    step ruff run_ruff
    step unit run_unit
    step lab-up lab_up
    step integration run_integration
    step molecule run_molecule
    step compat-python run_compat_python
    step compat-ansible run_compat_ansible
    labs_down # the integration labs are done: their daemons would only slow the stages below
    step ansible-lint run_lint
    step sanity run_sanity
    step compat-ceph run_compat_ceph
    ;;
  *) echo "usage: $0 all|unit|sanity|lint|integration|molecule|compat|compat-python|compat-ansible|compat-ceph" >&2; exit 2 ;;
esac
print_summary
