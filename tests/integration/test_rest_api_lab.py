"""The REST API against the real lab, served by `backurne-api` (uvicorn) on loopback.

One backed-up ext4 disk (with symlinks pointing out of it) and a second backup image are put in
a fresh namespace of the backup cluster; the service runs as a separate process with a tokens
file, the way an operator runs it. Checked over HTTP: listings equal `rbd ls`/`rbd snap ls`,
map + browse + download (content checked) + path refusals on the real ext4 mount, unmap leaves
no clone, loop device, mount or record, a restore job polled to completion (checksum equal to
the backup snapshot's, no overwrite without force), every operation of the served OpenAPI
document refuses a missing or wrong token, a short schemathesis pass against the real core, and
no token in the service's log.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from rest_api_helpers import GOOD_TOKEN, REPO, WRONG_TOKEN, start_api, unmap_and_purge, write_tokens
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from backurne_browse.mapping import CLONE_PREFIX, mounted_paths

POOL = "rbd"
WEB = "lab;web;None"
DB = "lab;db;None"
SNAP = f"backup;daily;30;{datetime.now(UTC).replace(tzinfo=None).isoformat(timespec='microseconds')}"
SNAP_OLD = "backup;daily;30;2026-01-01T00:00:00.000000"
HEADERS = {"Authorization": f"Bearer {GOOD_TOKEN}"}
LAB_EXAMPLES = 40  # per generation mode, over all operations: ~20 s on the lab
BLOB = hashlib.shake_128(b"backurne rest api blob").digest(200 * 1024)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mapping needs root (loop devices, mounts)")


@dataclass
class Service:
    url: str
    ns: str
    state_dir: Path
    log: Path
    client: httpx.Client

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=HEADERS, **kwargs)


def sh(*argv: str, timeout: float = 120) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout).stdout


def make_ext4(tmp: Path) -> Path:
    src = tmp / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("web1.example\n")
    (src / "blob.bin").write_bytes(BLOB)
    (src / "inside").symlink_to("etc/hostname")
    (src / "escape-abs").symlink_to("/etc/passwd")
    (src / "escape-rel").symlink_to("../../../../../../../../etc/passwd")
    (src / "escape-dir").symlink_to("/etc")
    image = tmp / "fs.img"
    sh("truncate", "-s", "16M", str(image))
    sh("mkfs.ext4", "-q", "-F", "-d", str(src), str(image))
    return image


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def service(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("restapi")
    ns = f"t-{uuid.uuid4().hex[:8]}"
    state_dir = tmp / "state"
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    created: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    log = tmp / "service.log"
    try:
        for cluster in ("live", "backup"):
            lab.rbd(cluster, "namespace", "create", f"{POOL}/{ns}", admin=True)
            created.append(cluster)
        text = sh("bash", str(REPO / "scripts" / "lab-cli-config.sh"), ns)
        document = json.loads(text.split("\n", 1)[1])
        port = _free_port()
        document["state_dir"] = str(state_dir)
        document["api"] = {
            "tokens_file": str(write_tokens(tmp / "tokens", (GOOD_TOKEN, "lab-test"))),
            "anonymous": False,
            "listen": f"127.0.0.1:{port}",
        }
        config = tmp / "backurne.yml"
        config.write_text(json.dumps(document))

        image = make_ext4(tmp)
        for name, snaps in ((WEB, [SNAP]), (DB, [SNAP_OLD, SNAP])):
            spec = f"{POOL}/{ns}/{name}"
            lab.rbd("backup", "import", "--no-progress", str(image), spec, timeout=120)
            for snap in snaps:
                lab.rbd("backup", "snap", "create", f"{spec}@{snap}")
                lab.overwrite("backup", spec, 0.01, seed=len(snap))  # each snapshot its own content
        lab.rbd("backup", "snap", "create", f"{POOL}/{ns}/{WEB}@manual")  # foreign snapshot
        lab.rbd("backup", "create", "--size", "1M", f"{POOL}/{ns}/not-a-backup")  # foreign image

        url = f"http://127.0.0.1:{port}"
        proc = start_api(config, url, log, env, GOOD_TOKEN)
        client = httpx.Client(base_url=url, timeout=120)
        yield Service(url, ns, state_dir, log, client)
        client.close()
    finally:
        if proc is not None:
            _stop(proc)
        unmap_and_purge(lab, tmp / "backurne.yml", state_dir, env, ns, created)


def test_every_served_operation_needs_a_valid_token(service: Service) -> None:
    document = service.get("/openapi.json").json()
    samples = {"image": WEB, "snapshot": SNAP, "job_id": "0" * 32}
    operations = []
    for template, methods in document["paths"].items():
        path = template.format(**{k: v for k, v in samples.items() if "{" + k + "}" in template})
        operations += [(method.upper(), path) for method in methods]
    assert len(operations) >= 12
    for method, path in [*operations, ("GET", "/openapi.json"), ("GET", "/no/such/path")]:
        for headers in ({}, {"Authorization": f"Bearer {WRONG_TOKEN}"}, {"Authorization": f"Basic {GOOD_TOKEN}"}):
            response = service.client.request(method, path, headers=headers, params={"path": "disk"}, json={})
            assert response.status_code == 401, (method, path, headers, response.text)


def test_listings_equal_rbd(lab: Any, service: Service) -> None:
    real = lab.rbd_json("backup", "ls", "--long", "--pool", POOL, "--namespace", service.ns)
    heads = {entry["image"]: entry["size"] for entry in real if "snapshot" not in entry}
    images = service.get("/images").json()
    assert [i["image"] for i in images] == sorted(n for n in heads if n.count(";") == 2) == [DB, WEB]
    for image in images:
        assert image["size"] == heads[image["image"]]
        assert image["newest_snapshot"] == SNAP
    detail = service.get(f"/images/{DB}/snapshots").json()
    rbd_snaps = lab.rbd_json("backup", "snap", "ls", f"{POOL}/{service.ns}/{DB}")
    assert [s["name"] for s in detail["snapshots"]] == [s["name"] for s in rbd_snaps] == [SNAP_OLD, SNAP]
    web = service.get(f"/images/{WEB}/snapshots").json()
    assert [s["name"] for s in web["snapshots"]] == [SNAP] and web["foreign_snapshots"] == ["manual"]
    for missing in ("lab;nope;None", "not-a-backup"):
        response = service.get(f"/images/{missing}/snapshots")
        assert response.status_code == 404 and response.json()["image"] == missing, response.text


def assert_nothing_left(lab: Any, service: Service) -> None:
    images = lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", service.ns)
    assert not [name for name in images if name.startswith(CLONE_PREFIX)], images
    loops = json.loads(sh("losetup", "--json", "--list") or '{"loopdevices": []}')["loopdevices"]
    assert [loop for loop in loops if str(loop.get("back-file", "")).startswith(str(service.state_dir))] == []
    assert [path for path in mounted_paths() if path.startswith(str(service.state_dir))] == []
    assert service.get("/mapped").json() == []


@needs_root
def test_map_browse_download_unmap(lab: Any, service: Service) -> None:
    before = lab.checksum("backup", f"{POOL}/{service.ns}/{WEB}@{SNAP}")
    mapped = service.client.post(f"/images/{WEB}/snapshots/latest/map", headers=HEADERS)
    assert mapped.status_code == 201, mapped.text
    body = mapped.json()
    assert body["snapshot"] == SNAP
    [fs] = body["filesystems"]
    assert (fs["name"], fs["fstype"], fs["error"]) == ("disk", "ext4", None)
    again = service.client.post(f"/images/{WEB}/snapshots/{SNAP}/map", headers=HEADERS)
    assert again.status_code == 409 and again.json()["snapshot"] == SNAP
    assert [(m["image"], m["snapshot"]) for m in service.get("/mapped").json()] == [(WEB, SNAP)]

    base = f"/mapped/{WEB}/{SNAP}"
    assert [e["name"] for e in service.get(f"{base}/files").json()["entries"]] == ["disk"]
    entries = {e["name"]: e for e in service.get(f"{base}/files", params={"path": "disk"}).json()["entries"]}
    assert {"etc", "blob.bin", "inside", "escape-abs", "escape-rel", "lost+found"} <= set(entries)
    assert entries["escape-abs"] == {**entries["escape-abs"], "type": "symlink", "target": "/etc/passwd"}
    assert entries["blob.bin"]["size"] == len(BLOB)

    hostname = service.get(f"{base}/download", params={"path": "disk/etc/hostname"})
    assert hostname.status_code == 200 and hostname.content == b"web1.example\n"
    assert service.get(f"{base}/download", params={"path": "disk/inside"}).content == b"web1.example\n"
    blob = service.get(f"{base}/download", params={"path": "disk/blob.bin"})
    assert hashlib.sha256(blob.content).digest() == hashlib.sha256(BLOB).digest()
    host_passwd = Path("/etc/passwd").read_bytes()
    for path, status in (
        ("disk/escape-abs", 403),  # /etc/passwd of the host
        ("disk/escape-rel", 403),
        ("disk/escape-dir/passwd", 403),
        ("disk/../../../../etc/passwd", 422),
        ("disk/etc/../../etc/passwd", 422),
        ("/etc/passwd", 422),
        ("disk/etc/hostname\x00", 422),
        ("disk/etc", 422),
        ("disk/nothing", 404),
    ):
        response = service.get(f"{base}/download", params={"path": path})
        assert response.status_code == status, (path, response.text)
        assert response.content != host_passwd
        assert response.json()["image"] == WEB
    assert service.get(f"{base}/files", params={"path": "disk/escape-dir"}).status_code == 403

    unmapped = service.client.delete(f"/images/{WEB}/snapshots/{SNAP}/map", headers=HEADERS)
    assert unmapped.status_code == 200 and unmapped.json()["unmapped"] is True
    assert_nothing_left(lab, service)
    gone = service.client.delete(f"/images/{WEB}/snapshots/{SNAP}/map", headers=HEADERS)
    assert gone.status_code == 404
    assert service.get(f"{base}/files", params={"path": "disk"}).status_code == 404
    assert lab.checksum("backup", f"{POOL}/{service.ns}/{WEB}@{SNAP}") == before


def _wait_job(service: Service, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = service.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_restore_job(lab: Any, service: Service) -> None:
    body = {"image": DB, "snapshot": SNAP_OLD, "cluster": "live", "dest_image": "db-restored"}
    started = service.client.post("/restores", headers=HEADERS, json=body)
    assert started.status_code == 202, started.text
    job = _wait_job(service, started.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["submitted_by"] == "lab-test"
    expected = lab.checksum("backup", f"{POOL}/{service.ns}/{DB}@{SNAP_OLD}")
    assert lab.checksum("live", f"{POOL}/{service.ns}/db-restored") == expected
    assert job["result"]["checksum_target"] == job["result"]["checksum_source"]
    # never an overwrite without force, and the refusal changes nothing
    refused = service.client.post("/restores", headers=HEADERS, json=body)
    assert refused.status_code == 409 and "db-restored" in refused.json()["message"], refused.text
    assert "db-restored" in lab.rbd_json("live", "ls", "--pool", POOL, "--namespace", service.ns)
    # with force: the newer snapshot replaces it, and the previous image is kept, renamed
    forced = service.client.post("/restores", headers=HEADERS, json={**body, "snapshot": SNAP, "force": True})
    assert forced.status_code == 202, forced.text
    replaced = _wait_job(service, forced.json()["id"])
    assert replaced["state"] == "succeeded", replaced
    kept_as = replaced["result"]["kept_as"]
    assert kept_as and kept_as.startswith("db-restored")
    assert lab.checksum("live", f"{POOL}/{service.ns}/{kept_as}") == expected
    newer = lab.checksum("backup", f"{POOL}/{service.ns}/{DB}@{SNAP}")
    assert newer != expected
    assert lab.checksum("live", f"{POOL}/{service.ns}/db-restored") == newer
    unknown = service.client.post("/restores", headers=HEADERS, json={**body, "cluster": "mars"})
    assert unknown.status_code == 422 and "mars" in unknown.json()["message"]
    missing = service.client.post("/restores", headers=HEADERS, json={**body, "image": "lab;gone;None"})
    assert missing.status_code == 404 and missing.json()["image"] == "lab;gone;None"


def test_no_server_error_with_the_real_core(service: Service) -> None:
    """A short schemathesis pass over the served document, every request reaching Ceph."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", headers=HEADERS)
    reached: set[str] = set()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=schema.as_strategy(generation_mode=mode))
        @settings(
            max_examples=LAB_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=service.url, headers=HEADERS, timeout=120)
            reached.add(case.operation.label)
            case.validate_response(response, checks=[not_a_server_error], headers=HEADERS)

        run()
    assert len(reached) >= 10, reached  # the pass did go through (nearly) every operation


def test_no_token_in_the_service_log(service: Service) -> None:
    service.client.get("/images", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    service.get("/images")
    text = service.log.read_text()
    assert "refused GET /images" in text  # the refusal is logged ...
    assert WRONG_TOKEN not in text and GOOD_TOKEN not in text  # ... never a token
