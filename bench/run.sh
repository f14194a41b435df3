#!/usr/bin/env bash
# `make bench`: start the lab (no-op when it runs), run the benchmarks, print a summary.
#
#   bench/run.sh [--full]         --full: orchestration at N = 50, 200 and 1000 (default 50, 200;
#                                 N=1000 adds ~20-40 min on 2 cores), 1 GiB verification image
#   BENCH_OUT=DIR                 where the outputs go (default: a new /tmp/backurne-bench.XXXXXX)
#   BENCH_TRANSFER_ARGS="…"       extra arguments of bench/transfer.py      (e.g. "--reps 4")
#   BENCH_ORCHESTRATION_ARGS="…"  extra arguments of bench/orchestration.py (e.g. "--noop-reps 3")
#   BENCH_VERIFY_ARGS="…"         extra arguments of bench/verify.py        (e.g. "--reps 3")
#   BENCH_ENGINE_ARGS="…"         extra arguments of bench/engine.py        (e.g. "--workers 2")
#   BENCH_BWLIMIT_ARGS="…"        extra arguments of bench/bwlimit.py       (e.g. "--limit-mib 32")
#   BENCH_RESTORE_ARGS="…"        extra arguments of bench/restore.py       (e.g. "--reps 2")
#   BENCH_MAP_ARGS="…"            extra arguments of bench/map.py           (e.g. "--reps 5")
#   BENCH_FIXEDCOST_ARGS="…"      extra arguments of bench/fixedcost.py     (e.g. "--baseline DIR")
#
# Every benchmark runs even if one fails; the exit status says whether all succeeded.
# A missed target is not a failure: the benchmarks print ratios, they do not assert them.
set -euo pipefail
FULL=0
if [[ "${1:-}" == "--full" ]]; then
    FULL=1
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="$REPO/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "run.sh: $PY missing: run 'make venv' (or 'make bench', which builds it) first" >&2
    exit 2
fi
export PYTHONPATH="$REPO/collections${PYTHONPATH:+:$PYTHONPATH}"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/backurne-bench.XXXXXX)}"
mkdir -p "$OUT"

echo "== lab"
tests/lab/lab.sh up

status=0
read -r -a transfer_args <<<"${BENCH_TRANSFER_ARGS:-}"
read -r -a orchestration_args <<<"${BENCH_ORCHESTRATION_ARGS:-}"
read -r -a verify_args <<<"${BENCH_VERIFY_ARGS:-}"
read -r -a engine_args <<<"${BENCH_ENGINE_ARGS:-}"
read -r -a bwlimit_args <<<"${BENCH_BWLIMIT_ARGS:-}"
read -r -a restore_args <<<"${BENCH_RESTORE_ARGS:-}"
read -r -a map_args <<<"${BENCH_MAP_ARGS:-}"
read -r -a fixedcost_args <<<"${BENCH_FIXEDCOST_ARGS:-}"
if [[ "$FULL" == 1 ]]; then
    orchestration_args=(--sizes 50,200,1000 "${orchestration_args[@]}")
    verify_args=(--size-mib 1024 "${verify_args[@]}")
    engine_args=(--sizes 50,300,1000 "${engine_args[@]}")
fi

# Progress goes to the terminal (stderr); each report goes to a file, printed in the summary.
echo "== bench/transfer.py (~5-7 min on 2 cores)"
if ! "$PY" bench/transfer.py --no-lab-up --json "$OUT/transfer.json" "${transfer_args[@]}" >"$OUT/transfer.txt"; then
    echo "bench/transfer.py FAILED (see above)" >>"$OUT/transfer.txt"
    status=1
fi

echo "== bench/bwlimit.py (~1-2 min on 2 cores)"
if ! "$PY" bench/bwlimit.py --no-lab-up --json "$OUT/bwlimit.json" "${bwlimit_args[@]}" >"$OUT/bwlimit.txt"; then
    echo "bench/bwlimit.py FAILED (see above)" >>"$OUT/bwlimit.txt"
    status=1
fi

echo "== bench/verify.py (~2-3 min on 2 cores)"
if ! "$PY" bench/verify.py --no-lab-up --json "$OUT/verify.json" "${verify_args[@]}" >"$OUT/verify.txt"; then
    echo "bench/verify.py FAILED (see above)" >>"$OUT/verify.txt"
    status=1
fi

echo "== bench/restore.py (1 GiB restore vs the raw pipe, ~3-5 min on 2 cores)"
if ! "$PY" bench/restore.py --no-lab-up --json "$OUT/restore.json" "${restore_args[@]}" >"$OUT/restore.txt"; then
    echo "bench/restore.py FAILED (see above)" >>"$OUT/restore.txt"
    status=1
fi

echo "== bench/map.py (backurne map to the first directory listing, ~1-2 min)"
if ! "$PY" bench/map.py --no-lab-up --json "$OUT/map.json" "${map_args[@]}" >"$OUT/map.txt"; then
    echo "bench/map.py FAILED (see above; it needs root)" >>"$OUT/map.txt"
    status=1
fi

echo "== bench/fixedcost.py (no-op and daily runs over 50 images, phase by phase, ~3-5 min)"
if ! "$PY" bench/fixedcost.py --no-lab-up --json "$OUT/fixedcost.json" "${fixedcost_args[@]}" >"$OUT/fixedcost.txt"; then
    echo "bench/fixedcost.py FAILED (see above)" >>"$OUT/fixedcost.txt"
    status=1
fi

echo "== bench/orchestration.py (~6-10 min on 2 cores; --full: +20-40 min)"
if ! "$PY" bench/orchestration.py --no-lab-up --json "$OUT/orchestration.json" "${orchestration_args[@]}" \
    >"$OUT/orchestration.txt"; then
    echo "bench/orchestration.py FAILED (see above)" >>"$OUT/orchestration.txt"
    status=1
fi

echo "== bench/orchestration.py --plan-only (N = 50, 200, 1000: one --check run each, ~2-4 min)"
if ! "$PY" bench/orchestration.py --no-lab-up --plan-only --sizes 50,200,1000 >"$OUT/plan.txt"; then
    echo "bench/orchestration.py --plan-only FAILED (see above)" >>"$OUT/plan.txt"
    status=1
fi

echo "== bench/engine.py (per changed small image: CLI pipeline vs stream engine, N = 50, 300; --full: + 1000)"
if ! "$PY" bench/engine.py --no-lab-up --json "$OUT/engine.json" "${engine_args[@]}" >"$OUT/engine.txt"; then
    echo "bench/engine.py FAILED (see above)" >>"$OUT/engine.txt"
    status=1
fi

model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo
echo "================================ backurne benchmarks ================================"
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; other work on the machine makes absolute times noise)"
echo "machine: nproc $(nproc), ${model:-unknown CPU}, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "commit:  $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
cat "$OUT/transfer.txt"
echo
cat "$OUT/bwlimit.txt"
echo
cat "$OUT/verify.txt"
echo
cat "$OUT/restore.txt"
echo
cat "$OUT/map.txt"
echo
cat "$OUT/fixedcost.txt"
echo
cat "$OUT/orchestration.txt"
echo
cat "$OUT/plan.txt"
echo
cat "$OUT/engine.txt"
echo
echo "outputs (text + JSON): $OUT"
exit "$status"
