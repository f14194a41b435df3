#!/usr/bin/env bash
# Debian packages the controller side needs before the virtualenv can be built. The lab script
# (tests/lab/lab.sh) installs the Ceph and ssh packages it needs itself.
set -euo pipefail
# rbd-fuse, util-linux (losetup, partx, blkid, mount), e2fsprogs, xfsprogs: file-level access to
# a backup snapshot (backurne map/extract) and the tests that make filesystems to map.
# chromium, chromium-driver: the web console's browser tests (selenium drives them; nothing downloaded at test time).
# python3-proxmoxer: the Proxmox modules run with the nodes' /usr/bin/python3 (a PVE node has it too).
wanted=(python3 python3-venv python3-pip git make openssh-client zstd xxhash procps
  rbd-fuse util-linux e2fsprogs xfsprogs python3-proxmoxer chromium chromium-driver)
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then echo "need root to install ${missing[*]}" >&2; exit 1; fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
