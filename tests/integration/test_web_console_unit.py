"""The web console's security rules without Ceph (FakeBackend): every console page needs a
session, the cookie's flags, CSRF, the CSP, scopes on the console and the JSON API, revocation,
and the tokens file's scope field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rest_api_helpers import GOOD_TOKEN, IMAGE, SNAP_NEW, FakeBackend, build_snapshot_tree, config, write_tokens
from starlette.routing import Route

from backurne_api.app import create_app
from backurne_api.auth import TokensFileError, TokenStore, hash_token, parse_tokens_file
from backurne_api.console import PREFIX, is_console_path

READ = "read-token-0123456789abcdefghijklmnopqrstuvwx"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TestClient, FakeBackend, Path]:
    mnt, _secret = build_snapshot_tree(tmp_path / "tree")
    backend = FakeBackend(mnt)
    tokens = write_tokens(tmp_path / "tokens", (GOOD_TOKEN, "operator"))
    with tokens.open("a") as out:
        out.write(f"{hash_token(READ)} scope=read helpdesk\n")
    app = create_app(config(tmp_path), backend=backend, tokens=TokenStore(tokens))
    return TestClient(app, base_url="https://testserver"), backend, tokens


def _login(client: TestClient, token: str) -> str:
    response = client.post(f"{PREFIX}/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return re.search(r'name="csrf" value="([^"]+)"', client.get(f"{PREFIX}/").text)[1]


def test_every_console_page_needs_a_session(setup: tuple[TestClient, FakeBackend, Path]) -> None:
    client, _backend, _tokens = setup
    pages = [r.path for r in client.app.routes if isinstance(r, Route) and is_console_path(r.path)]
    assert len(pages) >= 14
    for path in pages:
        if path.startswith(f"{PREFIX}/login"):
            continue
        concrete = re.sub(r"{\w+}", "x", path)
        for method in ("GET", "POST"):
            response = client.request(method, concrete, follow_redirects=False)
            assert response.status_code in (303, 401, 405), (method, concrete, response.status_code)
            if response.status_code == 303:
                assert response.headers["location"].startswith(f"{PREFIX}/login")
            assert "script-src 'self'" in response.headers["content-security-policy"]


def test_login_cookie_csrf_and_read_scope(setup: tuple[TestClient, FakeBackend, Path]) -> None:
    client, backend, tokens = setup
    response = client.post(f"{PREFIX}/login", data={"token": GOOD_TOKEN}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert GOOD_TOKEN not in cookie and hash_token(GOOD_TOKEN)[7:] not in cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(f"{PREFIX}/images/{IMAGE}").text)[1]
    form = {"image": IMAGE, "snapshot": SNAP_NEW, "reason": "INC"}
    assert client.post(f"{PREFIX}/hold", data=form, follow_redirects=False).status_code == 403  # no CSRF token
    assert client.post(f"{PREFIX}/hold", data={**form, "csrf": "x" * 43}).status_code == 403
    foreign = client.post(f"{PREFIX}/hold", data={**form, "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and backend.holds == {}
    assert client.post(f"{PREFIX}/hold", data={**form, "csrf": csrf}, follow_redirects=False).status_code == 303
    assert backend.holds[(IMAGE, SNAP_NEW)]["by"] == "operator"

    client.cookies.clear()
    csrf = _login(client, READ)
    refused = client.post(f"{PREFIX}/release", data={"image": IMAGE, "snapshot": SNAP_NEW, "csrf": csrf})
    assert refused.status_code == 403 and (IMAGE, SNAP_NEW) in backend.holds
    api = client.delete(f"/images/{IMAGE}/snapshots/{SNAP_NEW}/hold", headers={"Authorization": f"Bearer {READ}"})
    assert api.status_code == 403 and api.json()["error"] == "forbidden"
    assert client.get("/images", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    # revoking the token ends its sessions at once
    tokens.write_text(f"{hash_token(GOOD_TOKEN)} operator\n")
    assert client.get(f"{PREFIX}/", follow_redirects=False).status_code == 303


def test_tokens_file_scope_field() -> None:
    digest = "a" * 64
    parsed = parse_tokens_file(f"sha256:{digest} scope=read helpdesk\nsha256:{digest} old line\n", "t")
    assert [(t.label, t.scope) for t in parsed] == [("helpdesk", "read"), ("old line", "operate")]
    with pytest.raises(TokensFileError, match="line 1: unknown scope 'admin'"):
        parse_tokens_file(f"sha256:{digest} scope=admin x\n", "t")
