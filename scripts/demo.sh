#!/usr/bin/env bash
# `make demo`: start the lab, seed a few images with real data on the live cluster, run the backup
# playbook twice (a full backup, then an incremental one after changing data), verify checksums on
# both sides, show what the backup cluster holds, and browse the newest backup's files read-only
# through the backurne CLI (clone + rbd-fuse + read-only loop mount, unmapped at the end). Safe to run again: it re-seeds nothing that
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
