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

# --- Ceph version compatibility: the core integration tests with each cluster on another Ceph
# version (tests/lab/lab.sh BACKURNE_LAB_CEPH_LIVE/_BACKUP; 18 and 20 run in Debian chroots built
# once per machine under /var/cache/backurne-lab/chroots). Pairs are live:backup.
COMPAT_CEPH_PAIRS=${BACKURNE_COMPAT_CEPH_PAIRS:-18:16 20:18}
COMPAT_CEPH_LAB_DIR=${BACKURNE_COMPAT_CEPH_LAB_DIR:-${BACKURNE_LAB_DIR:-/tmp/backurne-lab}-compat-ceph}
COMPAT_CEPH_LIVE_IP=${BACKURNE_COMPAT_CEPH_LIVE_IP:-127.0.0.13}
COMPAT_CEPH_BACKUP_IP=${BACKURNE_COMPAT_CEPH_BACKUP_IP:-127.0.0.14}
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

what=${1:-all}
case "$what" in
  unit) step ruff run_ruff; step unit run_unit ;;
  sanity) step sanity run_sanity ;;
  lint) step ansible-lint run_lint ;;
  integration) step lab-up lab_up; step integration run_integration ;;
  molecule) step lab-up lab_up; step molecule run_molecule ;;
  compat-ceph)
    trap 'compat_ceph_down >/dev/null 2>&1 || true' EXIT
    step compat-ceph run_compat_ceph
    ;;
  all)
    trap 'tests/lab/lab.sh down >/dev/null 2>&1 || true; compat_ceph_down >/dev/null 2>&1 || true' EXIT
    compat_ceph_prebuild
    step ruff run_ruff
    step unit run_unit
    step lab-up lab_up
    step integration run_integration
    step molecule run_molecule
    step ansible-lint run_lint
    step sanity run_sanity
    step compat-ceph run_compat_ceph
    ;;
  *) echo "usage: $0 all|unit|sanity|lint|integration|molecule|compat-ceph" >&2; exit 2 ;;
esac
print_summary
