#!/usr/bin/env bash
# Debian chroots that carry a newer Ceph than the host's (bookworm: 16.2) for the lab:
#
#   tests/lab/chroot.sh build VERSION   build (once) the chroot for Ceph VERSION (18 or 20)
#   tests/lab/chroot.sh path VERSION    print its directory (built or not)
#   tests/lab/chroot.sh suite VERSION   print the Debian suite that carries it
#
# Built with debootstrap from the apt mirror the host already uses, cached under
# $BACKURNE_LAB_CHROOT_CACHE (default /var/cache/backurne-lab/chroots/<suite>) and never
# modified afterwards: each lab mounts it read-only as the lower layer of an overlay
# (tests/lab/lab.sh). A build is done in a temporary directory and renamed when
# complete, under a lock: an interrupted build leaves no half chroot behind, and two
# builds at once (CI prebuild + lab up) do the work once.
set -euo pipefail
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

CACHE=${BACKURNE_LAB_CHROOT_CACHE:-/var/cache/backurne-lab/chroots}
# what the chroot carries: Ceph daemons + tools of that version, and what the lab's
# node needs to run the modules (sshd, the modules' python3 with rbd/rados, zstd, xxhsum)
CHROOT_PACKAGES=(ceph-mon ceph-mgr ceph-osd ceph-common python3-rbd python3-rados
                 openssh-server openssh-client zstd xxhash procps)
# Bumped when the recipe changes: a cache built by an older recipe is rebuilt.
RECIPE=1

log() { printf '[chroot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[chroot] ERROR: %s\n' "$*" >&2; exit 1; }

suite_of() { # ceph major version -> Debian suite
    case "$1" in
        18) echo trixie ;;   # 18.2.7 (reef)
        20) echo forky ;;    # 20.2.4 (tentacle)
        *) die "no chroot for Ceph $1 (known: 18, 20; 16 is the host's)" ;;
    esac
}

chroot_dir() { printf '%s/%s\n' "$CACHE" "$(suite_of "$1")"; }

# the mirror apt on the host uses (deb822 sources first, then a one-line list)
host_mirror() {
    local m
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n "$m" ]] || m=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [[ -n "$m" ]] || die "no apt mirror found in /etc/apt/sources.list{,.d}"
    printf '%s\n' "${m%/}"
}

ready() { # dir: a complete build of this recipe
    [[ "$(cat "$1/.backurne-lab-recipe" 2>/dev/null)" == "$RECIPE" ]]
}

# bind mounts the package install needs; umounted by the caller's trap
mount_build_fs() { # root
    local r=$1 m
    for m in proc sys dev dev/pts; do
        mount --bind "/$m" "$r/$m"
    done
}
umount_build_fs() { # root
    local r=$1 m
    for m in dev/pts dev sys proc; do
        if mountpoint -q "$r/$m" 2>/dev/null; then umount "$r/$m" || umount -l "$r/$m"; fi
    done
}

in_root() { # root command...
    local r=$1
    shift
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
export -f in_root

# Reef's mgr modules import bcrypt (PyO3), which cannot load in the mgr's
# subinterpreters on trixie: 13 always-on modules fail (HEALTH_ERR). Lab-only patch.
patch_reef_mgr() { # root
    local r=$1 f=/usr/share/ceph/mgr/mgr_util.py
    grep -q '^import bcrypt$' "$r$f" || return 0
    in_root "$r" dpkg-divert --local --rename --divert "$f.distrib" --add "$f" >&2
    sed 's/^import bcrypt$/try:\n    import bcrypt  # backurne lab: PyO3 cannot load in mgr subinterpreters\nexcept ImportError:\n    bcrypt = None/' \
        "$r$f.distrib" >"$r$f"
}

build_into() { # version tmpdir
    local version=$1 tmp=$2 suite mirror script=()
    suite=$(suite_of "$version")
    mirror=$(host_mirror)
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        # (the other suite's build or lab.sh may hold the dpkg lock: wait for it)
        timeout 600 apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends debootstrap >&2
    }
    # bookworm's debootstrap has no script for forky (testing): sid's is the same
    [[ -e "/usr/share/debootstrap/scripts/$suite" ]] || script=(/usr/share/debootstrap/scripts/sid)
    if [[ ! -e "$tmp/.backurne-lab-debootstrap-ok" ]]; then
        log "debootstrap $suite from $mirror into $tmp"
        timeout 1800 debootstrap --variant=minbase "$suite" "$tmp" "$mirror" "${script[@]}" >&2
        touch "$tmp/.backurne-lab-debootstrap-ok"
    else
        log "reusing the debootstrap of an interrupted build: $tmp"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod +x "$tmp/usr/sbin/policy-rc.d"
    case "$suite" in
        trixie) grep -q trixie-security "$tmp/etc/apt/sources.list" \
            || echo "deb ${mirror%/debian}/debian-security trixie-security main" >>"$tmp/etc/apt/sources.list" ;;
        # testing's Release file on a snapshot mirror can be past its Valid-Until
        forky) echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99no-valid-until" ;;
    esac
    mount_build_fs "$tmp"
    log "installing ${CHROOT_PACKAGES[*]} in $suite"
    timeout 1800 bash -c 'in_root "$@"' _ "$tmp" sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@" && apt-get clean' \
        _ "${CHROOT_PACKAGES[@]}" >&2
    umount_build_fs "$tmp"
    [[ "$version" == 18 ]] && patch_reef_mgr "$tmp"
    # what sshd and the lab expect inside
    mkdir -p "$tmp/run/sshd" "$tmp/root/.ansible/tmp"
    chmod 755 "$tmp/run/sshd"
    in_root "$tmp" ceph --version >"$tmp/.backurne-lab-ceph-version"
    rm -f "$tmp/.backurne-lab-debootstrap-ok"
    echo "$RECIPE" >"$tmp/.backurne-lab-recipe"
}

cmd_build() { # version
    local version=$1 dir tmp start=$SECONDS
    dir=$(chroot_dir "$version")
    ((EUID == 0)) || die "building a chroot needs root"
    mkdir -p "$CACHE"
    exec 8>"$CACHE/.$(basename "$dir").lock"
    flock -w 3600 8 || die "could not lock $CACHE/.$(basename "$dir").lock within 3600 s"
    if ready "$dir"; then
        log "Ceph $version chroot ready: $dir ($(cat "$dir/.backurne-lab-ceph-version"))"
        return 0
    fi
    # an older recipe's chroot still under a running lab's overlay is not pulled from under it
    if [[ -e "$dir" ]] && grep -qF "lowerdir=$dir," /proc/self/mountinfo; then
        die "$dir (an older recipe) is in use by a running lab: take that lab down first"
    fi
    # leftovers of an interrupted build (mounts first: never rm -rf through a bind of /dev);
    # a completed debootstrap (network-bound, minutes) is kept and reused
    local reuse=''
    for tmp in "$dir".tmp.* "$dir".old; do
        [[ -e "$tmp" ]] || continue
        umount_build_fs "$tmp"
        if grep -qF " $tmp/" /proc/mounts; then die "$tmp still has mounts; not removing it"; fi
        if [[ -z "$reuse" && "$tmp" != "$dir.old" && -e "$tmp/.backurne-lab-debootstrap-ok" ]]; then
            reuse=$tmp
            continue
        fi
        rm -rf --one-file-system -- "$tmp"
    done
    tmp=${reuse:-$(mktemp -d "$dir.tmp.XXXXXX")}
    chmod 755 "$tmp"
    trap 'umount_build_fs "'"$tmp"'"' EXIT
    build_into "$version" "$tmp"
    trap - EXIT
    [[ ! -e "$dir" ]] || mv -T "$dir" "$dir.old"
    mv -T "$tmp" "$dir"
    rm -rf --one-file-system -- "$dir.old"
    log "Ceph $version chroot built in $((SECONDS - start)) s: $dir ($(cat "$dir/.backurne-lab-ceph-version"))"
}

main() {
    (($# == 2)) || die "usage: $0 build|path|suite VERSION"
    case "$1" in
        build) cmd_build "$2" ;;
        path) chroot_dir "$2" ;;
        suite) suite_of "$2" ;;
        *) die "usage: $0 build|path|suite VERSION" ;;
    esac
}

main "$@"
