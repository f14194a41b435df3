#!/usr/bin/env bash
# `make demo`: start the lab, seed a few images with real data on the live cluster, run the backup
# playbook twice (a full backup, then an incremental one after changing data), verify checksums on
# both sides, show what the backup cluster holds, and browse the newest backup's files read-only
# through the backurne CLI (clone + rbd-fuse + read-only loop mount, unmapped at the end), and start the web console
# (backurne-api, left running; it prints the URL and a demo token). Safe to run again: it re-seeds nothing that
# exists, and the second run of the day still shows an incremental (forced) backup.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH=$ROOT/.venv/bin:$PATH
export ANSIBLE_CONFIG=$ROOT/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH=$ROOT/collections

tests/lab/lab.sh up
eval "$(tests/lab/lab.sh env)"
live_rbd=(rbd -c "$CEPH_LIVE_CONF" --id admin)
backup_rbd=(rbd -c "$CEPH_BACKUP_CONF" --id admin)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

seed_fs_image() { # name size_mb source_dir
  local name=$1 size=$2 src=$3
  if "${live_rbd[@]}" info "rbd/$name" >/dev/null 2>&1; then return; fi
  echo "seeding rbd/$name: ext4 filesystem of ${size} MiB with the files of $src"
  truncate -s "${size}M" "$work/$name.img"
  mkfs.ext4 -q -F -d "$src" "$work/$name.img"
  "${live_rbd[@]}" import --no-progress "$work/$name.img" "rbd/$name"
  rm -f "$work/$name.img"
}
seed_fs_image demo-web 64 /usr/share/doc/openssh-client
seed_fs_image demo-docs 96 /usr/share/doc/ceph-common
if ! "${live_rbd[@]}" info rbd/demo-db >/dev/null 2>&1; then
  echo "seeding rbd/demo-db: 32 MiB written by rbd bench"
  "${live_rbd[@]}" create --size 64M rbd/demo-db
  "${live_rbd[@]}" bench --io-type write --io-size 64K --io-total 32M --io-pattern rand rbd/demo-db >/dev/null
fi

run_backup() {
  ansible-playbook -i inventories/lab playbooks/backup.yml -e backurne_verify=true "$@"
}

echo
echo "### 1. backup run (a full backup of every new image, an incremental one otherwise)"
run_backup

echo
echo "### 2. change 4 MiB of demo-db, then a forced run: only the changed extents travel"
"${live_rbd[@]}" bench --io-type write --io-size 64K --io-total 4M --io-pattern rand rbd/demo-db >/dev/null
run_backup -e backurne_force=true

echo
echo "### 3. what the backup cluster holds"
ansible-playbook -i inventories/lab playbooks/list.yml

echo
echo "### 4. browse a backup without restoring it (backurne CLI: clone + read-only mount)"
scripts/lab-cli-config.sh > "$work/backurne.yml"
export BACKURNE_CONFIG=$work/backurne.yml
backurne ls
backurne ls 'live;demo-web;None'
mapped=$(backurne --json map 'live;demo-web;None' latest)
echo "$mapped"
mountpoint=$(printf '%s' "$mapped" | /usr/bin/python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["filesystems"][0]["mountpoint"])' 2>/dev/null || true)
if [ -n "$mountpoint" ]; then
  echo "files in the newest backup of demo-web ($mountpoint):"
  ls "$mountpoint" | head -n 10
fi
backurne unmap 'live;demo-web;None' latest

echo
echo "### 5. the web console (backurne-api on loopback, a demo token of scope operate)"
console_dir=$BACKURNE_LAB_DIR/demo-console
mkdir -p "$console_dir"
chmod 700 "$console_dir"
# A previous demo's service: stopped by its own pid file, and only if it is that service.
if [ -f "$console_dir/api.pid" ]; then
  old=$(cat "$console_dir/api.pid")
  if tr '\0' ' ' < "/proc/$old/cmdline" 2>/dev/null | grep -qF -- "$console_dir/backurne.yml"; then
    kill "$old" 2>/dev/null || true
    sleep 1
  fi
fi
# The demo's own token, made once and kept in the lab directory (only root reads it).
if [ ! -s "$console_dir/token" ]; then
  (umask 077; /usr/bin/python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$console_dir/token")
fi
printf '%s\n' "$(cat "$console_dir/token")" | backurne-api --hash-token --scope operate --label demo > "$console_dir/tokens"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
scripts/lab-cli-config.sh | /usr/bin/python3 -c '
import json, sys
document = json.loads(sys.stdin.read().split("\n", 1)[1])
document["api"] = {"tokens_file": sys.argv[1], "anonymous": False, "listen": "127.0.0.1:" + sys.argv[2]}
document["profiles"] = {"daily": {"count": 30}}
print(json.dumps(document, indent=2))' "$console_dir/tokens" "$port" > "$console_dir/backurne.yml"
nohup backurne-api --config "$console_dir/backurne.yml" > "$console_dir/api.log" 2>&1 < /dev/null &
echo $! > "$console_dir/api.pid"
# Wait until it answers (the token goes in a header read from the file, never on a command line).
/usr/bin/python3 - "$port" "$console_dir/token" <<'PY' || echo "backurne-api did not answer yet: see $console_dir/api.log"
import sys, time, urllib.request
port, token = sys.argv[1], open(sys.argv[2]).read().strip()
for _ in range(100):
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(request, timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PY
echo "web console: http://127.0.0.1:$port/  (log in with the demo token below; docs/web-console.md)"
echo "demo token:  $(cat "$console_dir/token")"
echo "stop it:     kill \$(cat $console_dir/api.pid)    (log: $console_dir/api.log)"
