#!/usr/bin/env bash
# Prints a backurne CLI/API configuration (docs/cli.md) for the running test lab:
#   scripts/lab-cli-config.sh [BACKUP_NAMESPACE] > /tmp/backurne-lab.yml
#   export BACKURNE_CONFIG=/tmp/backurne-lab.yml; backurne ls
# The lab is found through $BACKURNE_LAB_DIR (default /tmp/backurne-lab), as tests/lab/lab.sh does.
# Keys are referenced as paths; nothing secret is printed.
set -euo pipefail
lab_dir=${BACKURNE_LAB_DIR:-/tmp/backurne-lab}
facts=$lab_dir/lab.json
if [ ! -r "$facts" ]; then
  echo "lab-cli-config: $facts not found: start the lab first (tests/lab/lab.sh up)" >&2
  exit 1
fi
exec /usr/bin/python3 - "$facts" "${1:-}" <<'PY'
import json
import sys

facts = json.load(open(sys.argv[1]))
namespace = sys.argv[2] or None
lab_dir = facts["lab_dir"]
backup, live = facts["clusters"]["backup"], facts["clusters"]["live"]


def keyring(conf: str) -> str:
    return conf.rsplit("/", 1)[0] + "/ceph.client.backurne.keyring"


config = {
    "backup": {
        "ceph": {"ceph_client": "backurne", "keyring": keyring(backup["conf"]), "ceph_conf": backup["conf"]},
        "pool": backup["pool"],
        "namespace": namespace,
    },
    "snap_prefix": "backup",
    "state_dir": f"{lab_dir}/backurne-state",
    "live_clusters": {
        "live": {
            "host": live["ip"],
            "ssh": {
                "user": "root",
                "port": facts["ssh_port"],
                "identity_file": facts["ssh_key"],
                "known_hosts_file": facts["known_hosts"],
            },
            "ceph": {"ceph_client": "backurne", "keyring": keyring(live["conf"]), "ceph_conf": live["conf"]},
            "pool": live["pool"],
            "namespace": namespace,
        }
    },
    "api": {"tokens_file": f"{lab_dir}/backurne-api-tokens", "anonymous": False, "listen": "127.0.0.1:8080"},
}
print(f"# backurne configuration for the lab in {lab_dir} (scripts/lab-cli-config.sh)")
# JSON is YAML: no dependency on PyYAML for the system python.
print(json.dumps(config, indent=2))
PY
