#!/usr/bin/env bash
# Removes every image (and its snapshots) of namespace rbd/molecule, then the namespace, on each
# cluster whose conf is given. Absent namespace: nothing to do.
set -euo pipefail
for conf in "$@"; do
  rbd=(rbd -c "$conf" --id admin)
  "${rbd[@]}" namespace ls rbd --format json | grep -q '"molecule"' || continue
  "${rbd[@]}" ls --pool rbd --namespace molecule --format json |
    python3 -c 'import json,sys; print("\0".join(json.load(sys.stdin)), end="")' |
    while IFS= read -r -d '' image || [ -n "$image" ]; do
      "${rbd[@]}" snap purge --no-progress --pool rbd --namespace molecule --image "$image"
      "${rbd[@]}" rm --no-progress --pool rbd --namespace molecule --image "$image"
    done
  "${rbd[@]}" namespace rm rbd/molecule
done
