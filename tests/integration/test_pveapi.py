"""The stand-in Proxmox VE API (tests/pveapi/server.py) behaves as PVE does.

Most tests run a private instance (``start_server``: own port, own state) and
talk to it through proxmoxer, as the collection does, or through requests
when the raw HTTP matters (reason phrases, missing bodies, headers).  Every
GET endpoint's answer is validated against the PVE API schema subset with
jsonschema, through a translation of PVE's schema dialect that is itself
tested to reject wrong-typed answers.  The last test checks the lab's
instance and the fixture's RBD images on the live cluster.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from proxmoxer import AuthenticationError, ProxmoxAPI
from proxmoxer.core import ResourceException

REPO = Path(__file__).resolve().parents[2]
PVEAPI = REPO / "tests" / "pveapi"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


pveapi = _load("pveapi_server", PVEAPI / "server.py")
sys.path.insert(0, str(PVEAPI))  # lab_images imports `server`
lab_images = _load("pveapi_lab_images", PVEAPI / "lab_images.py")

SCHEMA: dict[str, Any] = json.loads((PVEAPI / "schema-subset.json").read_text())["endpoints"]
FIXTURE: dict[str, Any] = json.loads((PVEAPI / "fixture.json").read_text())


# --------------------------------------------------------------------------
# PVE schema dialect -> JSON Schema
# --------------------------------------------------------------------------
def to_jsonschema(pve: dict[str, Any] | None) -> dict[str, Any]:
    """Translate a PVE `returns` schema into JSON Schema (draft 2020-12).

    PVE's dialect: `type` string|integer|number|boolean|array|object|null,
    `optional: 1` on a property instead of `required`, `properties`, `items`,
    `additionalProperties` (absent = allowed), `enum`, min/max, maxLength;
    `format` (named or a property-string dict) and `pattern` (Perl regexes)
    are ignored.  Booleans are what Perl's JSON emits: the numbers 0 and 1.
    Keys like ``scsi[n]`` become explicit ``scsi0``..``scsi30``.
    """
    if not pve:
        return {}
    typ = pve.get("type")
    out: dict[str, Any] = {}
    if typ == "boolean":
        out = {"type": "integer", "enum": [0, 1]}
    elif typ in ("string", "integer", "number", "null", "array", "object"):
        out["type"] = typ
    elif typ is not None:
        raise ValueError(f"unknown PVE type {typ!r}")
    if "enum" in pve and typ != "boolean":
        out["enum"] = list(pve["enum"])
    for key in ("minimum", "maximum", "maxLength", "minLength"):
        if key in pve and typ != "boolean":
            out[key] = pve[key]
    if typ == "array" and "items" in pve:
        out["items"] = to_jsonschema(pve["items"])
    if typ == "object" or "properties" in pve:
        props = pveapi.expand_indexed(pve.get("properties", {}))
        out["properties"] = {k: to_jsonschema(v) for k, v in props.items()}
        out["required"] = sorted(
            k for k, v in pve.get("properties", {}).items() if not k.endswith("[n]") and not v.get("optional")
        )
        extra = pve.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = to_jsonschema(extra)
        elif extra is not None and not extra:
            out["additionalProperties"] = False
    return out


# Where PVE itself answers outside its declared schema (PVE never validates what it returns):
# /pending items come from the same parsed config as GET config, so `value`/`pending` of boolean
# and integer options are numbers, not the declared strings (proxmox-api.md, "JSON value types").
KNOWN_DEVIATIONS: dict[tuple[str, str], Any] = {
    ("/nodes/{node}/qemu/{vmid}/pending", "GET"): ("value", "pending"),
    ("/nodes/{node}/lxc/{vmid}/pending", "GET"): ("value", "pending"),
}


@functools.cache
def returns_validator(path: str, method: str) -> jsonschema.Draft202012Validator:
    schema = returns_schema(path, method)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def returns_schema(path: str, method: str) -> dict[str, Any]:
    schema = to_jsonschema(SCHEMA[path]["info"][method].get("returns"))
    for key in KNOWN_DEVIATIONS.get((path, method), ()):
        schema["items"]["properties"][key] = {"type": ["string", "integer"]}
    return schema


def validate_returns(path: str, method: str, data: Any) -> None:
    errors = sorted(returns_validator(path, method).iter_errors(data), key=str)
    assert not errors, f"{method} {path}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pveapi-tls")  # one CA for the module's instances


@pytest.fixture
def srv(cert_dir: Path) -> Iterator[Any]:
    """A private stand-in with the default fixture and fresh state."""
    with pveapi.start_server(cert_dir=cert_dir) as server:
        yield server


def px_password(s: Any) -> ProxmoxAPI:
    c = s.credentials
    return ProxmoxAPI(s.host, port=s.port, user=c.user, password=c.password, verify_ssl=str(s.ca_path), timeout=10)


def px_token(s: Any) -> ProxmoxAPI:
    c = s.credentials
    return ProxmoxAPI(
        s.host,
        port=s.port,
        user=c.user,
        token_name=c.token_id,
        token_value=c.token_secret,
        verify_ssl=str(s.ca_path),
        timeout=10,
    )


def login(s: Any) -> dict[str, Any]:
    r = requests.post(
        s.api_url + "/access/ticket",
        data={"username": s.credentials.user, "password": s.credentials.password},
        verify=str(s.ca_path),
        timeout=10,
    )
    assert r.status_code == 200, r.reason
    return r.json()["data"]


def raw(s: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("verify", str(s.ca_path))
    kwargs.setdefault("timeout", 10)
    return requests.request(method, s.api_url + path, **kwargs)


# --------------------------------------------------------------------------
# the validator itself
# --------------------------------------------------------------------------
def test_validator_rejects_wrong_types() -> None:
    """The translated schema is strict enough to catch a fake drifting from PVE's typing."""
    good_resource = {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "status": "running", "template": 0}
    validate_returns("/cluster/resources", "GET", [good_resource])
    bad_cases = [
        ("/cluster/resources", [dict(good_resource, vmid="100")]),  # numbers are numbers there
        ("/cluster/resources", [dict(good_resource, template=True)]),  # Perl booleans are 0/1
        ("/cluster/resources", [{"type": "qemu"}]),  # `id` is required
        ("/cluster/resources", {"id": "qemu/100", "type": "qemu"}),  # an array, not an object
        ("/nodes/{node}/qemu/{vmid}/config", {"agent": 1, "digest": "x"}),  # config strings stay strings
        ("/nodes/{node}/qemu/{vmid}/config", {"scsi0": 5}),  # indexed keys are checked too
        ("/nodes/{node}/qemu/{vmid}/config", {"onboot": "1"}),  # booleans are numbers
        ("/nodes/{node}/qemu/{vmid}/status/current", {"vmid": 100, "status": "running"}),  # `ha` required
        ("/nodes/{node}/qemu/{vmid}/status/current", {"vmid": 100, "status": "up", "ha": {}}),  # enum
        ("/version", {"version": "9.1.3", "release": 9.1, "repoid": "c743d6c1"}),
        ("/pools/{poolid}", {"members": [], "surprise": 1}),  # additionalProperties: 0
    ]
    for path, data in bad_cases:
        with pytest.raises(AssertionError):
            validate_returns(path, "GET", data)


def test_every_get_endpoint_matches_the_schema(srv: Any) -> None:
    px = px_password(srv)
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("/version", "/version", {}),
        ("/access/ticket", "/access/ticket", {}),
        ("/nodes", "/nodes", {}),
        ("/cluster/status", "/cluster/status", {}),
        ("/cluster/resources", "/cluster/resources", {}),
        ("/storage", "/storage", {}),
        ("/storage", "/storage", {"type": "rbd"}),
        ("/pools", "/pools", {}),
        ("/pools", "/pools", {"poolid": "prod"}),
        ("/pools/{poolid}", "/pools/prod", {}),
    ]
    for kind in ("vm", "node", "storage", "sdn"):
        calls.append(("/cluster/resources", "/cluster/resources", {"type": kind}))
    for st in FIXTURE["storages"]:
        calls.append(("/storage/{storage}", f"/storage/{st['storage']}", {}))
    for node in ("pve1", "pve2"):
        calls.append(("/nodes/{node}/qemu", f"/nodes/{node}/qemu", {}))
        calls.append(("/nodes/{node}/lxc", f"/nodes/{node}/lxc", {}))
    for g in FIXTURE["guests"]:
        base = f"/nodes/{g['node']}/{g['type']}/{g['vmid']}"
        for sub in ("config", "pending", "status/current"):
            calls.append((f"/nodes/{{node}}/{g['type']}/{{vmid}}/{sub}", f"{base}/{sub}", {}))
        calls.append((f"/nodes/{{node}}/{g['type']}/{{vmid}}/config", f"{base}/config", {"current": 1}))
        if g["type"] == "qemu":
            calls.append(("/nodes/{node}/qemu/{vmid}/snapshot", f"{base}/snapshot", {}))
    upid = px.nodes("pve1").qemu(100).snapshot.post(snapname="before_test", description="x")
    validate_returns("/nodes/{node}/qemu/{vmid}/snapshot", "POST", upid)
    calls.append(("/nodes/{node}/tasks/{upid}/status", f"/nodes/pve1/tasks/{upid}/status", {}))
    calls.append(("/nodes/{node}/qemu/{vmid}/config", "/nodes/pve1/qemu/100/config", {"snapshot": "before_test"}))
    calls.append(("/nodes/{node}/qemu/{vmid}/snapshot", "/nodes/pve1/qemu/100/snapshot", {}))

    for template, path, params in calls:
        data = px.get(path.lstrip("/"), **params)
        validate_returns(template, "GET", data)
    exercised = {t for t, _, _ in calls}
    all_gets = {p for p, v in SCHEMA.items() if "GET" in v["info"]}
    assert exercised == all_gets, f"GET endpoints not exercised: {sorted(all_gets - exercised)}"

    # the POST answers too
    validate_returns("/access/ticket", "POST", login(srv))
    for cmd in ("fsfreeze-freeze", "fsfreeze-status", "fsfreeze-thaw", "ping"):
        res = px.nodes("pve1").qemu(100).agent(cmd).post()
        validate_returns(f"/nodes/{{node}}/qemu/{{vmid}}/agent/{cmd}", "POST", res)
        assert set(res) == {"result"}
    validate_returns("/nodes/{node}/qemu/{vmid}/config", "PUT", px.nodes("pve1").qemu(100).config.put(tags="x"))


def test_pve_json_typing(srv: Any) -> None:
    px = px_token(srv)
    conf = px.nodes("pve1").qemu(100).config.get()
    assert conf["agent"] == "1,fstrim_cloned_disks=1"
    assert px.nodes("pve2").qemu(102).config.get()["agent"] == "1"  # a string, never the number 1
    assert conf["memory"] == "2048" and conf["cores"] == 2 and conf["onboot"] == 1
    assert len(conf["digest"]) == 40
    ct = px.nodes("pve2").lxc(104).config.get()
    assert ct["memory"] == 512 and ct["unprivileged"] == 1 and ct["rootfs"].startswith("ceph-ct:")
    storages = {s["storage"]: s for s in px.storage.get()}
    assert storages["ceph-ct"]["krbd"] == 1 and storages["ceph-vm"]["krbd"] == 0
    assert storages["ceph-vm"]["shared"] == 1 and "pool" not in storages["ceph-vm"]
    assert storages["ceph-vm"]["namespace"] == "pve"
    assert set(storages["ceph-ct"]["content"].split(",")) == {"rootdir", "images"}
    vms = {v["vmid"]: v for v in px.cluster.resources.get(type="vm")}
    assert set(vms) == {g["vmid"] for g in FIXTURE["guests"]}
    assert vms[104]["type"] == "lxc" and vms[100]["type"] == "qemu"
    assert vms[9000]["template"] == 1 and vms[100]["template"] == 0
    assert vms[100]["tags"] == "prod;web" and vms[100]["pool"] == "prod"
    assert all(isinstance(v["maxmem"], int) for v in vms.values())
    status = px.nodes("pve1").qemu(100).status.current.get()
    assert status["status"] == "running" and status["agent"] == 1 and status["ha"]["managed"] == 1
    assert "agent" not in px.nodes("pve2").qemu(103).status.current.get()  # agent: 0
    stopped = px.nodes("pve2").qemu(103).status.current.get()
    assert stopped["status"] == "stopped" and "pid" not in stopped
    # only the other type: never a qemu listing with containers
    assert [g["vmid"] for g in px.nodes("pve2").lxc.get()] == [104]
    assert sorted(g["vmid"] for g in px.nodes("pve2").qemu.get()) == [102, 103]


# --------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------
def test_password_login_and_csrf_protected_post(srv: Any) -> None:
    data = login(srv)
    assert data["username"] == "root@pam"
    assert data["ticket"].startswith("PVE:root@pam:") and "::" in data["ticket"]
    assert ":" in data["CSRFPreventionToken"] and data["clustername"] == "lab-pve"
    cookies = {"PVEAuthCookie": data["ticket"]}
    ok = raw(
        srv,
        "POST",
        "/nodes/pve1/qemu/100/agent/ping",
        cookies=cookies,
        headers={"CSRFPreventionToken": data["CSRFPreventionToken"]},
    )
    assert ok.status_code == 200 and ok.json() == {"data": {"result": {}}}
    assert ok.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert ok.headers["Server"] == "pve-api-daemon/3.0"
    # GET needs no CSRF token
    assert raw(srv, "GET", "/version", cookies=cookies).json()["data"]["version"] == "9.1.3"
    # the ticket in the Authorization header works too
    assert raw(srv, "GET", "/version", headers={"Authorization": f"PVEAuthCookie={data['ticket']}"}).status_code == 200
    # proxmoxer renews a ticket by sending it as the password
    renewed = raw(srv, "POST", "/access/ticket", data={"username": "root@pam", "password": data["ticket"]})
    assert renewed.status_code == 200 and renewed.json()["data"]["ticket"].startswith("PVE:root@pam:")
    # and proxmoxer itself: login, then a POST (it adds the CSRF header)
    px = px_password(srv)
    assert px.nodes("pve1").qemu(100).agent("ping").post() == {"result": {}}


def test_post_without_csrf_token_is_refused(srv: Any) -> None:
    data = login(srv)
    cookies = {"PVEAuthCookie": data["ticket"]}
    for headers in ({}, {"CSRFPreventionToken": "66F0A1B2:forged"}):
        r = raw(srv, "POST", "/nodes/pve1/qemu/100/agent/fsfreeze-freeze", cookies=cookies, headers=headers)
        assert r.status_code == 401
        assert r.reason == "Permission denied - invalid csrf token"
        assert r.content == b""  # 401s carry no body
        r = raw(srv, "PUT", "/nodes/pve1/qemu/100/config", cookies=cookies, headers=headers, data={"name": "x"})
        assert r.status_code == 401
    assert srv.records() == []  # the refused freeze never reached the guest
    assert px_token(srv).nodes("pve1").qemu(100).config.get()["name"] == "web1"


def test_token_auth(srv: Any) -> None:
    px = px_token(srv)
    assert px.version.get()["release"] == "9.1"
    # token requests are exempt from CSRF
    assert px.nodes("pve1").qemu(100).agent("fsfreeze-status").post() == {"result": "thawed"}
    assert srv.records()[-1]["user"] == "root@pam!backurne"
    c = srv.credentials
    header = f"PVEAPIToken={c.user}!{c.token_id}={c.token_secret}"
    assert raw(srv, "GET", "/nodes", headers={"Authorization": header}).status_code == 200
    for bad in (
        f"PVEAPIToken={c.user}!{c.token_id}=00000000-0000-0000-0000-000000000000",
        f"PVEAPIToken={c.user}!other={c.token_secret}",
        f"PVEAPIToken=nobody@pam!{c.token_id}={c.token_secret}",
        f"PVEAPIToken={c.token_secret}",
    ):
        r = raw(srv, "GET", "/version", headers={"Authorization": bad})
        assert (r.status_code, r.reason, r.content) == (401, "Authentication failed!", b"")
    # not with a token: the ticket endpoint (allowtoken 0)
    r = raw(
        srv,
        "POST",
        "/access/ticket",
        headers={"Authorization": header},
        data={"username": c.user, "password": c.password},
    )
    assert r.status_code == 403
    assert r.reason == "URI '/access/ticket' not available with API token, need proper ticket."


def test_unauthenticated_and_bad_tickets(srv: Any) -> None:
    r = raw(srv, "GET", "/version")
    assert (r.status_code, r.reason, r.content) == (401, "No ticket", b"")
    forged = "PVE:root@pam:66F0A1B2::c2lnbmF0dXJl"
    r = raw(srv, "GET", "/version", cookies={"PVEAuthCookie": forged})
    assert (r.status_code, r.reason) == (401, "permission denied - invalid PVE ticket")
    # a ticket of another instance (other signing key) is as good as forged
    with pveapi.start_server(cert_dir=srv.ca_path.parent, credentials=srv.credentials) as other:
        foreign = login(other)["ticket"]
    r = raw(srv, "GET", "/version", cookies={"PVEAuthCookie": foreign})
    assert r.status_code == 401


def test_wrong_password_fails_and_is_never_shown(srv: Any) -> None:
    wrong = "Wr0ng-pa55word-" + os.urandom(6).hex()
    c = srv.credentials
    with pytest.raises(AuthenticationError) as exc:
        ProxmoxAPI(srv.host, port=srv.port, user=c.user, password=wrong, verify_ssl=str(srv.ca_path), timeout=10)
    assert "401" in str(exc.value)
    assert wrong not in str(exc.value) and wrong not in repr(exc.value)
    r = raw(srv, "POST", "/access/ticket", data={"username": c.user, "password": wrong})
    assert (r.status_code, r.reason, r.content) == (401, "authentication failure", b"")
    assert (
        raw(srv, "POST", "/access/ticket", data={"username": "nobody@pam", "password": c.password}).status_code == 401
    )
    # successful logins and token calls leave no secret in the log either
    ticket = login(srv)["ticket"]
    px_token(srv).version.get()
    log = srv.log_path.read_text()
    assert "authentication failure" in log and "root@pam" in log  # the log is written...
    for secret in (wrong, c.password, c.token_secret, ticket):
        assert secret not in log  # ...but holds no secret


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def test_error_envelope_and_reason_phrases(srv: Any) -> None:
    px = px_token(srv)
    c = srv.credentials
    auth = {"Authorization": f"PVEAPIToken={c.full_token_id}={c.token_secret}"}
    # handler error: 500, message in the reason and the body
    r = raw(srv, "GET", "/nodes/pve2/qemu/100/config", headers=auth)  # 100 lives on pve1
    assert r.status_code == 500
    assert r.reason == "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist"
    assert r.json() == {"data": None, "message": r.reason + "\n"}
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve1").lxc(100).config.get()
    assert (
        exc.value.status_code == 500
        and exc.value.content == "Configuration file 'nodes/pve1/lxc/100.conf' does not exist"
    )
    with pytest.raises(ResourceException, match="storage 'nope' does not exist"):
        px.storage("nope").get()
    # parameter verification: 400 with per-parameter errors
    r = raw(srv, "GET", "/cluster/resources", headers=auth, params={"type": "vms", "bogus": "1"})
    assert (r.status_code, r.reason) == (400, "Parameter verification failed.")
    body = r.json()
    assert body["data"] is None and body["message"] == "Parameter verification failed.\n"
    assert set(body["errors"]) == {"type", "bogus"}
    assert "enumeration" in body["errors"]["type"]
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve1").qemu(99).config.get()
    assert exc.value.status_code == 400 and exc.value.errors == {"vmid": "value must have a minimum value of 100"}
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve1").qemu("abc").config.get()
    assert "type check ('integer') failed" in exc.value.errors["vmid"]
    # unknown path or method: 501
    r = raw(srv, "GET", "/nodes/pve1/nothing", headers=auth)
    assert (r.status_code, r.reason) == (501, "Method 'GET /nodes/pve1/nothing' not implemented")
    r = raw(srv, "DELETE", "/version", headers=auth)
    assert (r.status_code, r.reason) == (501, "Method 'DELETE /version' not implemented")
    # an offline node
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve3").qemu.get()
    assert exc.value.status_code == 595
    with pytest.raises(ResourceException, match="hostname lookup 'pve9' failed"):
        px.nodes("pve9").qemu.get()


# --------------------------------------------------------------------------
# guest agent
# --------------------------------------------------------------------------
def test_fsfreeze_sequence_is_recorded(srv: Any) -> None:
    px = px_password(srv)
    agent = px.nodes("pve1").qemu(101).agent
    assert agent("fsfreeze-status").post() == {"result": "thawed"}
    assert agent("fsfreeze-freeze").post() == {"result": 3}  # 101 has 3 filesystems
    assert agent("fsfreeze-status").post() == {"result": "frozen"}
    with pytest.raises(ResourceException) as exc:  # QGA refuses a second freeze
        agent("fsfreeze-freeze").post()
    assert "guest-fsfreeze-freeze has been disabled for this instance" in exc.value.content
    # other guests are not affected
    assert px.nodes("pve1").qemu(100).agent("fsfreeze-status").post() == {"result": "thawed"}
    assert agent.post("fsfreeze-thaw") == {"result": 3}
    assert agent("fsfreeze-status").post() == {"result": "thawed"}
    assert agent("fsfreeze-thaw").post() == {"result": 0}  # nothing left to thaw
    recs = [(r["vmid"], r["command"], r["status"], r.get("result")) for r in srv.records()]
    assert recs == [
        (101, "fsfreeze-status", 200, "thawed"),
        (101, "fsfreeze-freeze", 200, 3),
        (101, "fsfreeze-status", 200, "frozen"),
        (101, "fsfreeze-freeze", 500, None),
        (100, "fsfreeze-status", 200, "thawed"),
        (101, "fsfreeze-thaw", 200, 3),
        (101, "fsfreeze-status", 200, "thawed"),
        (101, "fsfreeze-thaw", 200, 0),
    ]
    first = srv.records()[0]
    assert first["node"] == "pve1" and first["user"] == "root@pam" and isinstance(first["time"], float)


def test_agent_errors_as_pve(srv: Any) -> None:
    px = px_token(srv)
    cases = {
        ("pve2", 102): "QEMU guest agent is not running",  # enabled, not answering
        ("pve2", 103): "No QEMU guest agent configured",  # agent: 0
        ("pve1", 9000): "VM 9000 is not running",  # enabled, stopped (a template)
    }
    for (node, vmid), message in cases.items():
        for cmd in ("fsfreeze-freeze", "ping"):
            with pytest.raises(ResourceException) as exc:
                px.nodes(node).qemu(vmid).agent(cmd).post()
            assert (exc.value.status_code, exc.value.content) == (500, message)
    r = raw(
        srv,
        "POST",
        "/nodes/pve2/qemu/102/agent/fsfreeze-freeze",
        headers={"Authorization": f"PVEAPIToken={srv.credentials.full_token_id}={srv.credentials.token_secret}"},
    )
    assert r.json() == {"data": None, "message": "QEMU guest agent is not running\n"}
    errors = [(r["vmid"], r["error"]) for r in srv.records() if r["command"] == "fsfreeze-freeze"]
    assert errors[:3] == [(102, cases[("pve2", 102)]), (103, cases[("pve2", 103)]), (9000, cases[("pve1", 9000)])]
    # there is no agent endpoint for containers
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve2").lxc(104).agent("fsfreeze-freeze").post()
    assert exc.value.status_code == 501


def test_agent_fixture_knobs(cert_dir: Path) -> None:
    fixture = json.loads(json.dumps(FIXTURE))
    g100 = next(g for g in fixture["guests"] if g["vmid"] == 100)
    g100["agent"] = {"delay": 0.3, "errors": {"fsfreeze-thaw": "guest-fsfreeze-thaw timed out"}}
    with pveapi.start_server(fixture, cert_dir=cert_dir) as s:
        px = px_token(s)
        t0 = time.monotonic()
        assert px.nodes("pve1").qemu(100).agent("fsfreeze-freeze").post() == {"result": 2}
        assert time.monotonic() - t0 >= 0.3
        with pytest.raises(ResourceException) as exc:
            px.nodes("pve1").qemu(100).agent("fsfreeze-thaw").post()
        assert exc.value.content == "VM 100 qmp command 'guest-fsfreeze-thaw' failed - guest-fsfreeze-thaw timed out"


# --------------------------------------------------------------------------
# config changes
# --------------------------------------------------------------------------
def test_config_put_changes_what_get_returns(srv: Any) -> None:
    px = px_password(srv)
    vm = px.nodes("pve1").qemu(100)
    before = vm.config.get()
    assert vm.config.put(name="web1-renamed", tags="prod,backurne-off", scsi0=before["scsi0"] + ",backup=0") is None
    after = vm.config.get()
    assert after["name"] == "web1-renamed"
    assert after["tags"] == "prod;backurne-off"  # PVE stores tags ;-separated
    assert after["scsi0"].endswith(",backup=0")
    assert after["digest"] != before["digest"]
    res = {r["vmid"]: r for r in px.cluster.resources.get(type="vm")}
    assert res[100]["name"] == "web1-renamed" and res[100]["tags"] == "prod;backurne-off"
    # delete, and POST (async form: returns a task id)
    upid = vm.config.post(delete="tags")
    assert upid.startswith("UPID:pve1:") and ":qmconfig:100:root@pam:" in upid
    assert px.nodes("pve1").tasks(upid).status.get()["exitstatus"] == "OK"
    assert "tags" not in vm.config.get()
    # LXC: mp1 now with backup=1
    vm.config.put(net1="virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=20")  # model=MAC shorthand (keyAlias)
    assert vm.config.get()["net1"] == "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=20"
    ct = px.nodes("pve2").lxc(104)
    ct.config.put(mp1="ceph-ct:vm-104-disk-2,mp=/srv/cache,backup=1,size=32M")
    assert "backup=1" in ct.config.get()["mp1"]
    # a stale digest, bad values, a locked guest: refused, nothing changed
    with pytest.raises(ResourceException) as exc:
        vm.config.put(name="x", digest=before["digest"])
    assert exc.value.content == "detected modified configuration - file changed by other user? Try again."
    with pytest.raises(ResourceException) as exc:
        vm.config.put(name="not a dns name!")
    assert exc.value.status_code == 400 and "name" in exc.value.errors
    with pytest.raises(ResourceException) as exc:
        vm.config.put(scsi0="ceph-vm:vm-100-disk-0,bogus=1")
    assert "scsi0.bogus: property is not defined in schema" in exc.value.errors["scsi0"]
    with pytest.raises(ResourceException) as exc:
        vm.config.put(agent="enabled=maybe")
    assert "type check ('boolean') failed" in exc.value.errors["agent"]
    with pytest.raises(ResourceException) as exc:
        vm.config.put(unknownkey="1")
    assert exc.value.errors == {
        "unknownkey": "property is not defined in schema and the schema does not allow additional properties"
    }
    srv.state.guests[101]["config"]["lock"] = "backup"
    with pytest.raises(ResourceException, match=r"VM is locked \(backup\)"):
        px.nodes("pve1").qemu(101).config.put(tags="x")
    assert px.nodes("pve1").qemu(101).config.get()["tags"] == "db"  # the refused change left nothing
    px.nodes("pve1").qemu(101).config.put(tags="x", skiplock=1)
    assert px.nodes("pve1").qemu(101).config.get()["tags"] == "x"
    assert vm.config.get()["name"] == "web1-renamed"


def test_create_guests_and_attach_unused_volumes(srv: Any) -> None:
    px = px_token(srv)
    # unusedN through the config endpoints (qemu POST/PUT, lxc PUT), as an attached restored disk
    px.nodes("pve1").qemu(100).config.put(unused1="ceph-vm:vm-100-disk-5")
    assert px.nodes("pve1").qemu(100).config.get()["unused1"] == "ceph-vm:vm-100-disk-5"
    px.nodes("pve2").lxc(104).config.put(unused0="ceph-ct:vm-104-disk-3")
    assert px.nodes("pve2").lxc(104).config.get()["unused0"] == "ceph-ct:vm-104-disk-3"
    # a new qemu guest: typed config, generated smbios1/vmgenid/MAC, a finished task
    upid = px.nodes("pve1").qemu.post(
        vmid=250, name="web1-copy", memory=2048, scsi0="ceph-vm:vm-250-disk-0,size=4M", net0="virtio,bridge=vmbr0"
    )
    assert ":qmcreate:250:" in upid
    assert px.nodes("pve1").tasks(upid).status.get()["exitstatus"] == "OK"
    conf = px.nodes("pve1").qemu(250).config.get()
    assert conf["memory"] == "2048" and conf["scsi0"] == "ceph-vm:vm-250-disk-0,size=4M"
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0", conf["net0"])
    assert conf["smbios1"].startswith("uuid=") and len(conf["vmgenid"]) == 36
    assert {r["vmid"] for r in px.cluster.resources.get(type="vm")} >= {250}
    # an existing vmid (of either type), a bad value, a missing ostemplate: refused, nothing made
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve1").qemu.post(vmid=104, name="x")
    assert exc.value.status_code == 500 and exc.value.content == "CT 104 already exists on node 'pve2'"
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve1").qemu.post(vmid=251, scsi0="ceph-vm:vm-251-disk-0,bogus=1")
    assert exc.value.status_code == 400 and "scsi0" in exc.value.errors
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve2").lxc.post(vmid=252, rootfs="ceph-ct:vm-252-disk-0")
    assert exc.value.status_code == 400 and "ostemplate" in exc.value.errors
    assert 251 not in srv.state.guests and 252 not in srv.state.guests
    upid = px.nodes("pve2").lxc.post(
        vmid=252, ostemplate="local:vztmpl/debian-12.tar.zst", hostname="ct2", rootfs="ceph-ct:vm-252-disk-0"
    )
    assert ":vzcreate:252:" in upid
    assert px.nodes("pve2").lxc(252).config.get()["rootfs"] == "ceph-ct:vm-252-disk-0"


def test_fixture_typos_fail_loudly(cert_dir: Path) -> None:
    for key, value, message in (
        ("scsi0x", "ceph-vm:vm-100-disk-0", "qemu config has no option 'scsi0x'"),
        ("scsi0", "ceph-vm:vm-100-disk-0,sise=3G", "scsi0.sise: property is not defined"),
        ("onboot", "perhaps", "type check ('boolean') failed"),
    ):
        fixture = json.loads(json.dumps(FIXTURE))
        fixture["guests"][0]["config"][key] = value
        with pytest.raises(ValueError, match=re.escape(message)):
            pveapi.start_server(fixture, cert_dir=cert_dir)


def test_standalone_node(cert_dir: Path) -> None:
    """Without "cluster" in the fixture: a node outside a cluster, as PVE answers it."""
    fixture = {k: v for k, v in FIXTURE.items() if k != "cluster"}
    with pveapi.start_server(fixture, cert_dir=cert_dir) as s:
        assert "clustername" not in login(s)
        status = px_token(s).cluster.status.get()
        validate_returns("/cluster/status", "GET", status)
        assert {i["type"] for i in status} == {"node"}
    with pveapi.start_server(cert_dir=cert_dir) as s:
        assert [i["name"] for i in px_token(s).cluster.status.get() if i["type"] == "cluster"] == ["lab-pve"]


def test_pending_and_snapshot_config(cert_dir: Path) -> None:
    fixture = json.loads(json.dumps(FIXTURE))
    g = next(g for g in fixture["guests"] if g["vmid"] == 100)
    g["pending"] = {"memory": "4096"}
    g["pending_delete"] = ["onboot"]
    with pveapi.start_server(fixture, cert_dir=cert_dir) as s:
        vm = px_token(s).nodes("pve1").qemu(100)
        assert vm.config.get()["memory"] == "4096" and "onboot" not in vm.config.get()
        current = vm.config.get(current=1)
        assert current["memory"] == "2048" and current["onboot"] == 1
        pending = {i["key"]: i for i in vm.pending.get()}
        assert pending["memory"] == {"key": "memory", "value": "2048", "pending": "4096"}
        assert pending["onboot"]["delete"] == 1 and "digest" in pending
        vm.snapshot.post(snapname="s1")
        vm.config.put(name="changed")
        assert vm.config.get(snapshot="s1")["name"] == "web1"
        assert vm.config.get()["parent"] == "s1"
        names = [x["name"] for x in vm.snapshot.get()]
        assert names[-1] == "current" and "s1" in names
        with pytest.raises(ResourceException) as exc:
            vm.snapshot.post(snapname="current")
        assert (exc.value.status_code, exc.value.content) == (
            500,
            "unable to use snapshot name 'current' (reserved name)",
        )
        with pytest.raises(ResourceException) as exc:
            vm.snapshot.post(snapname="9lives")
        assert exc.value.status_code == 400 and "invalid configuration ID" in exc.value.errors["snapname"]
        upid = vm.snapshot.post(snapname="s1")  # exists: the task fails, as PVE's worker does
        assert px_token(s).nodes("pve1").tasks(upid).status.get()["exitstatus"] == "snapshot name 's1' already used"


# --------------------------------------------------------------------------
# the CLI and the lab's instance
# --------------------------------------------------------------------------
def test_fixture_images_cover_every_shape() -> None:
    images = {f"{i['storage']}:{i['image']}": i for i in lab_images.fixture_images(FIXTURE)}
    assert len(images) <= 14
    assert images["ceph-vm:vm-101-disk-0"]["parent"] == "base-9000-disk-0"
    assert images["ceph-vm:vm-100-disk-0"]["pool"] == "rbd"  # pool absent -> rbd
    assert images["ceph-ct:vm-104-disk-1"]["namespace"] == "pve-ct"
    assert images["ceph-vm:vm-100-disk-2"]["size"] == 528 * 1024
    # never a non-RBD volume, a bind mount or an empty cdrom
    assert not [k for k in images if k.split(":")[0] not in ("ceph-vm", "ceph-ct", "ceph-ext")]
    assert all(i["size"] <= 64 * 1024 * 1024 for i in images.values())


def test_cli_daemon(tmp_path: Path) -> None:
    """The command line the lab uses: pid file once listening, generated credentials, clean stop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pid_file, log_file = tmp_path / "server.pid", tmp_path / "server.log"
    argv = [
        "/usr/bin/python3",
        str(PVEAPI / "server.py"),
        "--listen",
        f"127.0.0.1:{port}",
        "--cert-dir",
        str(tmp_path / "tls"),
        "--record",
        str(tmp_path / "record.jsonl"),
        "--pid-file",
        str(pid_file),
    ]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert proc.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "no pid file after 30 s"
            time.sleep(0.05)
        assert pid_file.read_text().strip() == str(proc.pid)
        creds_path = tmp_path / "tls" / "credentials.json"  # generated beside the certificates
        assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
        creds = json.loads(creds_path.read_text())
        px = ProxmoxAPI(
            "127.0.0.1",
            port=port,
            user=creds["user"],
            password=creds["password"],
            verify_ssl=str(tmp_path / "tls" / "pve-root-ca.pem"),
            timeout=10,
        )
        assert px.nodes("pve1").qemu(100).agent("fsfreeze-freeze").post() == {"result": 2}
        assert json.loads((tmp_path / "record.jsonl").read_text())["command"] == "fsfreeze-freeze"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not pid_file.exists()
    log = log_file.read_text()
    assert "listening on https://127.0.0.1" in log and "stopped" in log
    assert creds["password"] not in log and creds["token_secret"] not in log


def test_lab_instance_and_images(lab: Any) -> None:
    env: dict[str, str] = {}
    for line in (lab.lab_dir / "env.sh").read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            env[k] = v
    assert env["BACKURNE_LAB_PVE_HOST"] == lab.live_ip and env["BACKURNE_LAB_PVE_PORT"] == "8006"
    facts = json.loads((lab.lab_dir / "lab.json").read_text())["pve"]
    assert facts["ca"] == env["BACKURNE_LAB_PVE_CA"] and facts["record"] == env["BACKURNE_LAB_PVE_RECORD"]
    creds_path = Path(env["BACKURNE_LAB_PVE_CREDENTIALS"])
    assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
    creds = json.loads(creds_path.read_text())
    assert set(creds) >= {"user", "password", "token_id", "token_secret"}
    # certificate verification against the lab's CA, both auth methods
    px = ProxmoxAPI(
        lab.live_ip,
        port=8006,
        user=creds["user"],
        password=creds["password"],
        verify_ssl=env["BACKURNE_LAB_PVE_CA"],
        timeout=10,
    )
    pt = ProxmoxAPI(
        lab.live_ip,
        port=8006,
        user=creds["user"],
        token_name=creds["token_id"],
        token_value=creds["token_secret"],
        verify_ssl=env["BACKURNE_LAB_PVE_CA"],
        timeout=10,
    )
    assert px.version.get()["version"] == pt.version.get()["version"]
    assert {g["vmid"] for g in pt.cluster.resources.get(type="vm")} >= {100, 101, 102, 103, 104, 9000}
    record = Path(env["BACKURNE_LAB_PVE_RECORD"])
    before = len(record.read_text().splitlines()) if record.exists() else 0
    assert pt.nodes("pve1").qemu(100).agent("fsfreeze-status").post()["result"] in ("frozen", "thawed")
    new = [json.loads(x) for x in record.read_text().splitlines()[before:]]
    assert any(r["vmid"] == 100 and r["command"] == "fsfreeze-status" for r in new)
    log = Path(facts["log"]).read_text()
    assert creds["password"] not in log and creds["token_secret"] not in log

    # every RBD image of the fixture exists on the live cluster, where its storage says
    # (one `ls -l` and one `du` per namespace: rbd calls cost ~0.3 s each on a busy lab)
    images = lab_images.fixture_images(json.loads(Path(env["BACKURNE_LAB_PVE_FIXTURE"]).read_text()))
    for pool, namespace in sorted({(i["pool"], i["namespace"]) for i in images}):
        where = ["--pool", pool, "--namespace", namespace]
        listed = {e["image"]: e for e in lab.rbd_json("live", "ls", "-l", *where, admin=True) if "snapshot" not in e}
        used: dict[str, int] = {}  # head + snapshots (a base image's data sits in @__base__)
        for e in lab.rbd_json("live", "du", *where, admin=True)["images"]:
            used[e["name"]] = used.get(e["name"], 0) + e["used_size"]
        for img in (i for i in images if (i["pool"], i["namespace"]) == (pool, namespace)):
            spec = f"{pool}/{namespace}/{img['image']}"
            assert img["image"] in listed, f"{spec} is missing on the live cluster"
            assert listed[img["image"]]["size"] == img["size"], spec
            if img["parent"]:
                parent = listed[img["image"]]["parent"]
                assert (parent["image"], parent["snapshot"]) == (img["parent"], "__base__"), spec
            if img["fill_mib"]:
                assert used[img["image"]] > 0, f"{spec} has no data"


# --------------------------------------------------------------------------
# discovery faults: a node taken offline at runtime, config reads failing, no statistics
# --------------------------------------------------------------------------
def test_node_taken_offline_at_runtime(srv: Any) -> None:
    px = px_token(srv)
    assert px.nodes("pve1").qemu(100).config.get()["name"] == "web1"
    pveapi.set_node_status(srv.state, "pve1", "offline")
    assert {n["node"]: n["status"] for n in px.nodes.get()}["pve1"] == "offline"
    status = {item["name"]: item["online"] for item in px.cluster.status.get() if item["type"] == "node"}
    assert status["pve1"] == 0
    guests = {item["vmid"]: item for item in px.cluster.resources.get(type="vm")}
    # Still listed (pmxcfs is cluster-wide), without statistics: no name, no template.
    assert guests[100]["status"] == "unknown" and "name" not in guests[100] and "template" not in guests[100]
    assert guests[100]["tags"]  # tags come from the cluster-wide config, not from statistics
    validate_returns("/cluster/resources", "GET", list(guests.values()))
    for call in (
        lambda: px.nodes("pve1").qemu(100).config.get(),
        lambda: px.nodes("pve1").qemu(100).config.get(current=1),
        lambda: px.nodes("pve1").qemu(100).pending.get(),
        lambda: px.nodes("pve1").qemu(100).status.current.get(),
    ):
        with pytest.raises(ResourceException) as exc:
            call()
        assert exc.value.status_code == 595
    pveapi.set_node_status(srv.state, "pve1", "online")
    assert px.nodes("pve1").qemu(100).config.get(current=1)["name"] == "web1"


def test_config_read_errors_and_guests_without_statistics(srv: Any) -> None:
    px = px_token(srv)
    with srv.state.lock:
        srv.state.guests[101]["config_error"] = {"status": 500}
        srv.state.guests[102]["no_stats"] = True
    for call in (lambda: px.nodes("pve1").qemu(101).config.get(), lambda: px.nodes("pve1").qemu(101).pending.get()):
        with pytest.raises(ResourceException) as exc:
            call()
        assert exc.value.status_code == 500
        assert "nodes/pve1/qemu-server/101.conf' - Input/output error" in str(exc.value)
    assert px.nodes("pve1").qemu(101).status.current.get()["vmid"] == 101  # only config reads fail
    guests = {item["vmid"]: item for item in px.cluster.resources.get(type="vm")}
    assert guests[102]["status"] == "unknown" and "name" not in guests[102] and "maxmem" not in guests[102]
    assert guests[100]["name"] == "web1"
    assert px.nodes("pve2").qemu(102).config.get()["name"] == "app1"


def test_current_config_and_pending(srv: Any) -> None:
    px = px_token(srv)
    with srv.state.lock:
        g = srv.state.guests[100]
        g["pending"] = {"memory": "8192", "scsi5": "ceph-vm:vm-100-disk-9,size=1M"}
        g["pending_delete"] = ["onboot"]
        g["config"]["onboot"] = 1
        running_memory = g["config"].get("memory")
    merged = px.nodes("pve1").qemu(100).config.get()
    current = px.nodes("pve1").qemu(100).config.get(current=1)
    assert merged["memory"] == "8192" and "scsi5" in merged and "onboot" not in merged
    assert current.get("memory") == running_memory and "scsi5" not in current and current["onboot"] == 1
    pending = {item["key"]: item for item in px.nodes("pve1").qemu(100).pending.get()}
    assert pending["memory"]["pending"] == "8192" and pending["onboot"]["delete"] == 1
    assert "value" not in pending["scsi5"]
    # qemu-server refuses current together with snapshot.
    r = raw(
        srv,
        "GET",
        "/nodes/pve1/qemu/100/config",
        params={"current": 1, "snapshot": "x1"},
        headers={"Authorization": f"PVEAPIToken={srv.credentials.full_token_id}={srv.credentials.token_secret}"},
    )
    assert r.status_code == 400 and "cannot use 'snapshot' parameter with 'current'" in r.text
