"""The web console in a real browser (Debian's chromium + chromium-driver, driven by selenium)
against the lab: one `backurne-api` process and one browser session shared by the tests, which
run in file order (log in, browse, download, restore, pin/release, a read-only token, log out).

Screenshots are kept under tests/output/web-console/ (the path is printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_api_helpers import REPO, start_api, unmap_and_purge, write_tokens
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_rest_api_lab import _free_port, _stop, make_ext4, sh

from ansible_collections.backurne.rbd.plugins.module_utils.policy.holds import hold_key

POOL = "rbd"
WEB = "lab;web;None"
SNAP_OLD = "backup;daily;30;" + (datetime.now(UTC) - timedelta(days=2)).replace(tzinfo=None).isoformat(
    timespec="microseconds"
)
SNAP = "backup;daily;30;" + datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
OPERATE_TOKEN = "console-operate-0123456789abcdefghijklmnopqrs"
READ_TOKEN = "console-read-0123456789abcdefghijklmnopqrstuv"
SHOTS = REPO / "tests" / "output" / "web-console"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 120

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mapping needs root (loop devices, mounts)")


@dataclass
class Console:
    url: str
    ns: str
    tmp: Path
    log: Path
    downloads: Path
    browser: webdriver.Chrome

    def open(self, path: str) -> None:
        self.browser.get(self.url + path)

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        target = SHOTS / f"{name}.png"
        self.browser.save_screenshot(str(target))
        print(f"screenshot: {target}")
        return target

    def wait(self, condition: Any, timeout: float = WAIT) -> Any:
        # The job page reloads itself: an element may go stale between two looks.
        # Chrome may report such a node as an "unknown error" (Node with given id does not belong
        # to the document) instead of a stale element: that one is the same race, any other is not.
        ignored = (NoSuchElementException, StaleElementReferenceException)

        def look(browser: Any) -> Any:
            try:
                return condition(browser)
            except WebDriverException as error:
                if isinstance(error, ignored) or "does not belong to the document" in str(error.msg):
                    return False
                raise

        return WebDriverWait(self.browser, timeout, poll_frequency=0.2).until(look)

    def text(self) -> str:
        return self.browser.find_element(By.TAG_NAME, "body").text

    def cookie(self) -> str:
        found = self.browser.get_cookie("backurne_session")
        assert found is not None
        return str(found["value"])


def _browser(downloads: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # The system chromedriver: selenium downloads nothing.
    browser = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    browser.implicitly_wait(20)  # a click returns before the next page is there
    return browser


@pytest.fixture(scope="module")
def console(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    ns = f"c-{uuid.uuid4().hex[:8]}"
    state_dir = tmp / "state"
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}:{REPO / 'src'}")
    created: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    browser: webdriver.Chrome | None = None
    log = tmp / "service.log"
    try:
        for cluster in ("live", "backup"):
            lab.rbd(cluster, "namespace", "create", f"{POOL}/{ns}", admin=True)
            created.append(cluster)
        document = json.loads(sh("bash", str(REPO / "scripts" / "lab-cli-config.sh"), ns).split("\n", 1)[1])
        port = _free_port()
        tokens = tmp / "tokens"
        write_tokens(tokens, (OPERATE_TOKEN, "operator"))
        with tokens.open("a") as out:  # a read-only line, as an operator writes it
            from backurne_api.auth import hash_token

            out.write(f"{hash_token(READ_TOKEN)} scope=read helpdesk\n")
        document["state_dir"] = str(state_dir)
        document["api"] = {"tokens_file": str(tokens), "anonymous": False, "listen": f"127.0.0.1:{port}"}
        config = tmp / "backurne.yml"
        config.write_text(json.dumps(document))

        image = make_ext4(tmp)
        spec = f"{POOL}/{ns}/{WEB}"
        lab.rbd("backup", "import", "--no-progress", str(image), spec, timeout=120)
        lab.rbd("backup", "snap", "create", f"{spec}@{SNAP_OLD}")
        lab.overwrite("backup", spec, 0.01, seed=7)
        lab.rbd("backup", "snap", "create", f"{spec}@{SNAP}")
        url = f"http://127.0.0.1:{port}"
        proc = start_api(config, url, log, env, OPERATE_TOKEN)
        downloads = tmp / "downloads"
        downloads.mkdir()
        browser = _browser(downloads)
        yield Console(url, ns, tmp, log, downloads, browser)
    finally:
        if browser is not None:
            browser.quit()
        if proc is not None:
            _stop(proc)
        unmap_and_purge(lab, tmp / "backurne.yml", state_dir, env, ns, created)


def _login(console: Console, token: str) -> None:
    console.open("/ui/")
    console.wait(lambda b: "/ui/login" in b.current_url)
    console.browser.find_element(By.ID, "token").send_keys(token)
    console.browser.find_element(By.ID, "login").click()
    console.wait(lambda b: b.current_url.rstrip("/").endswith("/ui"))


def _image_page(console: Console) -> None:
    console.open("/ui/")
    console.browser.find_element(By.LINK_TEXT, "web").click()
    console.wait(lambda b: "/ui/images/" in b.current_url)


def _meta(lab: Any, console: Console) -> dict[str, str]:
    return lab.rbd_json("backup", "image-meta", "list", f"{POOL}/{console.ns}/{WEB}") or {}


def test_login_page_refuses_a_wrong_token(console: Console) -> None:
    console.open("/ui/images/x")
    console.wait(lambda b: "/ui/login" in b.current_url)
    console.browser.find_element(By.ID, "token").send_keys("not-a-valid-token-at-all")
    console.browser.find_element(By.ID, "login").click()
    assert console.browser.find_element(By.ID, "error").text == "invalid token"
    assert console.browser.get_cookie("backurne_session") is None
    console.shot("01-login-refused")


def test_overview_search_and_security_headers(console: Console) -> None:
    _login(console, OPERATE_TOKEN)
    assert OPERATE_TOKEN not in console.cookie()
    rows = console.browser.find_elements(By.CSS_SELECTOR, "tr.disk")
    assert [r.get_attribute("data-name") for r in rows] == [WEB]
    assert "fresh" in rows[0].text and "2" in rows[0].text  # newest backup is minutes old; 2 snapshots
    console.browser.find_element(By.ID, "filter").send_keys("nothing-like-this")
    assert not rows[0].is_displayed()  # the live filter (console.js) ran under the CSP
    console.browser.find_element(By.ID, "filter").clear()
    console.browser.find_element(By.ID, "filter").send_keys("web")
    assert rows[0].is_displayed()
    console.shot("02-overview")
    page = httpx.get(f"{console.url}/ui/", cookies={"backurne_session": console.cookie()})
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and "http://" not in page.text.replace(console.url, "")


@needs_root
def test_browse_a_directory_and_download_a_file(lab: Any, console: Console) -> None:
    _image_page(console)
    console.shot("03-image")
    row = console.browser.find_element(By.CSS_SELECTOR, f'tr.snapshot[data-name="{SNAP}"]')
    row.find_element(By.CSS_SELECTOR, "button.map").click()
    console.wait(lambda b: "/ui/browse/" in b.current_url, timeout=300)
    console.browser.find_element(By.LINK_TEXT, "disk/").click()
    console.browser.find_element(By.LINK_TEXT, "etc/").click()
    console.wait(lambda b: "etc" in b.find_element(By.ID, "crumbs").text)
    console.shot("04-browse")
    console.browser.find_element(By.LINK_TEXT, "hostname").click()
    target = console.downloads / "hostname"
    console.wait(lambda _b: target.exists() and not list(console.downloads.glob("*.crdownload")))
    # the bytes of the file in the backup snapshot, read by the test from its own export
    exported = console.tmp / "snap.img"
    lab.rbd("backup", "export", "--no-progress", f"{POOL}/{console.ns}/{WEB}@{SNAP}", str(exported), timeout=120)
    source = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", str(exported)], capture_output=True, check=True, timeout=60
    ).stdout
    assert target.read_bytes() == source == b"web1.example\n"
    console.open("/ui/mapped")
    assert SNAP in console.browser.find_element(By.ID, "mappings").text
    console.browser.back()
    console.browser.find_element(By.ID, "unmap").click()
    console.wait(lambda b: "/ui/images/" in b.current_url, timeout=300)
    assert lab.rbd_json("backup", "ls", "--pool", POOL, "--namespace", console.ns) == [WEB]  # no clone left


def test_restore_from_the_console(lab: Any, console: Console) -> None:
    _image_page(console)
    Select(console.browser.find_element(By.ID, "restore-snapshot")).select_by_value(SNAP_OLD)
    console.browser.find_element(By.ID, "restore-dest").send_keys("web-restored")
    console.shot("05-restore-form")
    console.browser.find_element(By.ID, "restore-start").click()
    console.wait(lambda b: "/ui/jobs/" in b.current_url)
    console.wait(lambda b: b.find_element(By.ID, "job-state").text in ("succeeded", "failed"), timeout=300)
    assert console.browser.find_element(By.ID, "job-state").text == "succeeded", console.text()
    console.shot("06-restore-done")
    expected = lab.checksum("backup", f"{POOL}/{console.ns}/{WEB}@{SNAP_OLD}")
    assert lab.checksum("live", f"{POOL}/{console.ns}/web-restored") == expected
    # force without the typed confirmation is refused, and changes nothing
    _image_page(console)
    console.browser.find_element(By.ID, "restore-dest").send_keys("web-restored")
    console.browser.find_element(By.ID, "restore-force").click()
    console.browser.find_element(By.ID, "restore-start").click()
    assert "confirmation" in console.browser.find_element(By.ID, "error").text
    assert lab.checksum("live", f"{POOL}/{console.ns}/web-restored") == expected


def test_pin_and_release_a_snapshot(lab: Any, console: Console) -> None:
    _image_page(console)
    row = console.browser.find_element(By.CSS_SELECTOR, f'tr.snapshot[data-name="{SNAP_OLD}"]')
    row.find_element(By.TAG_NAME, "summary").click()
    row.find_element(By.CSS_SELECTOR, "input.reason").send_keys("incident 4711")
    row.find_element(By.CSS_SELECTOR, "button.hold-button").click()
    console.wait(lambda b: "/ui/images/" in b.current_url)
    row = console.browser.find_element(By.CSS_SELECTOR, f'tr.snapshot[data-name="{SNAP_OLD}"]')
    assert "held" in row.text and "incident 4711" in row.text and "operator" in row.text
    stored = json.loads(_meta(lab, console)[hold_key(SNAP_OLD)])
    assert (stored["reason"], stored["until"], stored["by"]) == ("incident 4711", None, "operator")
    console.shot("07-held")
    console.open("/ui/holds")
    assert SNAP_OLD in console.browser.find_element(By.ID, "holds").text
    console.browser.find_element(By.CSS_SELECTOR, "#holds button").click()
    console.wait(lambda b: "/ui/holds" in b.current_url)
    assert "No hold." in console.browser.find_element(By.ID, "holds").text
    assert hold_key(SNAP_OLD) not in _meta(lab, console)


def test_read_only_token_may_look_but_not_act(lab: Any, console: Console) -> None:
    console.browser.find_element(By.ID, "logout").click()
    console.wait(lambda b: "/ui/login" in b.current_url)
    _login(console, READ_TOKEN)
    assert "helpdesk (read)" in console.browser.find_element(By.ID, "who").text
    _image_page(console)
    assert console.browser.find_element(By.ID, "snapshots")  # the page is there
    console.browser.implicitly_wait(0)
    for selector in ("button.map", "button.hold-button", "#restore-start"):
        with pytest.raises(NoSuchElementException):
            console.browser.find_element(By.CSS_SELECTOR, selector)
    console.browser.implicitly_wait(20)
    console.shot("08-read-only")
    # the form sent anyway (the session's own CSRF token, from its logout form) is refused
    csrf = console.browser.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf]").get_attribute("value")
    refused = httpx.post(
        f"{console.url}/ui/hold",
        cookies={"backurne_session": console.cookie()},
        data={"csrf": csrf, "image": WEB, "snapshot": SNAP, "reason": "nope"},
    )
    assert refused.status_code == 403 and "read-only" in refused.text
    # and the JSON API says the same to the token itself
    api = httpx.put(
        f"{console.url}/images/{WEB}/snapshots/{SNAP}/hold",
        headers={"Authorization": f"Bearer {READ_TOKEN}"},
        json={"reason": "nope"},
    )
    assert api.status_code == 403 and api.json()["error"] == "forbidden"
    assert hold_key(SNAP) not in _meta(lab, console)
    assert httpx.get(f"{console.url}/images", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200
    # health: the check's rules over the live cluster; the restored image has no backup of its own
    console.open("/ui/health")
    assert console.browser.find_element(By.ID, "health-status").text == "CRITICAL"
    findings = console.browser.find_element(By.ID, "findings").text
    assert "web-restored" in findings and "no-backup" in findings
    console.shot("09-health")


def test_logout_ends_the_session(console: Console) -> None:
    cookie = console.cookie()
    console.browser.find_element(By.ID, "logout").click()
    console.wait(lambda b: "/ui/login" in b.current_url)
    assert console.browser.get_cookie("backurne_session") is None
    console.open("/ui/")
    assert "/ui/login" in console.browser.current_url
    replay = httpx.get(f"{console.url}/ui/", cookies={"backurne_session": cookie}, follow_redirects=False)
    assert replay.status_code == 303 and "/ui/login" in replay.headers["location"]
    text = console.log.read_text()
    assert OPERATE_TOKEN not in text and READ_TOKEN not in text and cookie not in text
    print(f"screenshots in {SHOTS}")
