#!/usr/bin/python3
"""Stand-in Proxmox VE API server for backurne's tests, the lab and the demo.

No real Proxmox VE can run here, so this HTTPS server answers the part of the
PVE API that backurne uses, the way PVE 9.1 does (see tests/pveapi/README.md
and /work/shared/proxmox-api.md): ticket login with CSRF tokens, API tokens,
the ``{"data": ...}`` envelope, errors in the HTTP reason phrase, Perl-style
JSON typing, parameter checks against the API schema (``schema-subset.json``
beside this file, extracted from pve-docs' apidata.js) and the guest-agent
fsfreeze calls.  Guests, nodes and storages come from a fixture file; every
guest-agent call is appended to a JSON-lines record file for tests.

Standard library only: the lab runs it with /usr/bin/python3 on a bare
Debian 12.

    python3 tests/pveapi/server.py --listen 127.0.0.1:8006 \\
        --fixture tests/pveapi/fixture.json --cert-dir DIR --record FILE \\
        [--users CREDENTIALS.json] [--pid-file FILE]

From Python (tests): ``start_server(fixture=..., port=0)`` returns a running
instance with ``url``, ``host``, ``port``, ``ca_path``, ``credentials``,
``record_path``, ``records()`` and ``stop()``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import copy
import gzip
import hashlib
import hmac
import http.server
import ipaddress
import itertools
import json
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "schema-subset.json"
DEFAULT_FIXTURE = HERE / "fixture.json"
API_PREFIX = "/api2/json"
# PVE tickets (and CSRF tokens) are valid for 2 h (PVE::AccessControl $ticket_lifetime)
TICKET_LIFETIME = 7200
SERVER_HEADER = "pve-api-daemon/3.0"
JSON_CT = "application/json;charset=UTF-8"

# `[n]` keys whose schema description does not state the range ("n is 0 to N")
INDEX_MAX_FALLBACK = {
    "net": 31,
    "unused": 255,
    "mp": 255,
    "dev": 255,
    "hostpci": 15,
    "ipconfig": 31,
    "numa": 7,
    "virtiofs": 9,
    "usb": 13,
    "serial": 3,
    "parallel": 2,
}

QEMU_DISK_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")


class ApiError(Exception):
    """An error PVE would answer: status code, reason phrase, optional `errors`."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def die(message: str) -> ApiError:
    """A handler `die "msg\\n"`: HTTP 500 with the message as reason."""
    return ApiError(500, message)


# --------------------------------------------------------------------------
# PVE value parsing (pve-common JSONSchema.pm semantics)
# --------------------------------------------------------------------------
TRUE_RE = re.compile(r"^(1|on|yes|true)$", re.I)
FALSE_RE = re.compile(r"^(0|off|no|false)$", re.I)


def parse_boolean(value: Any) -> bool | None:
    """PVE's parse_boolean: 1|on|yes|true / 0|off|no|false, else None."""
    if isinstance(value, bool):
        return value
    text = str(value)
    if TRUE_RE.match(text):
        return True
    if FALSE_RE.match(text):
        return False
    return None


def parse_property_string(
    text: str, fmt: dict[str, Any] | None = None, default_key: str | None = None
) -> dict[str, str]:
    """Split a PVE property string into {key: value} as parse_property_string does.

    A part is ``key=value`` (the key ends at the FIRST ``=``, the value may hold
    more, e.g. base64 ``QkVTVA==``) or a bare value for the default key.
    Aliases of ``fmt`` are resolved.  Raises ValueError with PVE's wording.
    """
    if fmt is not None and default_key is None:
        default_key = next((k for k, v in fmt.items() if isinstance(v, dict) and v.get("default_key")), None)
    res: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        m = re.match(r"^([^=]+)=(.+)$", part, re.S)
        if m:
            key, value = m.group(1), m.group(2)
            schema = fmt.get(key) if fmt is not None else None
            if isinstance(schema, dict) and schema.get("alias"):
                if schema.get("keyAlias"):  # net0: virtio=MAC -> model=virtio, macaddr=MAC
                    if schema["keyAlias"] in res:
                        raise ValueError(f"duplicate key in comma-separated list property: {schema['keyAlias']}")
                    res[schema["keyAlias"]] = key
                key = schema["alias"]
            if key in res:
                raise ValueError(f"duplicate key in comma-separated list property: {key}")
            res[key] = value
        elif "=" not in part:
            if default_key is None:
                raise ValueError("value without key, but schema does not define a default key")
            if default_key in res:
                raise ValueError(f"duplicate key in comma-separated list property: {default_key}")
            res[default_key] = part
        else:
            raise ValueError("missing key in comma-separated list property")
    return res


SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])?(?:iB)?$")
SIZE_UNITS = {None: 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """PVE parse_size: ``32G``, ``528K``, ``4M``, bytes without a unit (1024-based)."""
    m = SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"unable to parse size '{text}'")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2)])


# --------------------------------------------------------------------------
# schema: parameter checks with PVE's messages
# --------------------------------------------------------------------------
NAMED_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    # (regex, message) - the PVE checkers these stand for are in pve-common JSONSchema.pm
    "pve-configid": (re.compile(r"^[a-z][a-z0-9_-]+$", re.I), "invalid configuration ID '{v}'"),
    "pve-node": (
        re.compile(r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])$"),
        "value does not look like a valid node name",
    ),
    "pve-vmid": (re.compile(r"^\d+$"), "value does not look like a valid VM ID"),
    "pve-storage-id": (
        re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I),
        "storage ID '{v}' contains illegal characters",
    ),
    "pve-realm": (re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$"), "realm ID '{v}' contains illegal characters"),
    "dns-name": (
        re.compile(
            r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
            r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$"
        ),
        "value does not look like a valid DNS name",
    ),
    "pve-tag-list": (
        re.compile(r"^(?:[a-z0-9_][a-z0-9_\-+.]*)(?:[;, ]+[a-z0-9_][a-z0-9_\-+.]*)*[;, ]*$", re.I),
        "invalid tag list '{v}'",
    ),
    "pve-configid-list": (
        re.compile(r"^(?:[a-z][a-z0-9_-]+)(?:[,; \0]+[a-z][a-z0-9_-]+)*$", re.I),
        "invalid configuration ID list '{v}'",
    ),
}


NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"


def perl_regex(pattern: str) -> str:
    """Perl's stringified `(?^:...)` groups (as apidata.js has them) -> Python `(?:...)`."""
    return pattern.replace("(?^i:", "(?i:").replace("(?^:", "(?:")


def index_max(key: str, schema: dict[str, Any]) -> int:
    m = re.search(r"n is 0 to (\d+)", schema.get("description", ""))
    if m:
        return int(m.group(1))
    return INDEX_MAX_FALLBACK.get(key[: -len("[n]")], 255)


def expand_indexed(props: dict[str, Any]) -> dict[str, Any]:
    """``scsi[n]`` -> scsi0..scsi30 (the range from the description)."""
    out: dict[str, Any] = {}
    for key, schema in props.items():
        if key.endswith("[n]"):
            base = key[: -len("[n]")]
            for i in range(index_max(key, schema) + 1):
                out[f"{base}{i}"] = schema
        else:
            out[key] = schema
    return out


def check_value(value: str, schema: dict[str, Any], path: str = "") -> str | None:
    """Check one string parameter like PVE's check_type/check_format; message or None."""
    typ = schema.get("type", "string")
    if typ == "boolean":
        if parse_boolean(value) is None:
            return f"type check ('boolean') failed - got '{value}'"
    elif typ == "integer" and not re.match(r"^-?\d+$", value):
        return f"type check ('integer') failed - got '{value}'"
    elif typ == "number" and not re.match(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$", value):
        return f"type check ('number') failed - got '{value}'"
    if typ in ("integer", "number"):
        num = float(value)
        if "minimum" in schema and num < float(schema["minimum"]):
            return f"value must have a minimum value of {schema['minimum']}"
        if "maximum" in schema and num > float(schema["maximum"]):
            return f"value must have a maximum value of {schema['maximum']}"
    if "enum" in schema and value not in schema["enum"]:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(schema['enum'])}'"
    if typ == "string":
        if "maxLength" in schema and len(value) > int(schema["maxLength"]):
            return f"value may only be {schema['maxLength']} characters long"
        if "minLength" in schema and len(value) < int(schema["minLength"]):
            return f"value must be at least {schema['minLength']} characters long"
        if "pattern" in schema and not re.fullmatch(perl_regex(schema["pattern"]), value):
            return "value does not match the regex pattern"
    fmt = schema.get("format")
    if isinstance(fmt, dict):
        try:
            parts = parse_property_string(value, fmt)
        except ValueError as e:
            return f"invalid format - {e}"
        problems = []
        where = f"{path}." if path else ""  # PVE names a sub-key as PARAM.KEY
        for key, sub in parts.items():
            sub_schema = fmt.get(key)
            if not isinstance(sub_schema, dict):
                problems.append(f"{where}{key}: {NOT_IN_SCHEMA}")
                continue
            msg = check_value(sub, sub_schema)
            if msg:
                problems.append(f"{where}{key}: {msg}")
        for key, sub_schema in fmt.items():
            if (
                isinstance(sub_schema, dict)
                and not sub_schema.get("optional")
                and "alias" not in sub_schema
                and "default" not in sub_schema
                and key not in parts
            ):
                problems.append(f"{where}{key}: property is missing and it is not optional")
        if problems:
            return "invalid format - format error\n" + "\n".join(problems)
    elif isinstance(fmt, str) and fmt in NAMED_FORMATS:
        regex, message = NAMED_FORMATS[fmt]
        if not regex.match(value):
            return "invalid format - " + message.format(v=value)
    return None


def verify_parameters(params: dict[str, str], schema: dict[str, Any]) -> None:
    """400 `Parameter verification failed.` with per-parameter errors, like PVE."""
    props = expand_indexed(schema.get("properties", {}))
    errors: dict[str, str] = {}
    for key, value in params.items():
        prop = props.get(key)
        if prop is None:
            if not schema.get("additionalProperties"):
                errors[key] = NOT_IN_SCHEMA
            continue
        msg = check_value(value, prop, key)
        if msg:
            errors[key] = msg
    for key, prop in schema.get("properties", {}).items():
        if key.endswith("[n]") or prop.get("optional"):
            continue
        if key not in params:
            errors[key] = "property is missing and it is not optional"
    for key in params:
        prop = props.get(key)
        if prop and prop.get("requires") and prop["requires"] not in params:
            errors[prop["requires"]] = f"missing property - '{key}' requires this property"
    if errors:
        raise ApiError(400, "Parameter verification failed.", errors)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())["endpoints"]


def typed_config(config: dict[str, Any], returns_props: dict[str, Any]) -> dict[str, Any]:
    """Type config values as PVE's check_type does: bool -> 0/1, int -> number, rest -> string."""
    props = expand_indexed(returns_props)
    out: dict[str, Any] = {}
    for key, value in config.items():
        typ = props.get(key, {}).get("type", "string")
        if typ == "boolean":
            b = parse_boolean(value)
            out[key] = int(b) if b is not None else value
        elif typ == "integer" and re.match(r"^-?\d+$", str(value)):
            out[key] = int(value)
        else:
            # `number` too (cpulimit): PVE leaves it a string
            out[key] = str(int(value)) if isinstance(value, bool) else str(value)
    return out


# --------------------------------------------------------------------------
# auth: tickets, CSRF tokens, API tokens (PVE::Ticket / PVE::AccessControl shapes)
# --------------------------------------------------------------------------
@dataclass
class Credentials:
    user: str
    password: str
    token_id: str  # token name only, as community.proxmox's api_token_id
    token_secret: str

    @property
    def full_token_id(self) -> str:
        return f"{self.user}!{self.token_id}"

    def as_dict(self) -> dict[str, str]:
        return {
            "user": self.user,
            "password": self.password,
            "token_id": self.token_id,
            "token_secret": self.token_secret,
            "full_token_id": self.full_token_id,
        }

    @classmethod
    def generate(cls, user: str = "root@pam", token_id: str = "backurne") -> Credentials:
        return cls(user, secrets.token_urlsafe(18), token_id, str(uuid.uuid4()))

    @classmethod
    def load(cls, path: Path) -> Credentials:
        d = json.loads(path.read_text())
        return cls(d["user"], d["password"], d["token_id"], d["token_secret"])

    def write(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.as_dict(), f, indent=2)
            f.write("\n")
        os.chmod(path, 0o600)


class Auth:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self._key = secrets.token_bytes(32)

    def _sig(self, data: str) -> str:
        return base64.b64encode(hmac.new(self._key, data.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    def make_ticket(self, user: str, now: int | None = None) -> str:
        plain = f"PVE:{user}:{(now or int(time.time())):08X}"
        return f"{plain}::{self._sig(plain)}"

    def verify_ticket(self, ticket: str) -> str | None:
        m = re.match(r"^(PVE:([^:\s]+):([0-9A-F]{8}))::(.+)$", ticket)
        if not m or not hmac.compare_digest(self._sig(m.group(1)), m.group(4)):
            return None
        age = int(time.time()) - int(m.group(3), 16)
        if age < -300 or age > TICKET_LIFETIME:
            return None
        return m.group(2)

    def make_csrf(self, user: str) -> str:
        stamp = f"{int(time.time()):08X}"
        return f"{stamp}:{self._sig(f'{stamp}:{user}')}"

    def verify_csrf(self, user: str, token: str | None) -> bool:
        if not token:
            return False
        m = re.match(r"^([0-9A-F]{8}):(\S+)$", token)
        if not m or not hmac.compare_digest(self._sig(f"{m.group(1)}:{user}"), m.group(2)):
            return False
        age = int(time.time()) - int(m.group(1), 16)
        return -300 <= age <= TICKET_LIFETIME

    def check_password(self, username: str, password: str) -> bool:
        if username != self.creds.user:
            return False
        if hmac.compare_digest(password.encode(), self.creds.password.encode()):
            return True
        # proxmoxer renews its ticket by sending it as the password
        return self.verify_ticket(password) == username

    def verify_token(self, value: str) -> str | None:
        # verify_token: greedy ^(.*)=(.*)$, token id = everything before the LAST '='
        m = re.match(r"^(.*)=(.*)$", value, re.S)
        if not m:
            return None
        tokenid, secret = m.group(1), m.group(2)
        if not re.match(r"^[^!@\s]+@[^!\s]+![^\s]+$", tokenid):
            return None
        if tokenid != self.creds.full_token_id:
            return None
        if not hmac.compare_digest(secret.encode(), self.creds.token_secret.encode()):
            return None
        return tokenid


def extract_auth_value(header: str | None, name: str) -> str | None:
    """pve-http-server Formatter::extract_auth_value: `(?:^|\\s)NAME(?:=| )([^;]*)`, URI-unescaped."""
    if not header:
        return None
    m = re.search(r"(?:^|\s)" + re.escape(name) + r"(?:=| )([^;]*)", header)
    return urllib.parse.unquote(m.group(1)) if m else None


def cookie_value(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            return urllib.parse.unquote(v)
    return None


# --------------------------------------------------------------------------
# state
# --------------------------------------------------------------------------
def sha1_digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def conf_text(config: dict[str, Any]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in sorted(config.items()) if k not in ("digest",))


class State:
    """Everything the server knows: fixture data plus what clients changed."""

    def __init__(self, fixture: dict[str, Any], schema: dict[str, Any], record_path: Path | None) -> None:
        self.lock = threading.RLock()
        self.agent_done_seq = itertools.count(1)  # see agent_command
        self.schema = schema
        self.record_path = record_path
        # no "cluster" in the fixture: a standalone node (no cluster entry, no clustername)
        self.cluster_name: str | None = (fixture.get("cluster") or {}).get("name")
        self.version: dict[str, Any] = fixture.get(
            "version", {"version": "9.1.3", "release": "9.1", "repoid": "c743d6c1"}
        )
        self.nodes: list[dict[str, Any]] = copy.deepcopy(fixture.get("nodes", []))
        self.pools: list[dict[str, Any]] = copy.deepcopy(fixture.get("pools", []))
        self.storages: list[dict[str, Any]] = [self._norm_storage(s) for s in fixture.get("storages", [])]
        self.guests: dict[int, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.started = int(time.time())
        node_names = {n["node"] for n in self.nodes}
        for g in fixture.get("guests", []):
            guest = copy.deepcopy(g)
            vmid = int(guest["vmid"])
            if vmid in self.guests:
                raise ValueError(f"fixture: duplicate vmid {vmid}")
            if guest["type"] not in ("qemu", "lxc"):
                raise ValueError(f"fixture: guest {vmid}: type must be qemu or lxc")
            if guest["node"] not in node_names:
                raise ValueError(f"fixture: guest {vmid}: unknown node {guest['node']!r}")
            guest["vmid"] = vmid
            guest.setdefault("status", "stopped")
            self._check_config(f"guest {vmid}", guest["type"], guest.get("config", {}))
            guest["config"] = self.typed(guest["type"], guest.get("config", {}))
            for name, snap in guest.get("snapshots", {}).items():
                self._check_config(f"guest {vmid} snapshot {name}", guest["type"], snap.get("config", {}))
            guest["snapshots"] = {
                name: dict(snap, config=self.typed(guest["type"], snap.get("config", {})))
                for name, snap in guest.get("snapshots", {}).items()
            }
            guest["frozen"] = False
            self.guests[vmid] = guest
        # fault injection and the request event log (section "fault injection" below)
        self.faults = Faults()
        self.events = EventLog()

    # -- helpers ----------------------------------------------------------
    def _check_config(self, where: str, kind: str, config: dict[str, Any]) -> None:
        """A fixture typo must fail loudly, not serve a config PVE could never hold."""
        props = expand_indexed(self.config_props(kind))
        for key, value in config.items():
            if key not in props:
                raise ValueError(f"fixture: {where}: {kind} config has no option {key!r}")
            msg = check_value(str(int(value)) if isinstance(value, bool) else str(value), props[key], key)
            if msg:
                raise ValueError(f"fixture: {where}: {key}: {msg}")

    def config_props(self, kind: str) -> dict[str, Any]:
        return self.schema[f"/nodes/{{node}}/{kind}/{{vmid}}/config"]["info"]["GET"]["returns"]["properties"]

    def typed(self, kind: str, config: dict[str, Any]) -> dict[str, Any]:
        return typed_config(config, self.config_props(kind))

    @staticmethod
    def _norm_storage(s: dict[str, Any]) -> dict[str, Any]:
        out = dict(s)
        if isinstance(out.get("content"), list):
            out["content"] = ",".join(out["content"])
        for key in ("krbd", "shared", "disable", "sparse", "mkdir", "is_mountpoint"):
            if key in out:
                out[key] = int(bool(parse_boolean(out[key])))
        if out.get("type") in ("rbd", "cephfs", "nfs", "cifs", "pbs", "iscsi", "iscsidirect", "glusterfs"):
            out["shared"] = 1  # Plugin::parse_config forces it for network storages
        if isinstance(out.get("nodes"), list):
            out["nodes"] = ",".join(out["nodes"])
        return out

    def node(self, name: str) -> dict[str, Any]:
        for n in self.nodes:
            if n["node"] == name:
                if n.get("status", "online") != "online":
                    raise ApiError(595, "No route to host")
                return n
        raise die(
            f"hostname lookup '{name}' failed - failed to get address info for: {name}: Name or service not known"
        )

    def guest(self, node: str, kind: str, vmid: int) -> dict[str, Any]:
        self.node(node)
        g = self.guests.get(vmid)
        if g is None or g["node"] != node or g["type"] != kind:
            where = "qemu-server" if kind == "qemu" else "lxc"
            raise die(f"Configuration file 'nodes/{node}/{where}/{vmid}.conf' does not exist")
        return g

    def current_config(self, g: dict[str, Any], apply_pending: bool = True) -> dict[str, Any]:
        conf = dict(g["config"])
        if apply_pending:
            conf.update(g.get("pending", {}))
            for key in g.get("pending_delete", []):
                conf.pop(key, None)
        conf["digest"] = sha1_digest(conf_text(g["config"]) + json.dumps(g.get("pending", {}), sort_keys=True))
        return conf

    def record(self, entry: dict[str, Any]) -> None:
        if self.record_path is None:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.lock, open(self.record_path, "a") as f:
            f.write(line)

    def new_task(self, node: str, kind: str, ident: str, user: str, exitstatus: str = "OK") -> str:
        now = int(time.time())
        pid = secrets.randbelow(0xFFFFFF) + 1000
        upid = f"UPID:{node}:{pid:08X}:{secrets.randbelow(0xFFFFFFF):08X}:{now:08X}:{kind}:{ident}:{user}:"
        self.tasks[upid] = {
            "upid": upid,
            "node": node,
            "pid": pid,
            "pstart": int(upid.split(":")[3], 16),
            "starttime": now,
            "type": kind,
            "id": ident,
            "user": user,
            "status": "stopped",
            "exitstatus": exitstatus,
        }
        return upid


def disk_size(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, str):
        return 0
    try:
        size = parse_property_string(value, default_key="file").get("size")
        return parse_size(size) if size else 0
    except ValueError:
        return 0


def boot_disk_size(g: dict[str, Any]) -> int:
    conf = g["config"]
    if g["type"] == "lxc":
        return disk_size(conf, "rootfs")
    boot = str(conf.get("boot", ""))
    order = boot[len("order=") :].split(";") if boot.startswith("order=") else []
    for key in [*order, *sorted(conf)]:
        if QEMU_DISK_RE.match(key) and "media=cdrom" not in str(conf[key]):
            return disk_size(conf, key)
    return 0


def agent_enabled(conf: dict[str, Any]) -> bool:
    value = conf.get("agent")
    if value is None:
        return False
    try:
        enabled = parse_property_string(str(value), default_key="enabled").get("enabled", "0")
    except ValueError:
        return False
    return bool(parse_boolean(enabled))


# --------------------------------------------------------------------------
# fault injection (tests): guest-agent faults, API outages, the request event log
# --------------------------------------------------------------------------
# PVE 9's privileges per agent command (Agent.pm: check => ['perm', '/vms/{vmid}', [...], any => 1])
AGENT_PRIVS = {
    "fsfreeze-freeze": "VM.GuestAgent.FileSystemMgmt|VM.GuestAgent.Unrestricted",
    "fsfreeze-thaw": "VM.GuestAgent.FileSystemMgmt|VM.GuestAgent.Unrestricted",
    "fsfreeze-status": "VM.GuestAgent.Audit|VM.GuestAgent.FileSystemMgmt|VM.GuestAgent.Unrestricted",
    "ping": "VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted",
}
AGENT_PATH_RE = re.compile(r"^/nodes/[^/]+/qemu/(\d+)/agent/([\w-]+)$")


class Faults:
    """Faults a test injects: ``srv.inject(spec)`` (private instance) or ``--faults FILE`` (the
    lab's: JSON, re-read when the file changes). An empty spec is the faithful server. Keys:

    ``deny_agent``: ``true`` or a list of vmids: every agent call answers 403
        ``Permission check failed (/vms/VMID, PRIVS)`` (a token without the guest-agent privilege).
    ``agent_mode``: ``{"VMID": "serial"|"concurrent"}``: ``serial`` runs the guest's agent
        commands one after another, as qemu-ga does (a thaw waits behind a slow freeze);
        ``concurrent`` (the default) lets a thaw overtake a slow freeze, which lands after it.
    ``slow``: ``[{"vmid", "command", "seconds"}]``: extra time the command takes before it acts.
    ``fail``: ``[{"vmid", "command", "times", "status", "message", "delay", "effect"}]``: the
        command answers ``status`` (default 500) with ``message`` (default PVE's
        ``VM VMID qmp command 'guest-COMMAND' failed - got timeout``) after ``delay`` seconds,
        ``times`` times (default: always), and still acts on the guest when ``effect`` is true
        (a freeze answered 500 that froze the guest).
    ``outage``: ``{"after": COMMAND, "vmid", "nth", "seconds"}``: once the ``nth`` (default 1)
        successful COMMAND (of ``vmid``, when given) has been answered, the API is gone for
        ``seconds`` (``null``: until the faults change): new connections are reset, requests
        on open ones are dropped unanswered, as when pveproxy is killed.
    ``vmid`` absent in a rule: every guest. ``command`` ``"*"``: every agent command.
    """

    def __init__(self, spec: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self.agent_locks: dict[int, threading.Lock] = {}
        self.set(spec or {})

    def set(self, spec: dict[str, Any]) -> None:
        """Replace the faults; counters and any outage start afresh."""
        with self.lock:
            self.spec = copy.deepcopy(spec)
            self.used: dict[int, int] = {}  # fail rule index -> times answered
            self.successes = 0  # successful outage.after commands seen
            self.down_until: float | None = None  # an outage in progress (inf: until changed)

    def refresh(self) -> None:
        """The lab instance: re-read the faults file when it changed (absent: no faults)."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self.set(json.loads(self.path.read_text() or "{}") if stamp else {})

    @staticmethod
    def _matches(rule: dict[str, Any], vmid: int, command: str) -> bool:
        return rule.get("vmid") in (None, vmid) and rule.get("command", "*") in ("*", command)

    def denied(self, vmid: int) -> bool:
        deny = self.spec.get("deny_agent")
        return deny is True or (isinstance(deny, list) and vmid in deny)

    def serial(self, vmid: int) -> threading.Lock | None:
        if (self.spec.get("agent_mode") or {}).get(str(vmid)) != "serial":
            return None
        with self.lock:
            return self.agent_locks.setdefault(vmid, threading.Lock())

    def slow(self, vmid: int, command: str) -> float:
        return sum(float(r.get("seconds", 0)) for r in self.spec.get("slow", []) if self._matches(r, vmid, command))

    def failure(self, vmid: int, command: str) -> dict[str, Any] | None:
        """The fail rule this call answers with (counted), or None."""
        with self.lock:
            for index, rule in enumerate(self.spec.get("fail", [])):
                if not self._matches(rule, vmid, command):
                    continue
                times = rule.get("times")
                if times is not None and self.used.get(index, 0) >= int(times):
                    continue
                self.used[index] = self.used.get(index, 0) + 1
                return rule
        return None

    def succeeded(self, vmid: int, command: str) -> None:
        """An agent command answered 200: maybe the outage starts (after this answer)."""
        outage = self.spec.get("outage")
        if not outage or outage.get("after") != command or outage.get("vmid") not in (None, vmid):
            return
        with self.lock:
            self.successes += 1
            if self.successes == int(outage.get("nth", 1)) and self.down_until is None:
                seconds = outage.get("seconds")
                self.down_until = float("inf") if seconds is None else time.monotonic() + float(seconds)

    def down(self) -> bool:
        until = self.down_until
        return until is not None and time.monotonic() < until


class EventLog:
    """Every request twice, in order: when it arrives and when it completes (``seq`` orders all
    events; ``request`` pairs them). Kept in memory (``srv.events()``) and, with a path,
    appended to a JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.path = path
        # bounded: the lab's daemon serves every test of a suite
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=100_000)
        self._seq = 0
        self._request = 0

    def _add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self._seq += 1
            entry = {"seq": self._seq, "time": time.time(), **entry}
            self.entries.append(entry)
            if self.path is not None:
                with open(self.path, "a") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")

    def arrive(self, method: str, path: str) -> int:
        with self.lock:
            self._request += 1
            request = self._request
        entry: dict[str, Any] = {"event": "arrive", "request": request, "method": method, "path": path}
        m = AGENT_PATH_RE.match(path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else path)
        if m:
            entry.update(vmid=int(m.group(1)), command=m.group(2))
        self._add(entry)
        return request

    def complete(self, request: int, status: int, **extra: Any) -> None:
        """``status`` 0: dropped unanswered (an outage)."""
        self._add({"event": "complete", "request": request, "status": status, **extra})

    def refused(self) -> None:
        self._add({"event": "refused"})


# --------------------------------------------------------------------------
# handlers: (state, params, user) -> data
# --------------------------------------------------------------------------
Handler = Callable[[State, dict[str, str], str], Any]
HANDLERS: dict[tuple[str, str], Handler] = {}


def handler(method: str, path: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS[(method, path)] = fn
        return fn

    return deco


def vm_stats(s: State, g: dict[str, Any]) -> dict[str, Any]:
    running = g["status"] == "running"
    conf = g["config"]
    stats = g.get("stats", {})
    cores = (
        int(conf.get("cores", 1)) * int(conf.get("sockets", 1)) if g["type"] == "qemu" else int(conf.get("cores", 1))
    )
    mem_mib = conf.get("memory", "512")
    try:
        maxmem = int(str(mem_mib).split(",")[0].split("=")[-1]) * 1024 * 1024
    except ValueError:
        maxmem = 512 * 1024 * 1024
    out = {
        "maxcpu": cores,
        "cpu": 0.0123 if running else 0,
        "maxmem": maxmem,
        "mem": maxmem // 2 if running else 0,
        "maxdisk": boot_disk_size(g),
        "disk": 0,
        "netin": 123456 if running else 0,
        "netout": 65432 if running else 0,
        "diskread": 7654321 if running else 0,
        "diskwrite": 1234567 if running else 0,
        "uptime": int(time.time()) - s.started + 3600 if running else 0,
    }
    out.update(stats)
    return out


@handler("GET", "/version")
def get_version(s: State, p: dict[str, str], user: str) -> Any:
    return dict(s.version)


@handler("GET", "/access/ticket")
def get_ticket(s: State, p: dict[str, str], user: str) -> Any:
    return None


@handler("GET", "/nodes")
def get_nodes(s: State, p: dict[str, str], user: str) -> Any:
    out = []
    for n in s.nodes:
        item = {"node": n["node"], "status": n.get("status", "online"), "type": "node", "id": f"node/{n['node']}"}
        if item["status"] == "online":
            item.update(
                {
                    "cpu": 0.0234,
                    "maxcpu": n.get("maxcpu", 8),
                    "mem": n.get("mem", 4 * 1024**3),
                    "maxmem": n.get("maxmem", 32 * 1024**3),
                    "disk": 3 * 1024**3,
                    "maxdisk": 64 * 1024**3,
                    "uptime": int(time.time()) - s.started + 86400,
                    "level": "",
                    "ssl_fingerprint": n.get(
                        "ssl_fingerprint", ":".join(f"{b:02X}" for b in hashlib.sha256(n["node"].encode()).digest())
                    ),
                }
            )
        out.append(item)
    return out


@handler("GET", "/cluster/status")
def get_cluster_status(s: State, p: dict[str, str], user: str) -> Any:
    online = [n for n in s.nodes if n.get("status", "online") == "online"]
    out: list[dict[str, Any]] = []
    if s.cluster_name:
        out.append(
            {
                "type": "cluster",
                "id": "cluster",
                "name": s.cluster_name,
                "nodes": len(s.nodes),
                "quorate": int(len(online) * 2 > len(s.nodes)),
                "version": len(s.nodes) + 2,
            }
        )
    for i, n in enumerate(s.nodes, 1):
        out.append(
            {
                "type": "node",
                "id": f"node/{n['node']}",
                "name": n["node"],
                "nodeid": i,
                "ip": n.get("ip", f"10.0.0.{i}"),
                "local": int(i == 1),
                "level": "",
                "online": int(n.get("status", "online") == "online"),
            }
        )
    return out


def guest_resource(s: State, g: dict[str, Any]) -> dict[str, Any]:
    conf = g["config"]
    item: dict[str, Any] = {
        "id": f"{g['type']}/{g['vmid']}",
        "type": g["type"],
        "vmid": g["vmid"],
        "node": g["node"],
    }
    node = next(n for n in s.nodes if n["node"] == g["node"])
    if node.get("status", "online") != "online" or g.get("no_stats"):
        # No RRD data (an offline node, or a guest too new to have statistics): no name/template/stats.
        item["status"] = "unknown"
    else:
        item["status"] = g["status"]
        item["name"] = str(
            conf.get(
                "name" if g["type"] == "qemu" else "hostname",
                f"VM {g['vmid']}" if g["type"] == "qemu" else f"CT{g['vmid']}",
            )
        )
        item["template"] = int(conf.get("template", 0))
        stats = vm_stats(s, g)
        if g["type"] == "lxc":
            stats.pop("memhost", None)
        elif g["status"] == "running":
            stats.setdefault("memhost", stats["mem"] + 50 * 1024 * 1024)
        item.update(stats)
    for key in ("tags", "lock"):
        if key in conf:
            item[key] = conf[key]
    if g.get("pool"):
        item["pool"] = g["pool"]
    if g.get("hastate"):
        item["hastate"] = g["hastate"]
    return item


@handler("GET", "/cluster/resources")
def get_resources(s: State, p: dict[str, str], user: str) -> Any:
    want = p.get("type")
    out: list[dict[str, Any]] = []
    if want in (None, "vm"):
        out.extend(guest_resource(s, g) for _, g in sorted(s.guests.items()))
    if want in (None, "node"):
        for n in get_nodes(s, p, user):
            item = dict(n)
            item.pop("ssl_fingerprint", None)
            if item["status"] == "online":
                item["cgroup-mode"] = 2
            out.append(item)
    if want in (None, "storage"):
        for st in s.storages:
            if parse_boolean(st.get("disable", 0)):
                continue
            allowed = set(st["nodes"].split(",")) if st.get("nodes") else None
            for n in s.nodes:
                if n.get("status", "online") != "online" or (allowed and n["node"] not in allowed):
                    continue
                out.append(
                    {
                        "id": f"storage/{n['node']}/{st['storage']}",
                        "type": "storage",
                        "storage": st["storage"],
                        "node": n["node"],
                        "status": "available",
                        "plugintype": st["type"],
                        "content": st.get("content", ""),
                        "shared": int(st.get("shared", 0)),
                        "disk": 2 * 1024**3,
                        "maxdisk": 100 * 1024**3,
                    }
                )
    if want is None:
        out.extend({"id": f"/pool/{pool['poolid']}", "type": "pool", "pool": pool["poolid"]} for pool in s.pools)
    return out


def storage_item(s: State, st: dict[str, Any]) -> dict[str, Any]:
    item = dict(st)
    item["digest"] = sha1_digest(s.storages)
    return item


@handler("GET", "/storage")
def get_storages(s: State, p: dict[str, str], user: str) -> Any:
    return [storage_item(s, st) for st in s.storages if p.get("type") in (None, st["type"])]


@handler("GET", "/storage/{storage}")
def get_storage(s: State, p: dict[str, str], user: str) -> Any:
    for st in s.storages:
        if st["storage"] == p["storage"]:
            return storage_item(s, st)
    raise die(f"storage '{p['storage']}' does not exist")


def guest_list_item(s: State, g: dict[str, Any]) -> dict[str, Any]:
    conf = g["config"]
    stats = vm_stats(s, g)
    item: dict[str, Any] = {
        "vmid": g["vmid"],
        "status": g["status"],
        "name": str(conf.get("name" if g["type"] == "qemu" else "hostname", "")),
        "cpus": stats["maxcpu"],
        "maxmem": stats["maxmem"],
        "mem": stats["mem"],
        "maxdisk": stats["maxdisk"],
        "disk": 0,
        "cpu": stats["cpu"],
        "uptime": stats["uptime"],
        "netin": stats["netin"],
        "netout": stats["netout"],
        "diskread": stats["diskread"],
        "diskwrite": stats["diskwrite"],
    }
    if g["type"] == "lxc":
        item["type"] = "lxc"
        item["maxswap"] = int(conf.get("swap", 512)) * 1024 * 1024
    else:
        item.pop("disk")
        if g["status"] == "running":
            item["pid"] = g.get("pid", 10000 + g["vmid"])
            item["qmpstatus"] = "running"
            item["memhost"] = stats["mem"] + 50 * 1024 * 1024
    if int(conf.get("template", 0)):
        item["template"] = 1
    for key in ("tags", "lock"):
        if key in conf:
            item[key] = conf[key]
    return item


@handler("GET", "/nodes/{node}/qemu")
def list_qemu(s: State, p: dict[str, str], user: str) -> Any:
    s.node(p["node"])
    return [
        guest_list_item(s, g) for _, g in sorted(s.guests.items()) if g["node"] == p["node"] and g["type"] == "qemu"
    ]


@handler("GET", "/nodes/{node}/lxc")
def list_lxc(s: State, p: dict[str, str], user: str) -> Any:
    s.node(p["node"])
    return [guest_list_item(s, g) for _, g in sorted(s.guests.items()) if g["node"] == p["node"] and g["type"] == "lxc"]


def get_config(kind: str) -> Handler:
    def fn(s: State, p: dict[str, str], user: str) -> Any:
        g = s.guest(p["node"], kind, int(p["vmid"]))
        config_read_fault(g)
        if p.get("snapshot") and parse_boolean(p.get("current", "0")):
            # qemu-server/pve-container vm_config: the two parameters exclude each other.
            both = "cannot use 'snapshot' parameter with 'current'"
            raise ApiError(400, "Parameter verification failed.", {"snapshot": both, "current": both})
        if p.get("snapshot"):
            snap = g["snapshots"].get(p["snapshot"])
            if snap is None:
                raise die(f"snapshot '{p['snapshot']}' does not exist")
            conf = dict(snap["config"])
            conf["digest"] = sha1_digest(conf_text(conf))
            return conf
        return s.current_config(g, apply_pending=not parse_boolean(p.get("current", "0")))

    return fn


HANDLERS[("GET", "/nodes/{node}/qemu/{vmid}/config")] = get_config("qemu")
HANDLERS[("GET", "/nodes/{node}/lxc/{vmid}/config")] = get_config("lxc")


def get_pending(kind: str) -> Handler:
    def fn(s: State, p: dict[str, str], user: str) -> Any:
        g = s.guest(p["node"], kind, int(p["vmid"]))
        config_read_fault(g)
        pending = g.get("pending", {})
        deletes = set(g.get("pending_delete", []))
        out = []
        conf = s.current_config(g, apply_pending=False)
        for key in sorted(set(conf) | set(pending) | deletes):
            item: dict[str, Any] = {"key": key}
            if key in conf:
                item["value"] = conf[key]
            if key in pending:
                item["pending"] = pending[key]
            if key in deletes:
                item["delete"] = 1
            out.append(item)
        return out

    return fn


HANDLERS[("GET", "/nodes/{node}/qemu/{vmid}/pending")] = get_pending("qemu")
HANDLERS[("GET", "/nodes/{node}/lxc/{vmid}/pending")] = get_pending("lxc")

CONFIG_CONTROL_PARAMS = {"node", "vmid", "delete", "digest", "revert", "skiplock", "force", "background_delay"}


def set_config(kind: str, method: str) -> Handler:
    def fn(s: State, p: dict[str, str], user: str) -> Any:
        g = s.guest(p["node"], kind, int(p["vmid"]))
        conf = g["config"]
        if p.get("digest") and p["digest"] != s.current_config(g)["digest"]:
            raise die("detected modified configuration - file changed by other user? Try again.")
        if conf.get("lock") and not parse_boolean(p.get("skiplock", "0")):
            raise die(f"{'VM' if kind == 'qemu' else 'CT'} is locked ({conf['lock']})")
        deletes = [k for k in re.split(r"[,;\s\0]+", p.get("delete", "")) if k]
        changes = {k: v for k, v in p.items() if k not in CONFIG_CONTROL_PARAMS}
        both = sorted(set(deletes) & set(changes))
        if both:
            raise ApiError(
                400, "Parameter verification failed.", {k: "unable to delete and set the same option" for k in both}
            )
        if not deletes and not changes and not p.get("revert"):
            raise die("no options specified")
        if "tags" in changes:
            changes["tags"] = ";".join(t for t in re.split(r"[;, ]+", changes["tags"]) if t)
        typed = s.typed(kind, changes)
        for key in deletes:
            conf.pop(key, None)
        conf.update(typed)
        if method == "POST":
            return s.new_task(p["node"], "qmconfig", str(g["vmid"]), user)
        return None

    return fn


HANDLERS[("PUT", "/nodes/{node}/qemu/{vmid}/config")] = set_config("qemu", "PUT")
HANDLERS[("POST", "/nodes/{node}/qemu/{vmid}/config")] = set_config("qemu", "POST")
HANDLERS[("PUT", "/nodes/{node}/lxc/{vmid}/config")] = set_config("lxc", "PUT")

NIC_MODEL_KEYS = {"model", "e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551"}
NIC_MODEL_KEYS |= {"i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"}


def random_mac() -> str:
    # PVE::Tools::random_ether_addr with the Proxmox OUI prefix qemu-server uses (BC:24:11).
    return "BC:24:11:" + ":".join(f"{secrets.randbelow(256):02X}" for _ in range(3))


def with_mac(value: str, kind: str) -> str:
    """qemu parse_net/print_net and LXC's hwaddr: a NIC without a MAC gets a random one."""
    parts = value.split(",")
    if kind == "lxc":
        return value if any(p.startswith("hwaddr=") for p in parts) else f"{value},hwaddr={random_mac()}"
    model, mac, rest = None, None, []
    for part in parts:
        key, _, val = part.partition("=")
        if key == "model":
            model = val
        elif key == "macaddr":
            mac = val
        elif key in NIC_MODEL_KEYS and model is None:
            model, mac = key, val or mac
        else:
            rest.append(part)
    return ",".join([f"{model}={mac or random_mac()}", *rest])


CREATE_ONLY_PARAMS = {"node", "vmid", "start", "storage", "force", "unique", "pool", "bwlimit", "live-restore"}
CREATE_ONLY_PARAMS |= {"import-working-storage", "ha-managed", "ostemplate", "password", "ssh-public-keys"}
CREATE_ONLY_PARAMS |= {"ignore-unpack-errors", "restore", "archive"}


def create_guest(kind: str) -> Handler:
    """POST /nodes/{node}/qemu|lxc (Qemu.pm create_vm, LXC.pm create_vm), without archive restores.

    PVE checks the vmid synchronously (PVE::Cluster::check_vmid_unused: 500 `VM 100 already
    exists on node 'pve1'`, VM or CT after the existing guest's type), then forks a worker; the
    stand-in's worker is done at once. qemu: smbios1 and vmgenid are generated when absent or
    `1`, every NIC without a MAC gets one (parse_net); LXC likewise for hwaddr. The template
    (ostemplate) is not unpacked and volumes are not allocated or checked (nothing is written to
    Ceph): the volumes given are taken as they are.
    """

    def fn(s: State, p: dict[str, str], user: str) -> Any:
        s.node(p["node"])
        vmid = int(p["vmid"])
        if p.get("archive") or parse_boolean(p.get("restore", "0")):
            raise ApiError(501, f"Method 'POST /nodes/{{node}}/{kind}' with an archive not implemented")
        other = s.guests.get(vmid)
        if other is not None:
            what = "VM" if other["type"] == "qemu" else "CT"
            raise die(f"{what} {vmid} already exists on node '{other['node']}'")
        if p.get("pool") and not any(pool["poolid"] == p["pool"] for pool in s.pools):
            raise die(f"pool '{p['pool']}' does not exist")
        config = {k: v for k, v in p.items() if k not in CREATE_ONLY_PARAMS}
        for key in list(config):
            if re.fullmatch(r"net\d+", key):
                config[key] = with_mac(str(config[key]), kind)
        if kind == "qemu":
            if config.get("vmgenid", "1") == "1":
                config["vmgenid"] = str(uuid.uuid4())
            if not config.get("smbios1"):
                config["smbios1"] = f"uuid={uuid.uuid4()}"
            config.setdefault("meta", f"creation-qemu=9.2.0,ctime={int(time.time())}")
        guest: dict[str, Any] = {
            "vmid": vmid,
            "type": kind,
            "node": p["node"],
            "status": "running" if parse_boolean(p.get("start", "0")) else "stopped",
            "config": s.typed(kind, config),
            "snapshots": {},
            "frozen": False,
        }
        if p.get("pool"):
            guest["pool"] = p["pool"]
        s.guests[vmid] = guest
        return s.new_task(p["node"], "qmcreate" if kind == "qemu" else "vzcreate", str(vmid), user)

    return fn


HANDLERS[("POST", "/nodes/{node}/qemu")] = create_guest("qemu")
HANDLERS[("POST", "/nodes/{node}/lxc")] = create_guest("lxc")


def get_status(kind: str) -> Handler:
    def fn(s: State, p: dict[str, str], user: str) -> Any:
        g = s.guest(p["node"], kind, int(p["vmid"]))
        conf = g["config"]
        stats = vm_stats(s, g)
        running = g["status"] == "running"
        out: dict[str, Any] = {
            "vmid": g["vmid"],
            "status": "running" if running else "stopped",
            "name": str(conf.get("name" if kind == "qemu" else "hostname", "")),
            "cpus": stats["maxcpu"],
            "cpu": stats["cpu"],
            "maxmem": stats["maxmem"],
            "mem": stats["mem"],
            "maxdisk": stats["maxdisk"],
            "diskread": stats["diskread"],
            "diskwrite": stats["diskwrite"],
            "netin": stats["netin"],
            "netout": stats["netout"],
            "uptime": stats["uptime"],
            "ha": {"managed": 1, "state": g["hastate"]} if g.get("hastate") else {"managed": 0},
        }
        if kind == "qemu":
            out["qmpstatus"] = "running" if running else "stopped"
            if agent_enabled(conf):
                out["agent"] = 1
            if running:
                out["pid"] = g.get("pid", 10000 + g["vmid"])
                out["memhost"] = stats["mem"] + 50 * 1024 * 1024
                out["running-machine"] = "pc-i440fx-9.2+pve1"
                out["running-qemu"] = "9.2.0"
        else:
            out["type"] = "lxc"
            out["disk"] = 0
            out["maxswap"] = int(conf.get("swap", 512)) * 1024 * 1024
        if not running:
            out.pop("uptime")
        if int(conf.get("template", 0)):
            out["template"] = 1
        for key in ("tags", "lock"):
            if key in conf:
                out[key] = conf[key]
        return out

    return fn


HANDLERS[("GET", "/nodes/{node}/qemu/{vmid}/status/current")] = get_status("qemu")
HANDLERS[("GET", "/nodes/{node}/lxc/{vmid}/status/current")] = get_status("lxc")


def agent_command(command: str) -> Handler:
    def fn(s: State, p: dict[str, str], user: str) -> Any:
        vmid = int(p["vmid"])
        entry: dict[str, Any] = {"time": time.time(), "node": p["node"], "vmid": vmid, "command": command, "user": user}
        faults = s.faults
        serial = faults.serial(vmid)
        try:
            if faults.denied(vmid):  # the permission check runs before the handler body
                raise ApiError(403, f"Permission check failed (/vms/{vmid}, {AGENT_PRIVS[command]})")
            with serial or contextlib.nullcontext():
                result = run_agent_command(s, p, vmid, command)
                # The order in which the agent FINISHED commands, taken while a serial agent still
                # holds its queue: the request log's "complete" comes after the lock is released
                # and the response written, so under load a queued thaw can log it first.
                entry["agent_done"] = next(s.agent_done_seq)
            entry["result"] = result
            entry["status"] = 200
            faults.succeeded(vmid, command)
            return {"result": result}
        except ApiError as e:
            entry["error"] = e.message
            entry["status"] = e.status
            raise
        finally:
            s.record(entry)

    fn.locks_itself = True  # type: ignore[attr-defined]
    return fn


def run_agent_command(s: State, p: dict[str, str], vmid: int, command: str) -> Any:
    """One agent command as PVE and qemu-ga run it (a serial agent holds its lock around this)."""
    with s.lock:
        g = s.guest(p["node"], "qemu", vmid)
        agent = g.get("agent", {})
        # Agent.pm assert_agent_available, in this order
        if not agent_enabled(g["config"]):
            raise die("No QEMU guest agent configured")
        if g["status"] != "running":
            raise die(f"VM {vmid} is not running")
        delay = float(agent.get("delay", 0))
    failure = s.faults.failure(vmid, command)
    delay += s.faults.slow(vmid, command) + float((failure or {}).get("delay", 0))
    if delay:
        # a slow guest (freeze timeouts), or PVE's guest-ping timeout before it
        # decides the agent is not running; outside the lock
        time.sleep(delay)
    with s.lock:
        if not agent.get("running", True):
            raise die("QEMU guest agent is not running")
        injected = agent.get("errors", {}).get(command)
        if injected:
            raise die(f"VM {vmid} qmp command 'guest-{command}' failed - {injected}")
        if failure is not None:
            if failure.get("effect"):
                apply_agent_command(g, vmid, command, agent)
            message = failure.get("message") or f"VM {vmid} qmp command 'guest-{command}' failed - got timeout"
            raise ApiError(int(failure.get("status", 500)), message)
        return apply_agent_command(g, vmid, command, agent)


def apply_agent_command(g: dict[str, Any], vmid: int, command: str, agent: dict[str, Any]) -> Any:
    nfs = int(agent.get("filesystems", 2))
    if command == "fsfreeze-freeze":
        if g["frozen"]:
            raise die(
                f"VM {vmid} qmp command 'guest-fsfreeze-freeze' failed - "
                "The command guest-fsfreeze-freeze has been disabled for this instance"
            )
        g["frozen"] = True
        return nfs
    if command == "fsfreeze-thaw":
        result = nfs if g["frozen"] else 0
        g["frozen"] = False
        return result
    if command == "fsfreeze-status":
        return "frozen" if g["frozen"] else "thawed"
    if command == "ping":
        return {}
    raise die(f"unknown agent command {command}")  # pragma: no cover - only registered commands get here


for _cmd in ("fsfreeze-freeze", "fsfreeze-thaw", "fsfreeze-status", "ping"):
    HANDLERS[("POST", f"/nodes/{{node}}/qemu/{{vmid}}/agent/{_cmd}")] = agent_command(_cmd)


@handler("GET", "/nodes/{node}/qemu/{vmid}/snapshot")
def list_snapshots(s: State, p: dict[str, str], user: str) -> Any:
    g = s.guest(p["node"], "qemu", int(p["vmid"]))
    out = []
    for name, snap in g["snapshots"].items():
        item = {
            "name": name,
            "description": snap.get("description", ""),
            "snaptime": int(snap.get("snaptime", s.started)),
        }
        if snap.get("vmstate"):
            item["vmstate"] = 1
        if snap.get("parent"):
            item["parent"] = snap["parent"]
        out.append(item)
    current: dict[str, Any] = {
        "name": "current",
        "digest": s.current_config(g)["digest"],
        "description": "You are here!",
    }
    if g["status"] == "running":
        current["running"] = 1
    if g["config"].get("parent"):
        current["parent"] = g["config"]["parent"]
    out.append(current)
    return out


@handler("POST", "/nodes/{node}/qemu/{vmid}/snapshot")
def create_snapshot(s: State, p: dict[str, str], user: str) -> Any:
    g = s.guest(p["node"], "qemu", int(p["vmid"]))
    name = p["snapname"]
    if name == "current" or name.lower() == "pending":  # API2/Qemu.pm snapshot
        raise die(f"unable to use snapshot name '{name}' (reserved name)")
    if name in g["snapshots"]:
        return s.new_task(p["node"], "qmsnapshot", str(g["vmid"]), user, f"snapshot name '{name}' already used")
    conf = {k: v for k, v in g["config"].items() if k != "parent"}
    snap: dict[str, Any] = {"config": conf, "snaptime": int(time.time()), "description": p.get("description", "")}
    if g["config"].get("parent"):
        snap["parent"] = g["config"]["parent"]
    if parse_boolean(p.get("vmstate", "0")) and g["status"] == "running":
        snap["vmstate"] = 1
    g["snapshots"][name] = snap
    g["config"]["parent"] = name
    return s.new_task(p["node"], "qmsnapshot", str(g["vmid"]), user)


@handler("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(s: State, p: dict[str, str], user: str) -> Any:
    s.node(p["node"])
    if not re.match(
        r"^UPID:[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:\s]+:[^:\s]*:[^:\s]+:$",
        p["upid"],
    ):
        raise die(f"unable to parse worker upid '{p['upid']}'")
    task = s.tasks.get(p["upid"])
    if task is None:
        raise die(f"no such task '{p['upid']}'")
    return dict(task)


def pool_members(s: State, poolid: str, kind: str | None) -> list[dict[str, Any]]:
    out = []
    if kind in (None, "qemu", "lxc"):
        for _, g in sorted(s.guests.items()):
            if g.get("pool") == poolid and kind in (None, g["type"]):
                out.append(guest_resource(s, g))
    return out


@handler("GET", "/pools")
def list_pools(s: State, p: dict[str, str], user: str) -> Any:
    out = []
    for pool in s.pools:
        if p.get("poolid") not in (None, pool["poolid"]):
            continue
        item: dict[str, Any] = {"poolid": pool["poolid"]}
        if pool.get("comment"):
            item["comment"] = pool["comment"]
        if p.get("poolid"):
            item["members"] = pool_members(s, pool["poolid"], p.get("type"))
        out.append(item)
    return out


@handler("GET", "/pools/{poolid}")
def get_pool(s: State, p: dict[str, str], user: str) -> Any:
    for pool in s.pools:
        if pool["poolid"] == p["poolid"]:
            out: dict[str, Any] = {"members": pool_members(s, pool["poolid"], p.get("type"))}
            if pool.get("comment"):
                out["comment"] = pool["comment"]
            return out
    raise die(f"pool '{p['poolid']}' does not exist")


# --------------------------------------------------------------------------
# discovery faults (node offline at runtime, config reads failing, guests without statistics)
# --------------------------------------------------------------------------
# Fixture keys of a guest (not PVE config, like "agent" and "stats"):
#   "no_stats": true        /cluster/resources lists it as PVE does a guest with no RRD data yet:
#                           status "unknown", no name, template or statistics (see guest_resource).
#   "config_error": {"status": 500, "message": "..."}
#                           GET config and GET pending of that guest fail with this status and
#                           reason (default: 500 and PVE's text for an unreadable config file).
# Both can be set or cleared at runtime on srv.state.guests[vmid] (under srv.state.lock). A node
# is taken offline or back online with set_node_status(srv.state, node, "offline"|"online"):
# /nodes and /cluster/status show it offline, its guests stay in /cluster/resources with status
# "unknown" and no statistics, and every call for it answers 595 "No route to host" (State.node).


def config_read_fault(g: dict[str, Any]) -> None:
    fault = g.get("config_error")
    if not fault:
        return
    where = "qemu-server" if g["type"] == "qemu" else "lxc"
    default = f"unable to open file '/etc/pve/nodes/{g['node']}/{where}/{g['vmid']}.conf' - Input/output error"
    raise ApiError(int(fault.get("status", 500)), str(fault.get("message") or default))


def set_node_status(s: State, node: str, status: str) -> None:
    if status not in ("online", "offline"):
        raise ValueError(f"node status must be online or offline, got {status!r}")
    with s.lock:
        for n in s.nodes:
            if n["node"] == node:
                n["status"] = status
                return
    raise ValueError(f"no node {node!r}")


# --------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------
class Router:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.routes: list[tuple[re.Pattern[str], str]] = []
        for path in schema:
            regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
            self.routes.append((re.compile(regex), path))

    def find(self, method: str, rel: str) -> tuple[str, dict[str, str], dict[str, Any]] | None:
        for regex, path in self.routes:
            m = regex.match(rel)
            if m and method in self.schema[path]["info"]:
                return (
                    path,
                    {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()},
                    self.schema[path]["info"][method],
                )
        return None


def parse_form(data: str) -> dict[str, str]:
    # PVE decode_urlencoded: repeated keys are joined with \0; we keep the last
    out: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(data, keep_blank_values=True):
        out[key] = value
    return out


class RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_HEADER
    sys_version = ""
    server: ApiServer

    def setup(self) -> None:
        self.request.settimeout(30)
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.close_connection = True
            self._handshake_failed = True
        else:
            self._handshake_failed = False
        super().setup()

    def handle(self) -> None:
        if getattr(self, "_handshake_failed", False):
            return
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            super().handle()

    # never log the request line as http.server does (query strings could hold secrets)
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _access_log(self, code: int, length: int) -> None:
        path = urllib.parse.urlsplit(self.path).path
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        user = getattr(self, "_user", None) or "-"
        self.server.log(f'{self.client_address[0]} - {user} [{stamp}] "{self.command} {path}" {code} {length}')

    def _send(self, status: int, reason: str, body: bytes | None, extra: dict[str, str] | None = None) -> None:
        # the first line only, as pve-http-server's response() does
        reason = reason.splitlines()[0] if reason else ""
        reason = reason.encode("latin-1", "replace").decode("latin-1")
        self.send_response_only(status, reason)
        self._status = status
        now = formatdate(usegmt=True)
        self.send_header("Server", SERVER_HEADER)
        self.send_header("Date", now)
        self.send_header("Expires", now)
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if body and len(body) > 1024 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        if body:
            self.send_header("Content-Type", JSON_CT)
        self.send_header("Content-Length", str(len(body or b"")))
        if status >= 300:
            self.close_connection = True  # PVE drops keep-alive after an error
            self.send_header("Connection", "close")
        else:
            self.send_header("Connection", "Keep-Alive")
        self.end_headers()
        if body:
            self.wfile.write(body)
        self._access_log(status, len(body or b""))

    def _json(self, status: int, reason: str, payload: dict[str, Any]) -> None:
        self._send(status, reason, json.dumps(payload).encode())

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 * 1024:
            raise ApiError(413, "Request Entity Too Large")
        return self.rfile.read(length).decode("utf-8", "replace") if length else ""

    def _params(self, method: str, query: str) -> dict[str, str]:
        params: dict[str, str] = {}
        if method in ("POST", "PUT"):
            body = self._read_body()
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json" and body:
                try:
                    decoded = json.loads(body)
                except ValueError:
                    raise ApiError(400, "Parameter verification failed.", {"body": "invalid JSON"}) from None
                if not isinstance(decoded, dict):
                    raise ApiError(400, "Parameter verification failed.", {"body": "not an object"})
                for k, v in decoded.items():
                    params[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
            else:
                params.update(parse_form(body))
        elif method == "DELETE":
            self._read_body()
        params.update(parse_form(query))
        params.pop("_dc", None)  # ExtJS cache buster, PVE drops it
        return params

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        state.faults.refresh()
        request = state.events.arrive(method, urllib.parse.urlsplit(self.path).path)
        self._status = 0
        try:
            if state.faults.down():
                # an outage (fault injection): dropped unanswered, the connection closed
                self.close_connection = True
                return
            self._serve(method)
        finally:
            state.events.complete(request, self._status)

    def _serve(self, method: str) -> None:
        self._user = None
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        try:
            params = self._params(method, split.query)
            if not path.startswith(API_PREFIX + "/") and path != API_PREFIX:
                raise ApiError(501, "no such uri")
            rel = "/" + path[len(API_PREFIX) :].strip("/")
            rel = re.sub(r"/+", "/", rel)
            user, via_token = self._authenticate(method, rel)
            self._user = user
            found = self.server.router.find(method, rel)
            login = found is not None and found[0] == "/access/ticket" and method == "POST"
            fn = HANDLERS.get((method, found[0])) if found else None
            if found is None or (fn is None and not login):
                raise ApiError(501, f"Method '{method} {rel}' not implemented")
            _, path_params, info = found
            if via_token and not info.get("allowtoken"):
                raise ApiError(403, f"URI '{rel}' not available with API token, need proper ticket.")
            if login:
                verify_parameters(params, info.get("parameters", {}))
                self._login(params)
                return
            all_params = dict(params)
            all_params.update(path_params)
            verify_parameters(all_params, info.get("parameters", {}))
            assert fn is not None
            if getattr(fn, "locks_itself", False):  # may sleep: must not hold up other requests
                data = fn(self.server.state, all_params, user or "")
            else:
                with self.server.state.lock:
                    data = fn(self.server.state, all_params, user or "")
            self._json(200, "OK", {"data": data})
        except ApiError as e:
            if e.status == 401:
                self._send(401, e.message, None)
                return
            payload: dict[str, Any] = {"data": None, "message": e.message + "\n"}
            if e.errors:
                payload["errors"] = e.errors
            self._json(e.status, e.message, payload)
        except Exception as e:  # a bug in the stand-in: say so, like PVE's 500
            self.server.log(f"internal error on {method} {path}: {type(e).__name__}: {e}")
            self._json(500, f"internal error: {type(e).__name__}", {"data": None, "message": f"internal error: {e}\n"})

    def _authenticate(self, method: str, rel: str) -> tuple[str | None, bool]:
        """PVE auth_handler: returns (user or token id, via_token)."""
        auth = self.server.auth
        cookie_ticket = cookie_value(self.headers.get("Cookie"), "PVEAuthCookie")
        header = self.headers.get("Authorization")
        ticket = cookie_ticket or extract_auth_value(header, "PVEAuthCookie")
        token = None if ticket else extract_auth_value(header, "PVEAPIToken")
        if rel == "/access/ticket" and method in ("GET", "POST"):
            return None, token is not None  # no auth needed (permissions: world)
        if token is not None:
            tokenid = auth.verify_token(token)
            if tokenid is None:
                raise ApiError(401, "Authentication failed!")
            return tokenid, True
        if not ticket:
            raise ApiError(401, "No ticket")
        user = auth.verify_ticket(ticket)
        if user is None:
            raise ApiError(401, "permission denied - invalid PVE ticket")
        if method != "GET" and not auth.verify_csrf(user, self.headers.get("CSRFPreventionToken")):
            raise ApiError(401, "Permission denied - invalid csrf token")
        return user, False

    def _login(self, params: dict[str, str]) -> None:
        auth = self.server.auth
        username = params["username"]
        if params.get("realm") and "@" not in username:
            username = f"{username}@{params['realm']}"
        if not auth.check_password(username, params["password"]):
            self.server.log(
                f"authentication failure; rhost={self.client_address[0]} user={username} msg=invalid credentials"
            )
            raise ApiError(401, "authentication failure")
        self._user = username
        if params.get("path") and params.get("privs"):
            self._json(200, "OK", {"data": {"username": username}})  # verify-only mode
            return
        data = {
            "username": username,
            "ticket": auth.make_ticket(username),
            "CSRFPreventionToken": auth.make_csrf(username),
            "cap": {
                "vms": {
                    p: 1
                    for p in (
                        "VM.Audit",
                        "VM.Config.Disk",
                        "VM.Config.Options",
                        "VM.Snapshot",
                        "VM.GuestAgent.Audit",
                        "VM.GuestAgent.FileSystemMgmt",
                        "VM.GuestAgent.Unrestricted",
                    )
                },
                "storage": {"Datastore.Audit": 1, "Datastore.Allocate": 1},
                "nodes": {"Sys.Audit": 1},
                "dc": {"Sys.Audit": 1},
                "access": {"User.Modify": 1},
                "sdn": {"SDN.Audit": 1},
                "mapping": {"Mapping.Audit": 1},
            },
        }
        if self.server.state.cluster_name:
            data["clustername"] = self.server.state.cluster_name
        self._json(200, "OK", {"data": data})


class ApiServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], state: State, auth: Auth, tls: ssl.SSLContext, log_file: Any) -> None:
        self.state = state
        self.auth = auth
        self.tls = tls
        self.router = Router(state.schema)
        self._log_file = log_file
        self._log_lock = threading.Lock()
        super().__init__(addr, RequestHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.state.faults.down():
            # an outage (fault injection): reset the connection, as a dead pveproxy would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            self.state.events.refused()
            raise OSError("outage")
        # headers and body are separate writes: without this, Nagle + delayed ACK cost 40 ms a request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the handshake runs in the request thread: a stuck client never blocks accept()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.log(f"connection error from {client_address[0]}: {sys.exc_info()[1]!r}")

    def log(self, line: str) -> None:
        if self._log_file is None:
            return
        with self._log_lock:
            self._log_file.write(line + "\n")
            self._log_file.flush()


# --------------------------------------------------------------------------
# TLS: a CA (pve-root-ca.pem) and a server certificate signed by it (pve-ssl.pem)
# --------------------------------------------------------------------------
def ensure_certs(cert_dir: Path, ip: str) -> tuple[Path, Path, Path]:
    """Create (once) a CA and a server cert for IP in CERT_DIR, like PVE's pve-root-ca/pve-ssl."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = cert_dir / "pve-root-ca.key", cert_dir / "pve-root-ca.pem"
    key, pem, for_ip = cert_dir / "pve-ssl.key", cert_dir / "pve-ssl.pem", cert_dir / "pve-ssl.ip"
    lock_path = cert_dir / ".lock"

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    import fcntl

    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ca_key.exists() and ca_pem.exists()):
            run(
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(ca_key),
                "-out",
                str(ca_pem),
                "-days",
                "3650",
                "-subj",
                "/CN=Proxmox Virtual Environment stand-in/OU=backurne tests/O=PVE Cluster Manager CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            )
            for p in (key, pem, for_ip):
                p.unlink(missing_ok=True)
        if not (key.exists() and pem.exists() and for_ip.exists() and for_ip.read_text().strip() == ip):
            san = f"IP:{ip},DNS:localhost,IP:127.0.0.1" if ip != "127.0.0.1" else "IP:127.0.0.1,DNS:localhost"
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                san = f"DNS:{ip},DNS:localhost,IP:127.0.0.1"
            csr = cert_dir / "pve-ssl.csr"
            ext = cert_dir / "pve-ssl.ext"
            ext.write_text(
                f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
            )
            run(
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                f"/CN={ip}/OU=PVE Cluster Node/O=Proxmox Virtual Environment",
            )
            run(
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca_pem),
                "-CAkey",
                str(ca_key),
                "-CAcreateserial",
                "-out",
                str(pem),
                "-days",
                "3650",
                "-extfile",
                str(ext),
            )
            csr.unlink(missing_ok=True)
            ext.unlink(missing_ok=True)
            for_ip.write_text(ip + "\n")
        for p in (ca_key, key):
            os.chmod(p, 0o600)
    return ca_pem, pem, key


# --------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------
def load_fixture(fixture: Path | str | dict[str, Any] | None) -> dict[str, Any]:
    if fixture is None:
        fixture = DEFAULT_FIXTURE
    if isinstance(fixture, dict):
        return copy.deepcopy(fixture)
    return json.loads(Path(fixture).read_text())


@dataclass
class RunningServer:
    """A stand-in instance served from a background thread (tests)."""

    host: str
    port: int
    ca_path: Path
    credentials: Credentials
    credentials_path: Path
    record_path: Path
    log_path: Path
    state: State
    _server: ApiServer
    _thread: threading.Thread
    _log: Any
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    def records(self) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]

    # -- fault injection (see Faults) -------------------------------------
    def inject(self, spec: dict[str, Any]) -> None:
        """Replace the injected faults (``{}``: none); counters and outages start afresh."""
        self.state.faults.set(spec)

    def frozen(self, vmid: int) -> bool:
        """The guest's filesystems are frozen (what fsfreeze-status answers)."""
        with self.state.lock:
            return bool(self.state.guests[vmid]["frozen"])

    def events(self) -> list[dict[str, Any]]:
        """The request event log: arrive/complete per request, in order (EventLog)."""
        with self.state.events.lock:
            return [dict(e) for e in self.state.events.entries]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    fixture: Path | str | dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workdir: Path | str | None = None,
    cert_dir: Path | str | None = None,
    credentials: Credentials | Path | str | None = None,
    record: Path | str | None = None,
) -> RunningServer:
    """Start a private stand-in on HOST:PORT (0 = a free port) in a thread.

    Files (cert, record, credentials, log) go under WORKDIR (a temp dir removed
    by stop() when not given).  CERT_DIR may point at a shared directory to
    reuse one CA across instances.
    """
    state = State(load_fixture(fixture), load_schema(), None)  # a bad fixture fails before any file exists
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pveapi-")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    ca, pem, key = ensure_certs(Path(cert_dir) if cert_dir else work / "tls", host)
    if isinstance(credentials, Credentials):
        creds = credentials
    elif credentials is not None:
        creds = Credentials.load(Path(credentials))
    else:
        creds = Credentials.generate()
    creds_path = work / "credentials.json"
    if not (isinstance(credentials, (str, Path)) and Path(credentials) == creds_path):
        creds.write(creds_path)
    record_path = Path(record) if record else work / "record.jsonl"
    state.record_path = record_path
    state.events.path = work / "events.jsonl"
    log_path = work / "server.log"
    log = open(log_path, "a")  # noqa: SIM115 - closed by stop()
    server = ApiServer((host, port), state, Auth(creds), tls_context(pem, key), log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="pveapi")
    thread.start()
    return RunningServer(
        host, server.server_address[1], ca, creds, creds_path, record_path, log_path, state, server, thread, log, tmp
    )


def tls_context(pem: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pem), str(key))
    return ctx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Stand-in Proxmox VE API (HTTPS) for backurne tests")
    ap.add_argument("--listen", default="127.0.0.1:8006", help="IP:PORT (default 127.0.0.1:8006)")
    ap.add_argument("--fixture", default=str(DEFAULT_FIXTURE), help="fixture JSON (guests, nodes, storages)")
    ap.add_argument("--cert-dir", required=True, help="where pve-root-ca.pem / pve-ssl.pem live (created if absent)")
    ap.add_argument("--record", required=True, help="JSON-lines file every guest-agent call is appended to")
    ap.add_argument(
        "--users",
        help="credentials JSON (user, password, token_id, token_secret); generated beside the certs if absent",
    )
    ap.add_argument("--pid-file", help="written once the socket listens")
    ap.add_argument("--faults", help="fault-injection JSON (see Faults), re-read when it changes; absent: none")
    ap.add_argument("--events", help="JSON-lines file receiving the request event log (arrive/complete)")
    args = ap.parse_args(argv)

    host, _, port_s = args.listen.rpartition(":")
    host = host.strip("[]")
    cert_dir = Path(args.cert_dir)
    ca, pem, key = ensure_certs(cert_dir, host)
    if args.users:
        users = Path(args.users)
        if not users.exists():
            Credentials.generate().write(users)
    else:
        users = cert_dir / "credentials.json"
        if not users.exists():
            Credentials.generate().write(users)
    creds = Credentials.load(users)
    state = State(load_fixture(args.fixture), load_schema(), Path(args.record))
    if args.faults:
        state.faults.path = Path(args.faults)
    if args.events:
        state.events.path = Path(args.events)
    server = ApiServer((host, int(port_s)), state, Auth(creds), tls_context(pem, key), sys.stderr)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # never the secrets: where to find them
    server.log(
        f"pveapi stand-in listening on https://{host}:{server.server_address[1]}{API_PREFIX} "
        f"(CA {ca}, credentials {users}, record {args.record}, fixture {args.fixture}, {len(state.guests)} guests)"
    )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        if args.pid_file:
            try:
                if Path(args.pid_file).read_text().strip() == str(os.getpid()):
                    Path(args.pid_file).unlink()
            except OSError:
                pass
        server.log("pveapi stand-in stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
