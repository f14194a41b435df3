"""REST API guards: no token ever reaches the log (query strings are never logged), and request
bodies over ``api.max_body_bytes`` are refused with 413 before they are read whole.

Through a real ``backurne-api`` process (uvicorn) on loopback where the server matters (its log,
its reading of the socket, its memory); no Ceph call is made (/health, /restores with bad
bodies). The core is not needed: the guards sit in front of every route.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from rest_api_helpers import GOOD_TOKEN, REPO, FakeBackend, auth, config, token_store, write_tokens

from backurne_api.app import create_app
from backurne_cli.config import ApiSettings, Config, ConfigError, parse_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET = "s3cr3t-query-token-0123456789abcdefghijklmnop"
LIMIT = 64 * 1024
MiB = 1024 * 1024


class Service:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> str:
        """Stop the service and return everything it wrote (stdout and stderr)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        return self.log.read_text(errors="replace")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tokens = write_tokens(tmp_path / "tokens", (GOOD_TOKEN, "guards"))
    config_file = tmp_path / "backurne.yml"
    config_file.write_text(
        json.dumps({"state_dir": str(tmp_path / "state"), "api": {"tokens_file": str(tokens), "max_body_bytes": LIMIT}})
    )
    log = tmp_path / "service.log"
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    with open(log, "wb") as out:
        # --log-level debug: the most the service would ever write.
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "backurne_api.main", "--config", str(config_file)),
                *("--listen", f"127.0.0.1:{port}", "--log-level", "debug"),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    running = Service(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{running.url}/health", headers=auth(), timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"backurne-api did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield running
    finally:
        running.stop()


def _raw_request(port: int, head: str, body_chunks: Iterator[bytes] | None = None) -> tuple[bytes, int]:
    """Send a request by hand; return (the response as read, body bytes the socket took)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode("latin-1"))
        if body_chunks is not None:
            conn.settimeout(5)
            try:
                for chunk in body_chunks:
                    conn.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the server stopped reading: what the test wants
        conn.settimeout(10)
        response = b""
        try:
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                data = conn.recv(65536)
                if not data:
                    break
                response += data
        except (ConnectionResetError, TimeoutError):
            pass
    return response, sent


# -- the log -----------------------------------------------------------------------------------


def test_a_token_in_the_query_string_never_reaches_the_log(service: Service) -> None:
    refused = httpx.get(f"{service.url}/images?token={SECRET}", timeout=10)
    assert refused.status_code == 401
    served = httpx.get(f"{service.url}/health?access_token={SECRET}&x=1", headers=auth(), timeout=10)
    assert served.status_code == 200
    missing = httpx.get(f"{service.url}/no/such/path?token={SECRET}", headers=auth(), timeout=10)
    assert missing.status_code == 404
    text = service.stop()
    assert SECRET not in text and GOOD_TOKEN not in text, text
    # The requests are logged (paths, status, the token's label), only the query string is not.
    assert '"GET /images" 401 -' in text, text
    assert '"GET /health" 200 guards' in text, text
    assert '"GET /no/such/path" 404 guards' in text, text


# -- the body limit ------------------------------------------------------------------------------


def limited_config(tmp_path: Path) -> Config:
    return replace(config(tmp_path), api=ApiSettings(max_body_bytes=LIMIT))


def test_declared_length_over_the_limit_is_refused_before_the_body(service: Service) -> None:
    # 600 MB announced, not one byte of it sent: the 413 can only come from the header.
    head = (
        "POST /restores HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {GOOD_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {600 * 1000 * 1000}\r\n\r\n"
    )
    response, _sent = _raw_request(service.port, head)
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), response
    assert f"request body larger than {LIMIT} bytes (api.max_body_bytes)".encode() in rest


def test_chunked_body_is_counted_while_it_streams(service: Service) -> None:
    rss_before = service.rss_kib()
    offered = 256 * MiB
    chunk = b"[" + b"1," * (MiB // 2 - 1) + b"1]"  # 1 MiB of valid-looking JSON per chunk

    def chunks() -> Iterator[bytes]:
        for _ in range(offered // len(chunk)):
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        yield b"0\r\n\r\n"

    head = (
        "POST /restores HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {GOOD_TOKEN}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    response, sent = _raw_request(service.port, head, chunks())
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    # The server stopped reading: most of the body was never taken from the socket...
    assert sent < offered // 4, f"{sent} of {offered} bytes were read"
    # ... and never held: the service grew by far less than the body.
    grown_mib = (service.rss_kib() - rss_before) / 1024
    assert grown_mib < 32, f"RSS grew by {grown_mib:.0f} MiB"
    # Still serving.
    assert httpx.get(f"{service.url}/health", headers=auth(), timeout=10).status_code == 200


def test_body_within_the_limit_reaches_the_route(tmp_path: Path) -> None:
    app = create_app(limited_config(tmp_path), backend=FakeBackend(tmp_path), tokens=token_store(tmp_path))
    client = TestClient(app)
    small = client.post("/restores", headers=auth(), json={"image": "x"})
    assert small.status_code == 422  # the route's own validation: the body got through
    big = client.post("/restores", headers={**auth(), "Content-Type": "application/json"}, content=b" " * (LIMIT + 1))
    assert big.status_code == 413 and big.json()["error"] == "too_large"
    unauthenticated = client.post("/restores", content=b" " * (LIMIT + 1))
    assert unauthenticated.status_code == 401  # the token is checked first


def test_streamed_body_over_the_limit_in_process(tmp_path: Path) -> None:
    app = create_app(limited_config(tmp_path), backend=FakeBackend(tmp_path), tokens=token_store(tmp_path))

    def body() -> Iterator[bytes]:  # no Content-Length: a generator body is sent chunked
        for _ in range(64):
            yield b" " * (16 * 1024)

    response = TestClient(app).post("/restores", headers={**auth(), "Content-Type": "application/json"}, content=body())
    assert response.status_code == 413


def test_max_body_bytes_setting() -> None:
    assert parse_config({"api": {"anonymous": True}}).api.max_body_bytes == MiB
    assert parse_config({"api": {"anonymous": True, "max_body_bytes": 4096}}).api.max_body_bytes == 4096
    for bad in (0, -1, "1M", True, 1.5):
        with pytest.raises(ConfigError, match=r"api\.max_body_bytes"):
            parse_config({"api": {"max_body_bytes": bad}})
