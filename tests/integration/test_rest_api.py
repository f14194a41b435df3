"""REST API, web layer: authentication on every route, path safety, error codes, jobs.

No Ceph here: the core is replaced by rest_api_helpers.FakeBackend, whose "mounted snapshot" is
a real directory tree with real symlinks. test_rest_api_lab.py does the same against the lab.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_api_helpers import (
    GOOD_TOKEN,
    HOSTNAME_CONTENT,
    IMAGE,
    OTHER_TOKEN,
    REPO,
    SECRET_CONTENT,
    SNAP_NEW,
    SNAP_OLD,
    WRONG_TOKEN,
    FakeBackend,
    auth,
    build_snapshot_tree,
    config,
    token_store,
    write_tokens,
)
from starlette.routing import Route

from backurne_api import files
from backurne_api.app import create_app
from backurne_api.auth import TokensFileError, TokenStore, bearer_token, hash_token, parse_tokens_file
from backurne_api.console import is_console_path
from backurne_api.main import main as api_main
from backurne_api.main import parse_listen

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# One tree for the property test (hypothesis calls it many times within one test).
_PROPERTY_DIR = tempfile.mkdtemp(prefix="backurne-api-paths-")
atexit.register(shutil.rmtree, _PROPERTY_DIR, ignore_errors=True)
_PROPERTY_TREE = build_snapshot_tree(Path(_PROPERTY_DIR))
_PROPERTY_FILES = files.SnapshotFiles(str(_PROPERTY_TREE[0]), "property fs")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return build_snapshot_tree(tmp_path / "tree")


@pytest.fixture
def backend(tree: tuple[Path, Path]) -> FakeBackend:
    return FakeBackend(tree[0])


@pytest.fixture
def client(tmp_path: Path, backend: FakeBackend) -> TestClient:
    app = create_app(config(tmp_path), backend=backend, tokens=token_store(tmp_path))
    return TestClient(app)


def _sample(name: str) -> str:
    return {"image": IMAGE, "snapshot": SNAP_NEW, "job_id": "0" * 32}.get(name, "x")


def _every_operation(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) of every route the app serves, the OpenAPI document included."""
    operations = []
    for route in app.routes:
        if not isinstance(route, APIRoute | Route):
            continue
        if is_console_path(route.path):
            continue  # the web console's pages: a session cookie, not a token (test_web_console_unit.py)
        path = re.sub(r"{(\w+)(:\w+)?}", lambda m: _sample(m.group(1)), route.path)
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                operations.append((method, path))
    return operations


# -- authentication -------------------------------------------------------------------------


def test_every_route_refuses_missing_wrong_and_malformed_tokens(client: TestClient, backend: FakeBackend) -> None:
    backend.map(IMAGE, SNAP_NEW)  # so that browse/download/get_mapped would answer 200 if let in
    operations = _every_operation(client.app)
    paths = {path for _method, path in operations}
    # The list must really hold the API (a broken enumeration would make this test vacuous).
    assert {"/health", "/images", "/openapi.json", "/restores", f"/jobs/{'0' * 32}"} <= paths
    assert len(operations) >= 12
    bad_headers: list[dict[str, str]] = [
        {},
        auth(WRONG_TOKEN),
        {"Authorization": GOOD_TOKEN},  # no scheme
        {"Authorization": f"Basic {GOOD_TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {GOOD_TOKEN}x"},
        {"Authorization": f"Bearer {GOOD_TOKEN[:-1]}"},
        {"Authorization": "Bearer " + "a" * 5000},
    ]
    for method, path in operations:
        for headers in bad_headers:
            response = client.request(method, path, headers=headers, params={"path": "p1/etc/hostname"}, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        # and the same route does let a valid token through (whatever it then answers)
        response = client.request(method, path, headers=auth(), params={"path": "p1/etc/hostname"}, json={})
        assert response.status_code != 401, (method, path, response.text)


def test_unknown_paths_need_a_token_too(client: TestClient) -> None:
    assert client.get("/no/such/route").status_code == 401
    assert client.get("/docs").status_code == 401
    response = client.get("/no/such/route", headers=auth())
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_second_token_and_its_label(client: TestClient, backend: FakeBackend) -> None:
    response = client.post(
        "/restores", headers=auth(OTHER_TOKEN), json={"image": IMAGE, "snapshot": "latest", "cluster": "live"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["submitted_by"] == "other"


def test_anonymous_only_when_configured(tmp_path: Path, backend: FakeBackend) -> None:
    tokens = write_tokens(tmp_path / "tokens", (GOOD_TOKEN, "tester"))
    # no tokens file and no anonymous: refuses to start rather than serve nobody (or everybody)
    with pytest.raises(TokensFileError, match="anonymous"):
        create_app(config(tmp_path), backend=backend)
    closed = TestClient(create_app(config(tmp_path, tokens_file=tokens), backend=backend))
    assert closed.get("/images").status_code == 401
    assert closed.get("/images", headers=auth()).status_code == 200
    assert closed.get("/health", headers=auth()).json()["anonymous"] is False

    opened = TestClient(create_app(config(tmp_path, anonymous=True, tokens_file=tokens), backend=backend))
    assert opened.get("/images").status_code == 200
    assert opened.get("/health").json()["anonymous"] is True
    # a token that is sent is still checked: a wrong one is refused, not served as anonymous
    assert opened.get("/images", headers=auth(WRONG_TOKEN)).status_code == 401
    assert opened.get("/images", headers=auth()).status_code == 200

    anonymous_only = TestClient(create_app(config(tmp_path, anonymous=True), backend=backend))
    assert anonymous_only.get("/images").status_code == 200
    assert anonymous_only.get("/images", headers=auth()).status_code == 401


def test_tokens_file_holds_hashes_and_is_reloaded(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens", (GOOD_TOKEN, "a"))
    assert GOOD_TOKEN not in path.read_text()
    store = TokenStore(path)
    assert store.check(GOOD_TOKEN) == "a"
    assert store.check(OTHER_TOKEN) is None
    # revoke a, add b: no restart
    time.sleep(0.01)
    write_tokens(path, (OTHER_TOKEN, "b"), (WRONG_TOKEN, "c"))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert store.check(GOOD_TOKEN) is None
    assert store.check(OTHER_TOKEN) == "b"
    assert len(store) == 2


def test_tokens_file_errors_do_not_echo_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{GOOD_TOKEN}\n")  # a token pasted instead of its hash
    with pytest.raises(TokensFileError) as info:
        TokenStore(path)
    assert "line 1" in str(info.value) and GOOD_TOKEN not in str(info.value)
    with pytest.raises(TokensFileError, match="missing"):
        TokenStore(tmp_path / "missing")
    assert parse_tokens_file("# only a comment\n\n", "f") == []


def test_bearer_header_parsing() -> None:
    assert bearer_token(f"Bearer {GOOD_TOKEN}") == GOOD_TOKEN
    assert bearer_token(f"bearer {GOOD_TOKEN}") == GOOD_TOKEN
    for bad in (None, "", "Bearer", "Bearer a b", f"Token {GOOD_TOKEN}", "Bearer \x00", "Bearer " + "a" * 600):
        assert bearer_token(bad) is None, bad


def test_wrong_tokens_are_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert client.get("/images", headers=auth(WRONG_TOKEN)).status_code == 401
        assert client.get("/images", headers=auth()).status_code == 200
    text = caplog.text
    assert "invalid token" in text  # the refusal is logged ...
    assert WRONG_TOKEN not in text and GOOD_TOKEN not in text  # ... the token is not


def test_hash_and_generate_token_commands(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    assert api_main(["--generate-token", "alice"]) == 0
    out = capsys.readouterr().out
    token = re.search(r"token \(.*\): (\S+)", out).group(1)  # type: ignore[union-attr]
    line = re.search(r"tokens file line: (.+)", out).group(1)  # type: ignore[union-attr]
    assert line == f"{hash_token(token)} alice"
    assert len(token) >= 40
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert api_main(["--hash-token", "--label", "alice"]) == 0
    assert capsys.readouterr().out.strip() == line
    assert parse_tokens_file(line, "f")[0].digest == hashlib.sha256(token.encode()).digest()
    monkeypatch.setattr("sys.stdin", io.StringIO("not a token\n"))
    assert api_main(["--hash-token"]) == 2


def _serve(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "backurne_api.main", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


def test_serve_refuses_a_bad_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_tokens = tmp_path / "open.yml"
    no_tokens.write_text(json.dumps({"state_dir": str(tmp_path / "state")}))
    missing = tmp_path / "missing.yml"
    missing.write_text(json.dumps({"api": {"tokens_file": str(tmp_path / "nope")}}))
    bad_listen = tmp_path / "listen.yml"
    bad_listen.write_text(json.dumps({"api": {"anonymous": True, "listen": "localhost"}}))
    cases = ((no_tokens, "anonymous"), (missing, "nope"), (bad_listen, "HOST:PORT"), (tmp_path / "none.yml", "none"))
    for config_file, needle in cases:
        assert api_main(["--config", str(config_file)]) == 2  # before anything listens
        assert needle in capsys.readouterr().err


def test_serve_over_tls(tmp_path: Path) -> None:
    """`backurne-api --tls-cert/--tls-key` serves HTTPS (no Ceph call: /health)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_file = tmp_path / "backurne.yml"
    tokens = write_tokens(tmp_path / "tokens", (GOOD_TOKEN, "tls"))
    config_file.write_text(json.dumps({"state_dir": str(tmp_path / "state"), "api": {"tokens_file": str(tokens)}}))
    log = tmp_path / "log"
    proc = _serve(
        ["--config", str(config_file), "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key)],
        log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/health", headers=auth(), verify=str(cert), timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"backurne-api did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["status"] == "ok"
        assert httpx.get(f"https://127.0.0.1:{port}/health", verify=str(cert), timeout=5).status_code == 401
        with pytest.raises(httpx.TransportError):  # no plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{port}/health", headers=auth(), timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert GOOD_TOKEN not in log.read_text()


def test_listen_parsing() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8080", ":80", "host:http", "host:0", "host:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# -- inspection and mapping --------------------------------------------------------------------


def test_images_and_snapshots(client: TestClient) -> None:
    images = client.get("/images", headers=auth()).json()
    assert [i["image"] for i in images] == [IMAGE]
    detail = client.get(f"/images/{IMAGE}/snapshots", headers=auth()).json()
    assert [s["name"] for s in detail["snapshots"]] == [SNAP_OLD, SNAP_NEW]
    missing = client.get("/images/live;nope;None/snapshots", headers=auth())
    assert missing.status_code == 404
    assert missing.json()["image"] == "live;nope;None" and "nope" in missing.json()["message"]
    # a name rbd could never address is bad input, not a server error
    for bad in ("a@b", "a%00b"):
        response = client.get(f"/images/{bad}/snapshots", headers=auth())
        assert response.status_code == 422, (bad, response.text)


def test_map_conflict_unmap(client: TestClient, backend: FakeBackend) -> None:
    response = client.post(f"/images/{IMAGE}/snapshots/latest/map", headers=auth())
    assert response.status_code == 201
    assert response.json()["snapshot"] == SNAP_NEW
    again = client.post(f"/images/{IMAGE}/snapshots/{SNAP_NEW}/map", headers=auth())
    assert again.status_code == 409 and again.json()["snapshot"] == SNAP_NEW
    listed = client.get("/mapped", headers=auth()).json()
    assert [(m["image"], m["snapshot"]) for m in listed] == [(IMAGE, SNAP_NEW)]
    assert client.get("/health", headers=auth()).json()["mapped"] == 1
    unknown = client.post(f"/images/{IMAGE}/snapshots/backup;daily;1;2000-01-01T00:00:00/map", headers=auth())
    assert unknown.status_code == 404
    assert client.delete(f"/images/{IMAGE}/snapshots/{SNAP_NEW}/map", headers=auth()).json()["unmapped"] is True
    gone = client.delete(f"/images/{IMAGE}/snapshots/{SNAP_NEW}/map", headers=auth())
    assert gone.status_code == 404 and "not mapped" in gone.json()["message"]
    assert client.get("/mapped", headers=auth()).json() == []


# -- browsing and path safety --------------------------------------------------------------------


@pytest.fixture
def mapped(client: TestClient, backend: FakeBackend) -> str:
    backend.map(IMAGE, SNAP_NEW)
    return f"/mapped/{IMAGE}/{SNAP_NEW}"


def test_browse_lists_filesystems_and_directories(client: TestClient, mapped: str) -> None:
    top = client.get(f"{mapped}/files", headers=auth()).json()
    assert [e["name"] for e in top["entries"]] == ["p1"]
    listing = client.get(f"{mapped}/files", params={"path": "p1"}, headers=auth()).json()
    by_name = {e["name"]: e for e in listing["entries"]}
    assert by_name["etc"]["type"] == "directory"
    assert by_name["escape-abs"]["type"] == "symlink"  # listed, with its text, never followed
    assert by_name["escape-rel"]["target"] == "../../outside/secret.txt"
    assert by_name["fifo"]["type"] == "other"
    sub = client.get(f"{mapped}/files", params={"path": "p1/etc/"}, headers=auth()).json()
    assert sub["path"] == "/p1/etc"
    assert {e["name"] for e in sub["entries"]} == {"hostname", "hostname-link"}
    limited = client.get(f"{mapped}/files", params={"path": "p1", "limit": 2}, headers=auth()).json()
    assert len(limited["entries"]) == 2 and limited["truncated"] is True


def test_download(client: TestClient, mapped: str) -> None:
    response = client.get(f"{mapped}/download", params={"path": "p1/etc/hostname"}, headers=auth())
    assert response.status_code == 200
    assert response.content == HOSTNAME_CONTENT
    assert response.headers["content-length"] == str(len(HOSTNAME_CONTENT))
    assert 'filename="hostname"' in response.headers["content-disposition"]
    # symlinks that stay inside are followed
    for inside in ("p1/etc/hostname-link", "p1/data/up-and-back", "./p1//etc/./hostname"):
        response = client.get(f"{mapped}/download", params={"path": inside}, headers=auth())
        assert response.content == HOSTNAME_CONTENT, inside
    odd = client.get(f"{mapped}/download", params={"path": "p1/file with spaces ü.txt"}, headers=auth())
    assert odd.status_code == 200 and odd.content == b"spaces\n"
    assert "filename*=UTF-8''file%20with%20spaces%20%C3%BC.txt" in odd.headers["content-disposition"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("p1/../../outside/secret.txt", 422),
        ("p1/etc/../../../outside/secret.txt", 422),
        ("..", 422),
        ("p1/..", 422),
        ("p1/etc/../hostname", 422),  # even when it would stay inside
        ("/etc/passwd", 422),
        ("/p1/etc/hostname", 422),
        ("p1/etc/hostname\x00.txt", 422),
        ("p1/escape-abs", 403),
        ("p1/escape-rel", 403),
        ("p1/escape-dir/secret.txt", 403),
        ("p1/escape-root/etc/passwd", 403),
        ("p1/escape-nowhere", 403),  # refused like the others: the answer says nothing of the host
        ("p1/escape-root/no/such/host/path", 403),
        ("p1/loop", 404),
        ("p1/dangling", 404),
        ("p1/etc/nothing", 404),
        ("p9/etc/hostname", 404),
        ("p1/fifo", 422),
        ("p1/etc", 422),
        ("p1", 422),
    ],
)
def test_download_refuses(client: TestClient, mapped: str, path: str, status: int) -> None:
    response = client.get(f"{mapped}/download", params={"path": path}, headers=auth())
    assert response.status_code == status, response.text
    body = response.json()
    assert SECRET_CONTENT.decode() not in response.text
    assert body["image"] == IMAGE and body["snapshot"] == SNAP_NEW
    assert "/outside" not in body["message"] or path.endswith("outside/secret.txt")  # no host paths


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("p1/escape-dir", 403),
        ("p1/escape-root", 403),
        ("p1/..", 422),
        ("/", 422),
        ("/tmp", 422),
        ("p1/etc/hostname", 422),
    ],
)
def test_browse_refuses(client: TestClient, mapped: str, path: str, status: int) -> None:
    response = client.get(f"{mapped}/files", params={"path": path}, headers=auth())
    assert response.status_code == status, response.text


def test_browse_of_an_unmapped_snapshot(client: TestClient) -> None:
    response = client.get(f"/mapped/{IMAGE}/{SNAP_OLD}/files", params={"path": "p1"}, headers=auth())
    assert response.status_code == 404
    assert response.json()["snapshot"] == SNAP_OLD


def test_snapshot_files_unit(tree: tuple[Path, Path]) -> None:
    """The path checks without the web layer, on the same tree."""
    mnt, secret = tree
    snap = files.SnapshotFiles(str(mnt), "test fs")
    fd, size, name = snap.open_file("etc/hostname")
    assert b"".join(files.iter_fd(fd)) == HOSTNAME_CONTENT and size == len(HOSTNAME_CONTENT) and name == "hostname"
    with pytest.raises(files.OutsideSnapshot):
        snap.open_file("escape-abs")
    with pytest.raises(files.OutsideSnapshot):
        snap.list_dir("escape-dir")
    with pytest.raises(files.BadPath):
        snap.open_file("../outside/secret.txt")
    with pytest.raises(files.BadPath):
        snap.open_file(str(secret))
    # a mount root that is itself reached through a symlink still works, and still confines
    alias = mnt.parent / "alias"
    alias.symlink_to(mnt)
    via_alias = files.SnapshotFiles(str(alias), "aliased fs")
    assert via_alias.list_dir("etc")[0] == "/etc"
    with pytest.raises(files.OutsideSnapshot):
        via_alias.open_file("escape-rel")
    with pytest.raises(files.NotFound):
        files.SnapshotFiles(str(mnt.parent / "not-mounted"), "gone fs")


_NAMES = ["etc", "hostname", "hostname-link", "data", "up-and-back", "escape-abs", "escape-rel", "escape-dir"]
_NAMES += [
    "escape-root",
    "escape-nowhere",
    "loop",
    "dangling",
    "fifo",
    "..",
    ".",
    "",
    "/",
    "secret.txt",
    "outside",
    "\x00",
    "tmp",
]


@given(
    st.one_of(
        st.lists(st.sampled_from(_NAMES), max_size=6).map("/".join),
        st.text(max_size=40),
    )
)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_path_leaves_the_snapshot(path: str) -> None:
    """Whatever the path: a refusal (FileAccessError), or a file/directory inside the tree."""
    snap = _PROPERTY_FILES
    root = os.path.realpath(_PROPERTY_TREE[0])
    try:
        fd, _size, _name = snap.open_file(path)
    except files.FileAccessError:
        pass
    else:
        try:
            assert os.path.commonpath([root, os.readlink(f"/proc/self/fd/{fd}")]) == root
            assert b"".join(files.iter_fd(fd)) != SECRET_CONTENT
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    try:
        shown, entries = snap.list_dir(path)
    except files.FileAccessError:
        return
    assert os.path.realpath(os.path.join(root, shown.lstrip("/"))).startswith(root)
    assert "secret.txt" not in {e.name for e in entries}


# -- restores and jobs ------------------------------------------------------------------------------


def _wait_job(client: TestClient, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=auth()).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_restore_job_runs_and_is_polled(client: TestClient, backend: FakeBackend) -> None:
    backend.restore_gate.clear()
    response = client.post("/restores", headers=auth(), json={"image": IMAGE, "snapshot": "latest", "cluster": "live"})
    assert response.status_code == 202
    job = response.json()
    assert job["state"] in ("queued", "running") and job["params"]["snapshot"] == SNAP_NEW
    assert job["submitted_by"] == "tester"
    # a second restore to the same destination while the first runs: conflict
    second = client.post("/restores", headers=auth(), json={"image": IMAGE, "snapshot": SNAP_OLD, "cluster": "live"})
    assert second.status_code == 409 and "already running" in second.json()["message"]
    assert client.get("/health", headers=auth()).json()["jobs_running"] == 1
    backend.restore_gate.set()
    done = _wait_job(client, job["id"])
    assert done["state"] == "succeeded" and done["result"]["ok"] is True
    assert done["progress"]["bytes"] == 8 << 20
    assert [j["id"] for j in client.get("/jobs", headers=auth()).json()] == [job["id"]]
    # the destination is free again
    third = client.post("/restores", headers=auth(), json={"image": IMAGE, "snapshot": SNAP_OLD, "cluster": "live"})
    assert third.status_code == 202
    _wait_job(client, third.json()["id"])


def test_restore_failure_is_a_failed_job(client: TestClient, backend: FakeBackend) -> None:
    backend.fail_restore = True
    job = client.post("/restores", headers=auth(), json={"image": IMAGE, "snapshot": "latest", "cluster": "live"})
    done = _wait_job(client, job.json()["id"])
    assert done["state"] == "failed" and "No space left" in done["error"]
    assert done["result"] == {"ok": False}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"image": "live;nope;None", "snapshot": "latest", "cluster": "live"}, 404, "nope"),
        ({"image": IMAGE, "snapshot": "backup;x;1;2000-01-01T00:00:00", "cluster": "live"}, 404, "2000-01-01"),
        ({"image": IMAGE, "snapshot": "latest", "cluster": "mars"}, 422, "mars"),
        ({"image": IMAGE, "snapshot": "latest", "cluster": "live", "dest_image": "taken"}, 409, "taken"),
        ({"image": IMAGE, "snapshot": "latest"}, 422, "cluster"),
        ({"image": IMAGE, "snapshot": "latest", "cluster": "live", "extra": 1}, 422, "extra"),
        ({"image": IMAGE, "snapshot": "latest", "cluster": "live", "force": "maybe"}, 422, "force"),
        ({"image": IMAGE, "snapshot": "latest", "cluster": "live", "dest_image": "a/b"}, 422, "a/b"),
        ({"image": "", "snapshot": "latest", "cluster": "live"}, 422, "image"),
    ],
)
def test_restore_bad_requests(
    client: TestClient, backend: FakeBackend, body: dict[str, Any], status: int, needle: str
) -> None:
    backend.existing_targets.add("taken")
    response = client.post("/restores", headers=auth(), json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]
    assert backend.restores == []  # nothing started


def test_restore_with_force_replaces(client: TestClient, backend: FakeBackend) -> None:
    backend.existing_targets.add("taken")
    body = {"image": IMAGE, "snapshot": "latest", "cluster": "live", "dest_image": "taken", "force": True}
    response = client.post("/restores", headers=auth(), json=body)
    assert response.status_code == 202
    assert _wait_job(client, response.json()["id"])["state"] == "succeeded"
    assert backend.restores[0].force is True


def test_unknown_job_and_invalid_json(client: TestClient) -> None:
    response = client.get("/jobs/nope", headers=auth())
    assert response.status_code == 404 and "nope" in response.json()["message"]
    broken = client.post("/restores", headers={**auth(), "Content-Type": "application/json"}, content=b"{not json")
    assert broken.status_code == 422 and broken.json()["error"] == "invalid_input"
    not_utf8 = client.post("/restores", headers={**auth(), "Content-Type": "application/json"}, content=b"]x\xff")
    assert not_utf8.status_code == 422 and not_utf8.json()["error"] == "invalid_input"
