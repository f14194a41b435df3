#!/usr/bin/env bash
# backurne test lab: two real single-node Ceph clusters ("live" and "backup")
# plus one sshd per "host", all on loopback addresses, all under $LAB_DIR.
#
#   tests/lab/lab.sh up      start (or repair) the lab; fast no-op when it runs
#   tests/lab/lab.sh down    stop everything the lab started, remove $LAB_DIR
#   tests/lab/lab.sh status  daemons, RSS, health, sshd; exit 0 iff all is up
#   tests/lab/lab.sh env     print the env.sh content (eval "$(lab.sh env)")
#
# Ceph version per cluster: BACKURNE_LAB_CEPH_LIVE / BACKURNE_LAB_CEPH_BACKUP = 16 (the
# host's packages, default), 18 or 20 (Debian trixie / forky in a chroot, tests/lab/chroot.sh:
# the cluster's daemons AND its node's sshd run in that chroot, so what runs on the node
# (modules, rbd, python3 3.13) is that Ceph version's).
#
# See tests/lab/README.md for the contract (paths) and the traps.
set -euo pipefail

export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

LAB_DIR=${BACKURNE_LAB_DIR:-/tmp/backurne-lab}
LAB_DIR=$(realpath -m -- "$LAB_DIR")
# addresses: env, else those of the lab already in $LAB_DIR, else defaults
lab_env_value() { # NAME: value exported by an existing $LAB_DIR/env.sh
    [[ -r "$LAB_DIR/env.sh" ]] || return 0
    sed -n "s/^export $1=\([0-9.]*\)\$/\1/p" "$LAB_DIR/env.sh"
}
LIVE_IP=${BACKURNE_LAB_LIVE_IP:-$(lab_env_value BACKURNE_LAB_LIVE_IP)}
LIVE_IP=${LIVE_IP:-127.0.0.11}
BACKUP_IP=${BACKURNE_LAB_BACKUP_IP:-$(lab_env_value BACKURNE_LAB_BACKUP_IP)}
BACKUP_IP=${BACKUP_IP:-127.0.0.12}
# Ceph major version per cluster: env, else the running lab's, else 16 (the host's)
CEPH_LIVE=${BACKURNE_LAB_CEPH_LIVE:-$(lab_env_value BACKURNE_LAB_CEPH_LIVE)}
CEPH_LIVE=${CEPH_LIVE:-16}
CEPH_BACKUP=${BACKURNE_LAB_CEPH_BACKUP:-$(lab_env_value BACKURNE_LAB_CEPH_BACKUP)}
CEPH_BACKUP=${CEPH_BACKUP:-16}
HOST_CEPH=16
CHROOT_SH="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)/chroot.sh"
SSH_PORT=2222
# memstore keeps the data in RAM; capped per OSD by memstore_device_bytes.
OSD_SIZE_MB=${BACKURNE_LAB_OSD_SIZE_MB:-3072}
# Bounded waits (seconds).
BOOT_TIMEOUT=${BACKURNE_LAB_BOOT_TIMEOUT:-120}
CMD_TIMEOUT=30

# ceph-mgr modules linked into each cluster's mgr_module_path (the mgr
# loads every module it finds there, enabled or not).
MGR_MODULES=${BACKURNE_LAB_MGR_MODULES:-balancer crash devicehealth orchestrator pg_autoscaler progress rbd_support status telemetry volumes iostat}
MGR_INITIAL_MODULES=${BACKURNE_LAB_MGR_INITIAL_MODULES:-iostat}

CLUSTERS=(live backup)
SSH_DIR="$LAB_DIR/ssh"
# stand-in Proxmox VE API (tests/pveapi), on the live address
REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
PVE_DIR="$LAB_DIR/pve"
PVE_PORT=8006
PVE_SERVER="$REPO_DIR/tests/pveapi/server.py"
PVE_FIXTURE="$REPO_DIR/tests/pveapi/fixture.json"
SSH_KEYS_CHANGED=0

PACKAGES=(ceph-mon ceph-mgr ceph-osd ceph-common rbd-nbd rbd-fuse python3-rbd
          python3-rados xxhash openssh-server openssh-client zstd e2fsprogs
          fuse2fs e2tools procps python3-venv iproute2
          openssl)  # openssl: the PVE stand-in's certificates

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

cluster_ip() {
    case "$1" in
        live) printf '%s\n' "$LIVE_IP" ;;
        backup) printf '%s\n' "$BACKUP_IP" ;;
        *) die "unknown cluster $1" ;;
    esac
}
cdir() { printf '%s/%s\n' "$LAB_DIR" "$1"; }
cconf() { printf '%s/%s/ceph.conf\n' "$LAB_DIR" "$1"; }

# --------------------------------------------------------------------------
# Ceph version per cluster. 16: the host's packages. 18/20: a Debian chroot
# (tests/lab/chroot.sh, cached, read-only) used as the lower layer of an
# overlay at $LAB_DIR/roots/<cluster>; the cluster's daemons and its node's
# sshd run chrooted there, $LAB_DIR and the repository are bind-mounted at
# their own paths, so every path in the confs is the same inside and out.
# --------------------------------------------------------------------------
ceph_version() { # cluster
    case "$1" in
        live) printf '%s\n' "$CEPH_LIVE" ;;
        backup) printf '%s\n' "$CEPH_BACKUP" ;;
        *) die "unknown cluster $1" ;;
    esac
}
check_versions() {
    local c v
    for c in "${CLUSTERS[@]}"; do
        v=$(ceph_version "$c")
        case "$v" in
            16 | 18 | 20) ;;
            *) die "BACKURNE_LAB_CEPH_${c^^}=$v: use 16 (the host's packages), 18 or 20" ;;
        esac
    done
}
chrooted() { [[ "$(ceph_version "$1")" != "$HOST_CEPH" ]]; }
node_root() { printf '%s/roots/%s\n' "$LAB_DIR" "$1"; } # the mount point (chrooted clusters)

# node_argv CLUSTER: the NUL-separated prefix that runs a command where that cluster's
# node runs its tools (nothing for the host's Ceph): mapfile -d '' N < <(node_argv c)
node_argv() {
    chrooted "$1" || return 0
    printf '%s\0' chroot "$(node_root "$1")" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 LC_ALL=C
}

mounts_under() { # dir: mount points at or below it, deepest first
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r
}

# the lower layer must be a complete build; builds it (once per machine) if missing
ensure_chroot() { # cluster
    local v
    v=$(ceph_version "$1")
    timeout 3600 "$CHROOT_SH" build "$v" || die "$1: building the Ceph $v chroot failed"
}

mount_node_root() { # cluster (idempotent)
    local c=$1 base lower root m
    base="$LAB_DIR/roots"
    root=$(node_root "$c")
    lower=$("$CHROOT_SH" path "$(ceph_version "$c")")
    if mountpoint -q "$root"; then
        # a root of another version (BACKURNE_LAB_CEPH_* changed): start over
        grep -qF "lowerdir=$lower," /proc/self/mountinfo || umount_node_root "$c"
    fi
    if ! mountpoint -q "$root"; then
        rm -rf --one-file-system -- "$base/$c.upper" "$base/$c.work"
        mkdir -p "$root" "$base/$c.upper" "$base/$c.work"
        mount -t overlay overlay -o "lowerdir=$lower,upperdir=$base/$c.upper,workdir=$base/$c.work" "$root"
        mount --make-private "$root"
    fi
    for m in proc sys dev dev/pts; do
        mountpoint -q "$root/$m" || mount --bind "/$m" "$root/$m"
    done
    for m in "$LAB_DIR" "$REPO_DIR"; do
        mkdir -p "$root$m"
        mountpoint -q "$root$m" || mount --bind "$m" "$root$m"
    done
    mount -o remount,bind,ro "$root$REPO_DIR"
}

# pids whose root directory is this cluster's node root: its daemons, its sshd and
# the sessions (ssh ControlMaster connections) that sshd forked
root_pids() { # cluster
    local root
    root=$(node_root "$1")
    # one find instead of a readlink per process (hundreds of them on a busy machine)
    find /proc -mindepth 2 -maxdepth 2 -name root -lname "$root" 2>/dev/null \
        | awk -F/ '$3 ~ /^[0-9]+$/ {print $3}'
    return 0
}

umount_node_root() { # cluster: stop what still runs in it, then unmount all of it
    local c=$1 root pid m left
    root=$(node_root "$c")
    [[ -d "$root" ]] || return 0
    for pid in $(root_pids "$c"); do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $(root_pids "$c"); do wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true; done
    for pid in $(root_pids "$c"); do wait_gone "$pid" 5 || log "$c: pid $pid still runs in $root"; done
    for m in $(mounts_under "$root"); do
        umount "$m" 2>/dev/null || { sleep 1; umount "$m"; } || log "$c: cannot unmount $m"
    done
    left=$(mounts_under "$root")
    [[ -z "$left" ]] || die "$c: still mounted: $left"
    rm -rf --one-file-system -- "$root" "$LAB_DIR/roots/$c.upper" "$LAB_DIR/roots/$c.work"
    rmdir -- "$LAB_DIR/roots" 2>/dev/null || true
}

# ceph / rbd wrappers: always bounded, never merged into a data stream.
rbd_c() { local c=$1; shift; timeout "$CMD_TIMEOUT" rbd -c "$(cconf "$c")" "$@"; }

# --------------------------------------------------------------------------
# packages
# --------------------------------------------------------------------------
ensure_packages() {
    local missing=() p installed
    # one dpkg-query for all (unknown packages: message on stderr, rc 1)
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    for p in "${PACKAGES[@]}"; do
        grep -qx "$p install ok installed" <<<"$installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q >&2
    timeout 1200 apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# --------------------------------------------------------------------------
# processes: only pids from our pidfiles (or with our exact conf path in
# their argv), cmdline checked, zombies count as dead.
# --------------------------------------------------------------------------
pid_state() { # pid -> one-letter state, or nothing if gone
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    printf '%s\n' "${stat%% *}"
}

# pid_matches PID NEEDLE: alive (not zombie) and NEEDLE is in its cmdline
pid_matches() {
    local pid=$1 needle=$2 st cmd
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    st=$(pid_state "$pid")
    [[ -n "$st" && "$st" != Z && "$st" != X ]] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ " $cmd " == *" $needle "* || "$cmd" == *"$needle "* ]]
}

pidfile_pid() { if [[ -r "$1" ]]; then tr -dc '0-9' <"$1" || true; fi; }

daemon_pidfile() { # cluster type id
    printf '%s/run/ceph-%s.%s.pid\n' "$(cdir "$1")" "$2" "$3"
}

# pid of a running lab daemon (ceph-mon/mgr/osd), empty if not running
daemon_pid() { # cluster type id
    local c=$1 type=$2 id=$3 pid p
    pid=$(pidfile_pid "$(daemon_pidfile "$c" "$type" "$id")")
    if [[ -n "$pid" ]] && pid_matches "$pid" "$(cconf "$c")" \
        && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == ceph-"$type" ]]; then
        printf '%s\n' "$pid"
        return 0
    fi
    # pidfile lost (half-done bootstrap): look for our exact conf path in argv (pgrep lists
    # the candidates: a subshell per /proc entry took ~10 s per call on a busy machine)
    for p in $(pgrep -x "ceph-$type"); do
        if pid_matches "$p" "$(cconf "$c")" && pid_matches "$p" "$id"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
}

# wait until pid is gone or a zombie
wait_gone() { # pid seconds
    local pid=$1 deadline=$((SECONDS + $2)) st
    while ((SECONDS < deadline)); do
        st=$(pid_state "$pid")
        [[ -z "$st" || "$st" == Z || "$st" == X ]] && return 0
        sleep 0.1
    done
    return 1
}

stop_pid() { # pid what
    local pid=$1 what=$2
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! wait_gone "$pid" 10; then
        log "$what (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || log "$what (pid $pid) still there"
    fi
}

stop_cluster() { # cluster [--kill]
    # OSD first, then mgr, mon: an OSD whose mon is gone waits 5 s on SIGTERM
    # (prepare_to_stop), so then, or with --kill (rebuild: memstore data is
    # lost anyway), SIGKILL.
    local c=$1 mode=${2:-} spec pid
    [[ -n "$(daemon_pid "$c" mon a)" ]] || mode=--kill
    for spec in osd.0 mgr.x mon.a; do
        pid=$(daemon_pid "$c" "${spec%%.*}" "${spec#*.}")
        [[ -n "$pid" ]] || continue
        log "$c: stopping ceph-$spec (pid $pid)"
        if [[ "$mode" == --kill ]]; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || log "$c ceph-$spec (pid $pid) still there"
        else
            stop_pid "$pid" "$c ceph-$spec"
        fi
    done
}

sshd_conf() { printf '%s/sshd_config_%s\n' "$SSH_DIR" "$1"; }
sshd_pid() { # cluster
    local c=$1 pid
    pid=$(pidfile_pid "$SSH_DIR/sshd-$c.pid")
    if [[ -n "$pid" ]] && pid_matches "$pid" "$(sshd_conf "$c")"; then
        printf '%s\n' "$pid"
    fi
}
sshd_running() { [[ -n "$(sshd_pid "$1")" ]]; }
# the sshd runs where the cluster's version is: in its node root, or on the host
sshd_root_ok() { # cluster
    local pid want=/
    pid=$(sshd_pid "$1")
    [[ -n "$pid" ]] || return 1
    chrooted "$1" && want=$(node_root "$1")
    [[ "$(readlink "/proc/$pid/root" 2>/dev/null)" == "$want" ]]
}
stop_sshd() {
    local c=$1 pid
    pid=$(sshd_pid "$c")
    [[ -n "$pid" ]] || return 0
    log "$c: stopping sshd (pid $pid)"
    stop_pid "$pid" "$c sshd"
}

port_users() { # ip port: what listens there (empty if free)
    ss -Hltnp src "$1:$2" 2>/dev/null || true
}
require_free() { # ip port what
    local users
    users=$(port_users "$1" "$2")
    [[ -z "$users" ]] && return 0
    printf '[lab] ERROR: %s:%s (%s) is already in use:\n%s\n' "$1" "$2" "$3" "$users" >&2
    printf '[lab] another lab on these addresses? Use BACKURNE_LAB_LIVE_IP / BACKURNE_LAB_BACKUP_IP.\n' >&2
    return 1
}

sshd_answers() { # cluster: the listener sends its SSH banner
    local ip banner
    ip=$(cluster_ip "$1")
    # shellcheck disable=SC2016  # expanded by the inner bash
    banner=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 4 <&3' _ "$ip" "$SSH_PORT" 2>/dev/null) || return 1
    [[ "$banner" == SSH- ]]
}

cluster_running() { # cluster: all daemons alive and rbd answers as backurne
    local c=$1 spec try
    [[ -f "$(cconf "$c")" && -f "$(cdir "$c")/ceph.client.backurne.keyring" ]] || return 1
    # another Ceph version asked for (a lab from before versions is 16): rebuild
    [[ "$(cat "$(cdir "$c")/ceph-version" 2>/dev/null || echo "$HOST_CEPH")" == "$(ceph_version "$c")" ]] || return 1
    for spec in mon.a mgr.x osd.0; do
        [[ -n "$(daemon_pid "$c" "${spec%%.*}" "${spec#*.}")" ]] || return 1
    done
    # a rebuild destroys the data of whoever uses the lab: insist a bit
    # before calling a cluster whose daemons all run broken
    for try in 1 2; do
        timeout 15 rbd -c "$(cconf "$c")" --id backurne ls rbd >/dev/null 2>&1 && return 0
        log "$c: daemons run but 'rbd ls' as client.backurne fails (try $try/2)"
    done
    return 1
}

ssh_running() {
    local c
    for f in id_ed25519 id_ed25519.pub known_hosts ssh_config authorized_keys; do
        [[ -f "$SSH_DIR/$f" ]] || return 1
    done
    for c in "${CLUSTERS[@]}"; do
        [[ -n "$(sshd_pid "$c")" ]] && sshd_root_ok "$c" && sshd_answers "$c" || return 1
    done
}

# --------------------------------------------------------------------------
# cluster bootstrap (runs in a background subshell, one per cluster)
# --------------------------------------------------------------------------
write_ceph_conf() { # cluster ip fsid
    local c=$1 ip=$2 fsid=$3 d
    d=$(cdir "$c")
    cat >"$d/ceph.conf" <<EOF
# backurne lab cluster "$c" - generated by tests/lab/lab.sh, do not edit
[global]
fsid = $fsid
mon_host = [v2:$ip:3300,v1:$ip:6789]
public_addr = $ip
cluster_addr = $ip
public_network = $ip/32
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $d/run
# single node, size-1 pools, no noise
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
# the VM disk sits at ~30 % free: do not warn, never shut the mon down
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mgr_stats_period = 1
# a client must not hang 300 s when a mon is gone
client_mount_timeout = 30
mgr_initial_modules = $MGR_INITIAL_MODULES
$( (($(ceph_version "$c") >= 20)) && printf '# Ceph 20: accept the aes keys Ceph 16 clients can read (see monmap_auth_args)\nmon_auth_allow_insecure_key = true\n')

[mon]
mon_data = $d/mon/ceph-\$id
# propose map updates after 50 ms instead of batching for 1 s: rbd snap
# create 0.5-1 s -> 0.1 s, snap purge of 2 snaps 2 s -> 0.2 s (lab only)
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
admin_socket = $d/run/\$cluster-\$name.asok
pid_file = $d/run/\$cluster-\$name.pid
log_file = $d/log/\$cluster-\$name.log

[mgr]
mgr_data = $d/mgr/ceph-\$id
# only the modules rbd needs: loading all 27 takes ~9 s and ~300 MiB per mgr
mgr_module_path = $d/mgr-modules
admin_socket = $d/run/\$cluster-\$name.asok
pid_file = $d/run/\$cluster-\$name.pid
log_file = $d/log/\$cluster-\$name.log

[osd]
osd_data = $d/osd/ceph-\$id
osd_objectstore = memstore
memstore_device_bytes = $((OSD_SIZE_MB * 1024 * 1024))
admin_socket = $d/run/\$cluster-\$name.asok
pid_file = $d/run/\$cluster-\$name.pid
log_file = $d/log/\$cluster-\$name.log

[client]
# never in [global]: the mon would then look for ceph.mon.a.keyring here
keyring = $d/\$cluster.\$name.keyring
EOF
}

# Tentacle (20) lets a new cluster use only 'aes256k' cephx keys, which Ceph 16 cannot parse
# ("error parsing file ... Malformed input"): the lab's keys are the host's ceph-authtool's
# ('aes', so the host's 16 tools, the fixtures and the controller talk to every cluster);
# the monmap allows them and keeps tickets and service keys in 'aes' too.
monmap_auth_args() { # cluster
    (($(ceph_version "$1") >= 20)) || return 0
    printf '%s\n' --auth-allowed-ciphers aes256k,aes --auth-preferred-cipher aes --auth-service-cipher aes
}

# ... which the monitors then report (HEALTH_ERR): expected in this lab, muted
expected_health_checks() { # cluster
    (($(ceph_version "$1") >= 20)) || return 0
    printf '%s\n' AUTH_INSECURE_CLIENT_KEY_TYPE AUTH_INSECURE_SERVICE_KEY_TYPE \
        AUTH_INSECURE_ROTATING_SERVICE_KEY_TYPE AUTH_INSECURE_KEYS_ALLOWED \
        AUTH_INSECURE_KEYS_CREATABLE AUTH_INSECURE_SERVICE_TICKETS
}

wait_for() { # seconds description command...
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "timeout (${secs}s) waiting for $what"; return 1; }
        sleep 0.3
    done
}

backurne_ls() { rbd_c "$1" --id backurne ls rbd; }

link_mgr_modules() { # dir [root]: links resolve in the mgr's root (a chroot's or /)
    local dir=$1 root=${2:-} src=/usr/share/ceph/mgr m
    mkdir -p "$dir"
    for m in "$root$src"/*.py; do ln -sfn "$src/${m##*/}" "$dir/"; done
    for m in $MGR_MODULES $(mgr_modules_of_version "$root"); do
        [[ -d "$root$src/$m" ]] || { log "no ceph-mgr module $m in $root$src"; return 1; }
        ln -sfn "$src/$m" "$dir/$m"
    done
}

# always-on modules newer releases add to MGR_MODULES (missing one: HEALTH_ERR MGR_MODULE_ERROR)
mgr_modules_of_version() { # root
    local root=$1 m
    for m in nfs smb; do
        [[ -n "$root" && -d "$root/usr/share/ceph/mgr/$m" ]] && printf '%s\n' "$m"
    done
    return 0
}

# Mon/mgr commands through python3-rados in ONE process: the `ceph` CLI costs
# ~0.5 s of CPU per call, which slows the boot of both clusters on 2 cores.
#   init CONF OSD_UUID [CODE...]   osd new OSD_UUID 0 + osd pool create rbd 8 8, mute the
#                                  health checks CODE... (sticky)
#   wait CONF SECONDS    until all PGs active+clean (mgr) and HEALTH_OK
# shellcheck disable=SC2016
LAB_PY='
import json, sys, time
import rados

action, conf = sys.argv[1], sys.argv[2]
r = rados.Rados(conffile=conf, name="client.admin")
r.connect(timeout=30)

def cmd(target, **kw):
    fn = r.mgr_command if target == "mgr" else r.mon_command
    ret, out, err = fn(json.dumps(dict(kw, format="json")), b"", timeout=10)
    return ret, out, err

if action == "init":
    for kw in ({"prefix": "osd new", "uuid": sys.argv[3], "id": 0},
               {"prefix": "osd pool create", "pool": "rbd", "pg_num": 8, "pgp_num": 8}):
        ret, out, err = cmd("mon", **kw)
        if ret != 0:
            sys.exit("%s: %s (%d)" % (kw["prefix"], err, ret))
        print("%s: ok %s" % (kw["prefix"], err))
    for code in sys.argv[4:]:
        ret, out, err = cmd("mon", prefix="health mute", code=code, sticky=True)
        if ret != 0:
            sys.exit("health mute %s: %s (%d)" % (code, err, ret))
elif action == "wait":
    deadline = time.time() + float(sys.argv[3])
    state = "?"
    while True:
        ret, out, err = cmd("mgr", prefix="pg stat")
        if ret == 0:
            s = json.loads(out)["pg_summary"]
            states = {x["name"]: x["num"] for x in s["num_pg_by_state"]}
            clean = s["num_pgs"] > 0 and states.get("active+clean") == s["num_pgs"]
            ret, out, err = cmd("mon", prefix="health")
            health = json.loads(out)["status"] if ret == 0 else "?"
            state = "pgs %s, %s" % (states, health)
            if clean and health == "HEALTH_OK":
                print(state)
                break
        else:
            state = "mgr: %s (%d)" % (err, ret)
        if time.time() > deadline:
            sys.exit("timeout waiting for active+clean PGs and HEALTH_OK; last: " + state)
        time.sleep(0.2)
r.shutdown()
'
lab_py() { # seconds action conf args...
    local secs=$1
    shift
    timeout "$secs" /usr/bin/python3 -c "$LAB_PY" "$@"
}

bootstrap_cluster() { # cluster
    local c=$1 ip d conf fsid osd_uuid k N=()
    mapfile -d '' N < <(node_argv "$c")
    ip=$(cluster_ip "$c")
    d=$(cdir "$c")
    conf="$d/ceph.conf"
    rm -rf -- "$d"
    mkdir -p "$d"/{run,log,mon,mgr/ceph-x,osd/ceph-0}
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    write_ceph_conf "$c" "$ip" "$fsid"
    local root=''
    chrooted "$c" && root=$(node_root "$c")
    link_mgr_modules "$d/mgr-modules" "$root"
    ceph_version "$c" >"$d/ceph-version"

    log "$c: keys, monmap, mon mkfs"
    local auth=(timeout "$CMD_TIMEOUT" ceph-authtool)
    "${auth[@]}" --create-keyring "$d/tmp-mon.keyring" --gen-key -n mon. --cap mon 'allow *'
    "${auth[@]}" --create-keyring "$d/ceph.client.admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *'
    "${auth[@]}" --create-keyring "$d/ceph.client.backurne.keyring" --gen-key -n client.backurne \
        --cap mon 'profile rbd' --cap osd 'profile rbd' --cap mgr 'profile rbd'
    "${auth[@]}" --create-keyring "$d/mgr/ceph-x/keyring" --gen-key -n mgr.x \
        --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *'
    "${auth[@]}" --create-keyring "$d/osd/ceph-0/keyring" --gen-key -n osd.0 \
        --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
    # every key goes into the mon's initial auth database: no `ceph auth` calls
    for k in ceph.client.admin.keyring ceph.client.backurne.keyring \
        mgr/ceph-x/keyring osd/ceph-0/keyring; do
        "${auth[@]}" "$d/tmp-mon.keyring" --import-keyring "$d/$k"
    done
    chmod 600 "$d"/*.keyring "$d/mgr/ceph-x/keyring" "$d/osd/ceph-0/keyring"
    timeout "$CMD_TIMEOUT" "${N[@]}" monmaptool --create --fsid "$fsid" \
        --addv a "[v2:$ip:3300,v1:$ip:6789]" $(monmap_auth_args "$c") "$d/monmap"
    timeout "$CMD_TIMEOUT" "${N[@]}" ceph-mon -c "$conf" --mkfs -i a --monmap "$d/monmap" \
        --keyring "$d/tmp-mon.keyring" </dev/null >>"$d/log/mkfs-mon.out" 2>&1
    rm -f "$d/tmp-mon.keyring" "$d/monmap"

    # OSD mkfs needs no mon (--no-mon-config): run it while the mon starts
    timeout 60 "${N[@]}" ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" --no-mon-config \
        </dev/null >>"$d/log/mkfs-osd.out" 2>&1 &
    local mkfs_pid=$!

    log "$c: starting mon.a, mgr.x"
    timeout "$CMD_TIMEOUT" "${N[@]}" ceph-mon -c "$conf" -i a </dev/null >>"$d/log/ceph-mon.a.out" 2>&1
    timeout "$CMD_TIMEOUT" "${N[@]}" ceph-mgr -c "$conf" -i x </dev/null >>"$d/log/ceph-mgr.x.out" 2>&1

    # osd id 0 (its key is already in the auth db) and the rbd pool, created
    # before the OSD boots so its PGs are created as soon as it is up
    lab_py 60 init "$conf" "$osd_uuid" $(expected_health_checks "$c")

    wait "$mkfs_pid" || { log "$c: ceph-osd --mkfs failed"; return 1; }
    log "$c: starting osd.0"
    timeout "$CMD_TIMEOUT" "${N[@]}" ceph-osd -c "$conf" -i 0 </dev/null >>"$d/log/ceph-osd.0.out" 2>&1

    # blocks until the pool's PGs are active (i.e. the OSD is up)
    timeout "$BOOT_TIMEOUT" "${N[@]}" rbd -c "$conf" pool init rbd
    log "$c: pool rbd initialised"
    lab_py "$BOOT_TIMEOUT" wait "$conf" "$BOOT_TIMEOUT"
    wait_for 30 "$c: rbd ls as client.backurne" backurne_ls "$c"
    log "$c: ready (HEALTH_OK, PGs active+clean, rbd ls as client.backurne works)"
}

print_cluster_logs() { # cluster
    local d f seen=0
    d=$(cdir "$1")
    for f in "$d"/log/bootstrap.log "$d"/log/*.log "$d"/log/*.out; do
        [[ -s "$f" ]] || continue
        [[ "$f" == "$d/log/bootstrap.log" && "${seen:-}" == 1 ]] && continue
        [[ "$f" == "$d/log/bootstrap.log" ]] && seen=1
        printf '\n===== %s (last 25 lines) =====\n' "$f" >&2
        tail -n 25 -- "$f" >&2
    done
    if [[ -f "$(cconf "$1")" ]]; then
        printf '\n===== %s: ceph -s =====\n' "$1" >&2
        timeout 10 ceph -c "$(cconf "$1")" -s >&2 2>/dev/null || true
    fi
}

# --------------------------------------------------------------------------
# ssh: one sshd per "host", keys and configs in $SSH_DIR
# --------------------------------------------------------------------------
setup_ssh() {
    local c ip
    mkdir -p "$SSH_DIR"
    chmod 700 "$SSH_DIR"
    [[ -f "$SSH_DIR/id_ed25519" && -f "$SSH_DIR/id_ed25519.pub" ]] || {
        rm -f "$SSH_DIR/id_ed25519" "$SSH_DIR/id_ed25519.pub"
        SSH_KEYS_CHANGED=1
        ssh-keygen -q -t ed25519 -N '' -C backurne-lab -f "$SSH_DIR/id_ed25519"
    }
    cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
    : >"$SSH_DIR/known_hosts.tmp"
    : >"$SSH_DIR/ssh_config.tmp"
    for c in "${CLUSTERS[@]}"; do
        ip=$(cluster_ip "$c")
        [[ -f "$SSH_DIR/ssh_host_ed25519_key_$c" && -f "$SSH_DIR/ssh_host_ed25519_key_$c.pub" ]] || {
            rm -f "$SSH_DIR/ssh_host_ed25519_key_$c" "$SSH_DIR/ssh_host_ed25519_key_$c.pub"
            SSH_KEYS_CHANGED=1
            ssh-keygen -q -t ed25519 -N '' -C "backurne-lab-$c" -f "$SSH_DIR/ssh_host_ed25519_key_$c"
        }
        printf '[%s]:%s %s\n' "$ip" "$SSH_PORT" \
            "$(cut -d' ' -f1,2 "$SSH_DIR/ssh_host_ed25519_key_$c.pub")" >>"$SSH_DIR/known_hosts.tmp"
        cat >"$(sshd_conf "$c")" <<EOF
# backurne lab sshd for "$c" - generated by tests/lab/lab.sh
ListenAddress $ip:$SSH_PORT
HostKey $SSH_DIR/ssh_host_ed25519_key_$c
PidFile $SSH_DIR/sshd-$c.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# keys live under /tmp (mode 1777); no PAM without systemd/logind
StrictModes no
UsePAM no
# every session on this "host" talks to this host's cluster
SetEnv CEPH_CONF=$(cconf "$c")
# ControlMaster multiplexing + parallel Ansible forks
MaxSessions 64
MaxStartups 64:30:128
PrintMotd no
LogLevel INFO
Subsystem sftp internal-sftp
EOF
        cat >>"$SSH_DIR/ssh_config.tmp" <<EOF
Host $c
    HostName $ip
    Port $SSH_PORT
    User root
    IdentityFile $SSH_DIR/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $SSH_DIR/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR

EOF
    done
    mv -f "$SSH_DIR/known_hosts.tmp" "$SSH_DIR/known_hosts"
    mv -f "$SSH_DIR/ssh_config.tmp" "$SSH_DIR/ssh_config"
    mkdir -p /run/sshd
    chmod 755 /run/sshd
}

start_sshd() { # cluster
    local c=$1 cfg N=()
    cfg=$(sshd_conf "$c")
    mapfile -d '' N < <(node_argv "$c")
    stop_sshd "$c"
    require_free "$(cluster_ip "$c")" "$SSH_PORT" "$c sshd" || die "$c: cannot start sshd"
    timeout 10 "${N[@]}" /usr/sbin/sshd -t -f "$cfg" || die "$c: invalid $cfg"
    timeout 10 "${N[@]}" /usr/sbin/sshd -f "$cfg" -E "$SSH_DIR/sshd-$c.log" \
        </dev/null >>"$SSH_DIR/sshd-$c.out" 2>&1 9>&- \
        || { tail -n 20 "$SSH_DIR/sshd-$c.log" >&2; die "$c: sshd failed to start"; }
    wait_for 10 "$c sshd pidfile" sshd_running "$c" \
        || { tail -n 20 "$SSH_DIR/sshd-$c.log" >&2; die "$c: sshd is not running"; }
    wait_for 10 "$c sshd banner" sshd_answers "$c" \
        || { tail -n 20 "$SSH_DIR/sshd-$c.log" >&2; die "$c: sshd does not answer"; }
}

check_ssh_login() { # cluster: a real key login that sees this host's CEPH_CONF
    local c=$1 out
    # shellcheck disable=SC2016  # expanded on the remote side
    out=$(timeout 20 ssh -F "$SSH_DIR/ssh_config" "$c" 'printf %s "$CEPH_CONF"' </dev/null) \
        || { tail -n 20 "$SSH_DIR/sshd-$c.log" >&2; die "$c: ssh login failed"; }
    [[ "$out" == "$(cconf "$c")" ]] || die "$c: ssh session has CEPH_CONF='$out'"
}

bring_up_ssh() {
    local c
    SSH_KEYS_CHANGED=0
    setup_ssh
    for c in "${CLUSTERS[@]}"; do
        # a healthy sshd keeps running unless its host key was regenerated
        if ((SSH_KEYS_CHANGED)) || [[ -z "$(sshd_pid "$c")" ]] || ! sshd_root_ok "$c" || ! sshd_answers "$c"; then
            start_sshd "$c"
        fi
    done
    for c in "${CLUSTERS[@]}"; do check_ssh_login "$c"; done
    log "sshd up on ${LIVE_IP}:$SSH_PORT (live) and ${BACKUP_IP}:$SSH_PORT (backup)"
}

# --------------------------------------------------------------------------
# stand-in Proxmox VE API: tests/pveapi/server.py on $LIVE_IP:8006, serving
# tests/pveapi/fixture.json; the fixture's RBD images live on the live cluster
# --------------------------------------------------------------------------
pve_pid() { # pid of this lab's stand-in, empty if not running
    local pid
    pid=$(pidfile_pid "$PVE_DIR/server.pid")
    if [[ -n "$pid" ]] && pid_matches "$pid" "$PVE_SERVER" && pid_matches "$pid" "$LIVE_IP:$PVE_PORT"; then
        printf '%s\n' "$pid"
    fi
}
# shellcheck disable=SC2016  # expanded by the inner bash
pve_answers() { timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$LIVE_IP" "$PVE_PORT" 2>/dev/null; }
pve_running() { [[ -n "$(pve_pid)" ]] && pve_answers; }
# what the running server was started from: restart when any of it changed
pve_stamp() {
    cat -- "$PVE_SERVER" "$PVE_FIXTURE" "$REPO_DIR/tests/pveapi/schema-subset.json" \
        "$PVE_DIR/credentials.json" 2>/dev/null | sha256sum | cut -d' ' -f1
}

stop_pve() {
    local pid
    pid=$(pve_pid)
    [[ -n "$pid" ]] || return 0
    log "stopping the PVE API stand-in (pid $pid)"
    stop_pid "$pid" "PVE API stand-in"
}

pve_credentials() { # generated once; secrets never on a command line or in a log
    local f="$PVE_DIR/credentials.json"
    [[ -s "$f" ]] && return 0
    (
        umask 077
        printf '{\n  "user": "root@pam",\n  "password": "%s",\n  "token_id": "backurne",\n  "token_secret": "%s",\n  "full_token_id": "root@pam!backurne"\n}\n' \
            "$(tr -d '-' </proc/sys/kernel/random/uuid)" "$(cat /proc/sys/kernel/random/uuid)" >"$f.tmp"
    )
    mv -f "$f.tmp" "$f"
}

start_pve() {
    stop_pve
    require_free "$LIVE_IP" "$PVE_PORT" "PVE API stand-in" || die "cannot start the PVE API stand-in"
    rm -f "$PVE_DIR/server.pid"
    pve_stamp >"$PVE_DIR/server.stamp"
    # stdlib only: a bare Debian 12 runs it; setsid: not in our process group
    setsid /usr/bin/python3 "$PVE_SERVER" --listen "$LIVE_IP:$PVE_PORT" --fixture "$PVE_FIXTURE" \
        --cert-dir "$PVE_DIR/tls" --record "$PVE_DIR/record.jsonl" \
        --users "$PVE_DIR/credentials.json" --pid-file "$PVE_DIR/server.pid" \
        --faults "$PVE_DIR/faults.json" \
        </dev/null >>"$PVE_DIR/server.log" 2>&1 9>&- &
    wait_for 20 "PVE API stand-in on $LIVE_IP:$PVE_PORT" pve_running \
        || { tail -n 20 "$PVE_DIR/server.log" >&2; die "the PVE API stand-in did not start"; }
}

ensure_pve_images() { # every RBD image the fixture names, on the live cluster (idempotent)
    # done once per live cluster (fsid) and fixture content: the check costs ~0.5 s
    mkdir -p "$PVE_DIR"
    local stamp
    stamp="$(sed -n 's/^fsid = //p' "$(cconf live)") $(sha256sum <"$PVE_FIXTURE" | cut -d' ' -f1)"
    [[ "$(cat "$PVE_DIR/images.ok" 2>/dev/null)" == "$stamp" ]] && return 0
    timeout 120 /usr/bin/python3 "$REPO_DIR/tests/pveapi/lab_images.py" --fixture "$PVE_FIXTURE" \
        --conf "$(cconf live)" --id admin >"$PVE_DIR/images.log" 2>&1 \
        || { cat "$PVE_DIR/images.log" >&2; die "creating the PVE fixture images on the live cluster failed"; }
    printf '%s\n' "$stamp" >"$PVE_DIR/images.ok"
    log "$(cat "$PVE_DIR/images.log")"
}

bring_up_pve_server() { # needs no Ceph: runs while the clusters boot
    mkdir -p "$PVE_DIR"
    pve_credentials
    if ! pve_running || [[ "$(cat "$PVE_DIR/server.stamp" 2>/dev/null)" != "$(pve_stamp)" ]]; then
        start_pve
        log "PVE API stand-in up on https://$LIVE_IP:$PVE_PORT (log: $PVE_DIR/server.log)"
    fi
}

# --------------------------------------------------------------------------
# env.sh / lab.json
# --------------------------------------------------------------------------
env_content() {
    # shellcheck disable=SC2016  # literal text
    printf '# backurne lab environment - eval "$(tests/lab/lab.sh env)" or source this file\n'
    printf 'export %s=%q\n' \
        BACKURNE_LAB_DIR "$LAB_DIR" \
        CEPH_LIVE_CONF "$(cconf live)" \
        CEPH_BACKUP_CONF "$(cconf backup)" \
        BACKURNE_LAB_LIVE_IP "$LIVE_IP" \
        BACKURNE_LAB_BACKUP_IP "$BACKUP_IP" \
        BACKURNE_LAB_CEPH_LIVE "$CEPH_LIVE" \
        BACKURNE_LAB_CEPH_BACKUP "$CEPH_BACKUP" \
        BACKURNE_LAB_LIVE_ROOT "$(chrooted live && node_root live)" \
        BACKURNE_LAB_BACKUP_ROOT "$(chrooted backup && node_root backup)" \
        BACKURNE_LAB_SSH_PORT "$SSH_PORT" \
        BACKURNE_LAB_SSH_KEY "$SSH_DIR/id_ed25519" \
        BACKURNE_LAB_SSH_CONFIG "$SSH_DIR/ssh_config" \
        BACKURNE_LAB_KNOWN_HOSTS "$SSH_DIR/known_hosts" \
        BACKURNE_LAB_PVE_HOST "$LIVE_IP" \
        BACKURNE_LAB_PVE_PORT "$PVE_PORT" \
        BACKURNE_LAB_PVE_CA "$PVE_DIR/tls/pve-root-ca.pem" \
        BACKURNE_LAB_PVE_CREDENTIALS "$PVE_DIR/credentials.json" \
        BACKURNE_LAB_PVE_RECORD "$PVE_DIR/record.jsonl" \
        BACKURNE_LAB_PVE_FAULTS "$PVE_DIR/faults.json" \
        BACKURNE_LAB_PVE_FIXTURE "$PVE_FIXTURE"
}

json_str() { # minimal JSON string escaping
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

write_outputs() {
    env_content >"$LAB_DIR/env.sh.tmp"
    mv -f "$LAB_DIR/env.sh.tmp" "$LAB_DIR/env.sh"
    {
        printf '{\n'
        printf '  "lab_dir": %s,\n' "$(json_str "$LAB_DIR")"
        printf '  "live_conf": %s,\n' "$(json_str "$(cconf live)")"
        printf '  "backup_conf": %s,\n' "$(json_str "$(cconf backup)")"
        printf '  "live_ip": %s,\n' "$(json_str "$LIVE_IP")"
        printf '  "backup_ip": %s,\n' "$(json_str "$BACKUP_IP")"
        printf '  "ssh_port": %s,\n' "$SSH_PORT"
        printf '  "ssh_key": %s,\n' "$(json_str "$SSH_DIR/id_ed25519")"
        printf '  "ssh_config": %s,\n' "$(json_str "$SSH_DIR/ssh_config")"
        printf '  "known_hosts": %s,\n' "$(json_str "$SSH_DIR/known_hosts")"
        printf '  "pve": {"host": %s, "port": %s, "ca": %s, "credentials": %s, "record": %s, "fixture": %s, "log": %s},\n' \
            "$(json_str "$LIVE_IP")" "$PVE_PORT" "$(json_str "$PVE_DIR/tls/pve-root-ca.pem")" \
            "$(json_str "$PVE_DIR/credentials.json")" "$(json_str "$PVE_DIR/record.jsonl")" \
            "$(json_str "$PVE_FIXTURE")" "$(json_str "$PVE_DIR/server.log")"
        printf '  "clusters": {\n'
        local c sep=','
        for c in "${CLUSTERS[@]}"; do
            [[ "$c" == "${CLUSTERS[-1]}" ]] && sep=''
            printf '    "%s": {"ip": %s, "conf": %s, "ssh_alias": "%s", "admin_keyring": %s, "backurne_keyring": %s, "pool": "rbd", "ceph": %s, "root": %s}%s\n' \
                "$c" "$(json_str "$(cluster_ip "$c")")" "$(json_str "$(cconf "$c")")" "$c" \
                "$(json_str "$(cdir "$c")/ceph.client.admin.keyring")" \
                "$(json_str "$(cdir "$c")/ceph.client.backurne.keyring")" "$(ceph_version "$c")" \
                "$(json_str "$(chrooted "$c" && node_root "$c")")" "$sep"
        done
        printf '  }\n}\n'
    } >"$LAB_DIR/lab.json.tmp"
    mv -f "$LAB_DIR/lab.json.tmp" "$LAB_DIR/lab.json"
}

# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------
take_lock() { # [--force]: down goes on without the lock after a while
    mkdir -p "$LAB_DIR"
    exec 9>"$LAB_DIR/.lock"
    if [[ "${1:-}" == --force ]]; then
        flock -w 30 9 || log "could not lock $LAB_DIR/.lock within 30 s, going on anyway"
    else
        flock -w 300 9 || die "could not lock $LAB_DIR/.lock within 300 s (another lab.sh running?)"
    fi
}

cmd_up() {
    local start=$SECONDS c rebuild=() pids=() rc=0 i
    ((EUID == 0)) || die "lab.sh up needs root (apt-get, sshd with root login)"
    [[ "$LIVE_IP" != "$BACKUP_IP" ]] || die "live and backup need distinct IPs"
    check_versions
    ensure_packages
    take_lock
    for c in "${CLUSTERS[@]}"; do
        if chrooted "$c"; then ensure_chroot "$c"; fi
    done
    for c in "${CLUSTERS[@]}"; do
        cluster_running "$c" || rebuild+=("$c")
    done
    if ((${#rebuild[@]} == 0)) && ssh_running; then
        if ! [[ -f "$LAB_DIR/lab.json" ]] || [[ "$(env_content)" != "$(cat "$LAB_DIR/env.sh" 2>/dev/null)" ]]; then
            write_outputs
        fi
        bring_up_pve_server
        ensure_pve_images
        log "lab already up ($LAB_DIR)"
        return 0
    fi
    for c in "${rebuild[@]}"; do stop_cluster "$c" --kill; done
    for c in "${rebuild[@]}"; do
        # a node root of another version goes (with its sshd); the right one is mounted
        if chrooted "$c"; then mount_node_root "$c"; else umount_node_root "$c"; fi
    done
    local busy=0
    for c in "${rebuild[@]}"; do
        require_free "$(cluster_ip "$c")" 3300 "$c ceph-mon v2" || busy=1
        require_free "$(cluster_ip "$c")" 6789 "$c ceph-mon v1" || busy=1
    done
    ((busy == 0)) || die "not starting the lab"
    for c in "${rebuild[@]}"; do
        log "$c: bootstrapping cluster on $(cluster_ip "$c") (log: $LAB_DIR/$c.bootstrap.log)"
        # in parallel: halves the time on 2 cores
        # (fd 9 = the lock: daemons must not inherit it, or they hold it forever)
        ( set -euo pipefail; bootstrap_cluster "$c" ) >"$LAB_DIR/$c.bootstrap.log" 2>&1 9>&- &
        pids+=($!)
    done
    # (in a subshell: its errors must not leave the bootstraps orphaned)
    if ! ssh_running && ! (set -euo pipefail; bring_up_ssh); then
        rc=1
        printf '\n[lab] ERROR: sshd setup failed (logs: %s/sshd-*.log)\n' "$SSH_DIR" >&2
    fi
    if ! (set -euo pipefail; bring_up_pve_server); then
        rc=1
        printf '\n[lab] ERROR: the PVE API stand-in failed (log: %s/server.log)\n' "$PVE_DIR" >&2
    fi
    for i in "${!pids[@]}"; do
        c=${rebuild[$i]}
        if wait "${pids[$i]}"; then
            mv -f "$LAB_DIR/$c.bootstrap.log" "$(cdir "$c")/log/bootstrap.log"
            log "$c: up"
        else
            rc=1
            mv -f "$LAB_DIR/$c.bootstrap.log" "$(cdir "$c")/log/bootstrap.log" 2>/dev/null || true
            printf '\n[lab] ERROR: cluster %s failed to come up\n' "$c" >&2
            print_cluster_logs "$c"
            # leave nothing half-running; the logs stay
            stop_cluster "$c" --kill
        fi
    done
    ((rc == 0)) || die "lab up failed (logs under $LAB_DIR/<cluster>/log/)"
    write_outputs
    ensure_pve_images
    log "lab up in $((SECONDS - start)) s: eval \"\$($0 env)\""
}

cmd_down() {
    local c
    [[ -n "$LAB_DIR" && "$LAB_DIR" != / ]] || die "refusing LAB_DIR=$LAB_DIR"
    [[ -d "$LAB_DIR" ]] || { log "nothing to stop ($LAB_DIR does not exist)"; return 0; }
    take_lock --force
    # both clusters in parallel (each: OSD, then mgr, then mon)
    local pids=()
    for c in "${CLUSTERS[@]}"; do
        stop_cluster "$c" & pids+=($!)
    done
    for c in "${CLUSTERS[@]}"; do stop_sshd "$c"; done
    stop_pve
    for c in "${pids[@]}"; do wait "$c" || true; done
    # chrooted nodes: what still runs there (ssh sessions), then every mount (dies if one stays)
    for c in "${CLUSTERS[@]}"; do umount_node_root "$c"; done
    for c in "${CLUSTERS[@]}"; do rm -rf -- "$(cdir "$c")" "$LAB_DIR/$c.bootstrap.log"; done
    rm -rf -- "$SSH_DIR" "$PVE_DIR" "$LAB_DIR/env.sh" "$LAB_DIR/lab.json" "$LAB_DIR/env.sh.tmp" \
        "$LAB_DIR/lab.json.tmp" "$LAB_DIR/.lock"
    rmdir -- "$LAB_DIR" 2>/dev/null || log "kept $LAB_DIR (holds files the lab did not create)"
    log "lab down"
}

rss_of() { awk '/^VmRSS:/ {printf "%d MiB", $2/1024}' "/proc/$1/status" 2>/dev/null || true; }

cmd_status() {
    local c spec pid ok=0 health
    printf 'lab dir: %s\n' "$LAB_DIR"
    for c in "${CLUSTERS[@]}"; do
        printf '%s (%s, %s, Ceph %s%s):\n' "$c" "$(cluster_ip "$c")" "$(cconf "$c")" "$(ceph_version "$c")" \
            "$(chrooted "$c" && printf ' in %s' "$(node_root "$c")")"
        for spec in mon.a mgr.x osd.0; do
            pid=$(daemon_pid "$c" "${spec%%.*}" "${spec#*.}")
            if [[ -n "$pid" ]]; then
                printf '  ceph-%-6s pid %-7s RSS %s\n' "$spec" "$pid" "$(rss_of "$pid")"
            else
                printf '  ceph-%-6s DOWN\n' "$spec"
                ok=1
            fi
        done
        if [[ -f "$(cconf "$c")" ]] \
            && health=$(timeout 10 ceph -c "$(cconf "$c")" health 2>/dev/null); then
            printf '  health     %s\n' "$health"
            [[ "$health" == HEALTH_ERR* ]] && ok=1
        else
            printf '  health     no answer\n'
            ok=1
        fi
        pid=$(sshd_pid "$c")
        if [[ -n "$pid" ]] && sshd_answers "$c"; then
            printf '  sshd       pid %-7s RSS %s, %s:%s\n' "$pid" "$(rss_of "$pid")" \
                "$(cluster_ip "$c")" "$SSH_PORT"
        else
            printf '  sshd       DOWN (%s:%s)\n' "$(cluster_ip "$c")" "$SSH_PORT"
            ok=1
        fi
    done
    pid=$(pve_pid)
    if [[ -n "$pid" ]] && pve_answers; then
        printf 'pve api    pid %-7s RSS %s, https://%s:%s (stand-in, %s)\n' "$pid" "$(rss_of "$pid")" \
            "$LIVE_IP" "$PVE_PORT" "$PVE_FIXTURE"
    else
        printf 'pve api    DOWN (%s:%s)\n' "$LIVE_IP" "$PVE_PORT"
        ok=1
    fi
    if ((ok == 0)); then echo "lab: UP"; else echo "lab: NOT (fully) UP"; fi
    return "$ok"
}

usage() {
    echo "usage: $0 up|down|status|env" >&2
    exit 2
}

main() {
    (($# == 1)) || usage
    case "$1" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        env) env_content ;;
        *) usage ;;
    esac
}

main "$@"
