#!/usr/bin/env bash
# The compatibility matrix (issue #14), `make compat`; `make test` runs it too.
#   python  - managed nodes on Python 3.9 and 3.13: the core's unit tests (module_utils, modules)
#             under each, then a real backup (full + incremental) with the lab's nodes running the
#             modules under each (no python3-rados there: the CLI path), checked by checksum.
#   ansible - the controller on ansible-core 2.16, 2.17, 2.18, 2.19: the modules', callback's and
#             filters' unit tests under each, then a real backup run per version (report printed).
# Venvs are built on first use (in parallel) under .venv-compat/ and rebuilt when their
# requirements change. Uses the running lab (tests/lab/lab.sh up, started if needed).
# One "ok"/"FAILED" line per cell; any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COLLECTION=$ROOT/collections/ansible_collections/backurne/rbd
UNIT=$COLLECTION/tests/unit/plugins
VENVS=$ROOT/.venv-compat
export PATH=$ROOT/.venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$ROOT/collections
export ANSIBLE_CONFIG=$ROOT/ansible.cfg

# Node Pythons (minor versions) and ansible-core releases (the exact ones proven, README).
NODE_PYTHONS=(3.9 3.13)
ANSIBLE_CORES=(2.16.19 2.17.14 2.18.19 2.19.14)
# The controller venvs: Debian's python3 (3.11), which every one of those releases supports.
CONTROLLER_PYTHON=/usr/bin/python3

lines=()
cell() {  # cell NAME COMMAND...: run, note one ok/FAILED line
  local name=$1; shift
  local t0=$SECONDS
  if "$@"; then
    lines+=("ok      ${name} ($((SECONDS - t0)) s)")
  else
    lines+=("FAILED  ${name} ($((SECONDS - t0)) s, exit $?)")
  fi
}

# The interpreter for a minor version: $BACKURNE_COMPAT_PYTHON_3_9 etc., else pyenv's newest
# patch release, else pythonX.Y on PATH.
find_python() {
  local minor=$1 var="BACKURNE_COMPAT_PYTHON_${1//./_}"
  if [[ -n ${!var:-} ]]; then echo "${!var}"; return; fi
  local root=${PYENV_ROOT:-$HOME/.pyenv} found=""
  for candidate in "$root"/versions/"$minor".*/bin/python"$minor"; do
    [[ -x $candidate ]] && found=$candidate
  done
  if [[ -n $found ]]; then echo "$found"; return; fi
  command -v "python$minor" || { echo "compat: no Python $minor (set $var)" >&2; return 1; }
}

# ensure_venv DIR PYTHON PIP-ARGS...: (re)build DIR unless its stamp says it has exactly this.
ensure_venv() {
  local dir=$1 python=$2; shift 2
  local want
  want=$(printf '%s\n' "$python" "$@" | cat - "${REQ_FILES[@]}" | sha256sum | cut -d' ' -f1)
  if [[ -f $dir/.installed && $(cat "$dir/.installed") == "$want" ]]; then return 0; fi
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  echo "$want" >"$dir/.installed"
}
REQ_FILES=("$ROOT/requirements/compat-node.txt" "$ROOT/requirements/compat-controller.txt")

# Build every venv this run needs at once (pip mostly waits on the network and on unpacking).
build_venvs() {
  mkdir -p "$VENVS"
  local pids=() names=() spec python
  for spec in "$@"; do
    case $spec in
      py*) python=$(find_python "${spec#py}") || return 1
           ensure_venv "$VENVS/$spec" "$python" -r requirements/compat-node.txt >"$VENVS/$spec.log" 2>&1 & ;;
      ansible-*) ensure_venv "$VENVS/$spec" "$CONTROLLER_PYTHON" "ansible-core==${spec#ansible-}" \
                   -r requirements/compat-controller.txt >"$VENVS/$spec.log" 2>&1 & ;;
    esac
    pids+=($!); names+=("$spec")
  done
  local i rc=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "compat: building venv ${names[$i]} failed:" >&2; tail -20 "$VENVS/${names[$i]}.log" >&2; rc=1
    fi
  done
  return $rc
}

# The node-side unit tests under a node Python: module_utils and modules, with the target-side
# ansible.module_utils of the .venv's ansible-core on the path (as ansible-test units does).
unit_node() {
  local venv=$VENVS/py$1 shim=$VENVS/ansible-lib
  mkdir -p "$shim" && ln -sfn "$("$ROOT/.venv/bin/python" -c 'import ansible, os; print(os.path.dirname(ansible.__file__))')" "$shim/ansible"
  (cd "$VENVS" && PYTHONPATH=$ROOT/collections:$shim "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    "$UNIT/module_utils" "$UNIT/modules" >"$VENVS/unit-py$1.log" 2>&1) || { tail -30 "$VENVS/unit-py$1.log"; return 1; }
  tail -1 "$VENVS/unit-py$1.log"
}

# The controller-side unit tests (modules, callback, filters) under an ansible-core release.
unit_ansible() {
  local venv=$VENVS/ansible-$1
  (cd "$VENVS" && PYTHONPATH=$ROOT/collections "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    "$UNIT/modules" "$UNIT/callback" "$UNIT/filter" >"$VENVS/unit-ansible-$1.log" 2>&1) ||
    { tail -30 "$VENVS/unit-ansible-$1.log"; return 1; }
  tail -1 "$VENVS/unit-ansible-$1.log"
}

# matrix_run LOG NODE-PYTHONS ANSIBLES TEST: one cell of tests/matrix on the lab.
matrix_run() {
  local log=$VENVS/$1.log
  if BACKURNE_MATRIX_NODE_PYTHONS=$2 BACKURNE_MATRIX_ANSIBLE=$3 \
    pytest -q -p no:cacheprovider -s tests/matrix -k "$4" >"$log" 2>&1; then
    grep -E '^MATRIX|passed' "$log"
  else
    tail -60 "$log"; return 1
  fi
}

# In parallel, each unit run's exit status in $VENVS/NAME.rc (two cores: at most two at once).
parallel_units() {
  local pids=() spec
  for spec in "$@"; do
    case $spec in
      py*) (unit_node "${spec#py}"; echo $? >"$VENVS/unit-$spec.rc") >"$VENVS/unit-$spec.out" 2>&1 || true & ;;
      ansible-*) (unit_ansible "${spec#ansible-}"; echo $? >"$VENVS/unit-$spec.rc") >"$VENVS/unit-$spec.out" 2>&1 || true & ;;
    esac
    pids+=($!)
    if ((${#pids[@]} >= 2)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  wait
}
unit_result() { cat "$VENVS/unit-$1.out"; [[ $(cat "$VENVS/unit-$1.rc" 2>/dev/null) == 0 ]]; }

run_python() {
  local specs=() minor
  for minor in "${NODE_PYTHONS[@]}"; do specs+=("py$minor"); done
  cell "venvs (node Python ${NODE_PYTHONS[*]})" build_venvs "${specs[@]}" || true
  parallel_units "${specs[@]}"
  for minor in "${NODE_PYTHONS[@]}"; do
    cell "node Python $minor: unit tests (module_utils, modules)" unit_result "py$minor"
  done
  tests/lab/lab.sh up >/dev/null
  for minor in "${NODE_PYTHONS[@]}"; do
    cell "node Python $minor: backup run on the lab (CLI path), checksums" \
      matrix_run "lab-py$minor" "$minor=$(find_python "$minor")" "" test_backup_with_node_python
  done
}

run_ansible() {
  local specs=() version
  for version in "${ANSIBLE_CORES[@]}"; do specs+=("ansible-$version"); done
  cell "venvs (ansible-core ${ANSIBLE_CORES[*]})" build_venvs "${specs[@]}" || true
  parallel_units "${specs[@]}"
  for version in "${ANSIBLE_CORES[@]}"; do
    cell "ansible-core $version: unit tests (modules, callback, filters)" unit_result "ansible-$version"
  done
  tests/lab/lab.sh up >/dev/null
  for version in "${ANSIBLE_CORES[@]}"; do
    cell "ansible-core $version: backup playbook on the lab, report, checksums" \
      matrix_run "lab-ansible-$version" "" "${version%.*}=$VENVS/ansible-$version/bin" test_backup_with_ansible_core
  done
}

what=${1:-all}
case $what in
  python) run_python ;;
  ansible) run_ansible ;;
  all) run_python; run_ansible ;;
  *) echo "usage: $0 python|ansible|all" >&2; exit 2 ;;
esac
echo "=== compatibility matrix"
printf '%s\n' "${lines[@]}"
! printf '%s\n' "${lines[@]}" | grep -q '^FAILED'
