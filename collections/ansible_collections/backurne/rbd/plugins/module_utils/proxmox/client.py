# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Proxmox VE side effects: the API (through proxmoxer), the profiles_api and hooks.

proxmoxer is imported lazily: the modules report a missing library with ``missing_required_lib``
(``PROXMOXER_IMPORT_ERROR``), and the unit tests drive everything with fake clients.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

try:
    import proxmoxer

    PROXMOXER_IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the node
    proxmoxer = None
    PROXMOXER_IMPORT_ERROR = str(exc)


class PveError(RuntimeError):
    """An API call failed; the message names the host and user, never a secret.

    ``status`` is the HTTP status when the API answered (403, 500...), None when it did not
    (connection refused or reset, a timeout).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PveAuth:
    api_host: str
    api_user: str
    api_port: int | None = None
    api_password: str | None = None
    api_token_id: str | None = None
    api_token_secret: str | None = None
    validate_certs: bool = True
    ca_path: str | None = None
    api_timeout: int = 10

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PveAuth:
        return cls(
            api_host=params["api_host"],
            api_user=params["api_user"],
            api_port=params.get("api_port"),
            api_password=params.get("api_password"),
            api_token_id=params.get("api_token_id"),
            api_token_secret=params.get("api_token_secret"),
            validate_certs=bool(params.get("validate_certs", True)),
            ca_path=params.get("ca_path"),
            api_timeout=int(params.get("api_timeout") or 10),
        )

    @property
    def label(self) -> str:
        how = f"token {self.api_user}!{self.api_token_id}" if self.api_token_id else f"user {self.api_user}"
        return f"Proxmox VE API {self.api_host}:{self.api_port or 8006} ({how})"

    def check(self) -> None:
        if bool(self.api_token_id) != bool(self.api_token_secret):
            raise PveError(f"{self.label}: api_token_id and api_token_secret go together")
        if not self.api_token_id and not self.api_password:
            raise PveError(f"{self.label}: give api_password, or api_token_id and api_token_secret")

    def scrub(self, text: str) -> str:
        """``text`` with the secrets blotted out (an exception may echo a request body)."""
        for secret in (self.api_password, self.api_token_secret):
            # A secret of a few characters would blot out every occurrence of them in the text.
            if secret and len(secret) >= 4:
                text = text.replace(secret, "********")
        return text


class PveApi(Protocol):
    def get(self, path: str, **params: Any) -> Any: ...

    def post(self, path: str, **params: Any) -> Any: ...


class ProxmoxerApi:
    """PveApi over a proxmoxer.ProxmoxAPI (path-style calls, so fakes need not mimic attributes)."""

    def __init__(self, auth: PveAuth) -> None:
        if proxmoxer is None:
            raise PveError(f"{auth.label}: the Python library proxmoxer is missing ({PROXMOXER_IMPORT_ERROR})")
        auth.check()
        self.auth = auth
        verify: bool | str = auth.validate_certs
        if auth.validate_certs and auth.ca_path:
            verify = auth.ca_path
        if not auth.validate_certs:
            # An explicit operator choice; urllib3 would print the warning into the module's output.
            try:
                import urllib3

                urllib3.disable_warnings()
            except ImportError:  # pragma: no cover
                pass
        kwargs: dict[str, Any] = {
            "user": auth.api_user,
            "verify_ssl": verify,
            "timeout": auth.api_timeout,
        }
        if auth.api_port:
            kwargs["port"] = auth.api_port
        if auth.api_token_id:
            kwargs.update(token_name=auth.api_token_id, token_value=auth.api_token_secret)
        else:
            kwargs["password"] = auth.api_password
        try:
            self.api = proxmoxer.ProxmoxAPI(auth.api_host, backend="https", **kwargs)
            # As community.proxmox does: a cheap call that proves the credentials work.
            self.api.version.get()
        except Exception as exc:
            why = describe(exc, auth)
            if not auth.api_token_id and isinstance(exc, ValueError):
                # proxmoxer 1.x parses the ticket answer as JSON before looking at the status;
                # PVE answers a refused login with 401 and no body: ask again for the status.
                why = self._login_status(verify) or why
            raise PveError(f"{auth.label}: cannot connect: {why}") from None

    def _login_status(self, verify: bool | str) -> str | None:
        try:
            import requests

            port = self.auth.api_port or 8006
            answer = requests.post(
                f"https://{self.auth.api_host}:{port}/api2/json/access/ticket",
                data={"username": self.auth.api_user, "password": self.auth.api_password},
                verify=verify,
                timeout=self.auth.api_timeout,
            )
        except Exception:
            return None
        if answer.status_code == 401:
            return f"authentication failed (HTTP 401 {answer.reason})"
        return f"HTTP {answer.status_code} {answer.reason}"

    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        try:
            return getattr(self.api(path.strip("/")), method)(**params)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            raise PveError(
                f"{self.auth.label}: {method.upper()} {path}: {describe(exc, self.auth)}",
                status if isinstance(status, int) else None,
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self._call("get", path, params)

    def post(self, path: str, **params: Any) -> Any:
        return self._call("post", path, params)

    def put(self, path: str, **params: Any) -> Any:
        return self._call("put", path, params)


def describe(exc: BaseException, auth: PveAuth) -> str:
    name = type(exc).__name__
    text = str(exc) or name
    if name == "AuthenticationError" or "401" in text:
        text = f"authentication failed ({text})"
    return auth.scrub(f"{text}")


# -- discovery calls -------------------------------------------------------------------------


def list_guests(api: PveApi) -> list[dict[str, Any]]:
    return list(api.get("cluster/resources", type="vm") or [])


def guest_config(api: PveApi, node: str, guest_type: str, vmid: int) -> dict[str, Any]:
    return dict(api.get(f"nodes/{node}/{guest_type}/{vmid}/config") or {})


def list_storages(api: PveApi) -> list[dict[str, Any]]:
    return list(api.get("storage") or [])


def guest_current_config(api: PveApi, node: str, guest_type: str, vmid: int) -> dict[str, Any]:
    """The config as it runs (``current=1``): without the pending changes PVE has not applied yet."""
    return dict(api.get(f"nodes/{node}/{guest_type}/{vmid}/config", current=1) or {})


def guest_pending(api: PveApi, node: str, guest_type: str, vmid: int) -> list[dict[str, Any]]:
    return [dict(item) for item in api.get(f"nodes/{node}/{guest_type}/{vmid}/pending") or []]


def list_nodes(api: PveApi) -> list[dict[str, Any]]:
    return list(api.get("nodes") or [])


def cluster_status(api: PveApi) -> list[dict[str, Any]]:
    return list(api.get("cluster/status") or [])


# -- fsfreeze --------------------------------------------------------------------------------


def agent_command(api: PveApi, node: str, vmid: int, command: str) -> Any:
    """fsfreeze-freeze / -thaw / -status: all POST in PVE (Agent.pm)."""
    result = api.post(f"nodes/{node}/qemu/{vmid}/agent/{command}")
    return result.get("result") if isinstance(result, Mapping) else result


class AsyncCall:
    """fn() in a daemon thread. The caller may stop waiting for it and still ask whether it is in
    flight: an fsfreeze-freeze we gave up on may land later, after a thaw (an agent that handles
    commands concurrently), so the thaw is confirmed only once no freeze of ours is in flight.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True, name="backurne-pve")
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._outcome["value"] = fn()
        except BaseException as exc:
            self._outcome["error"] = exc

    @property
    def in_flight(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float) -> Any:
        """The call's value; TimeoutError when it has not returned after ``timeout`` seconds."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"no answer after {timeout:g} s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome.get("value")


def call_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """fn() in a daemon thread; TimeoutError when it has not returned after ``timeout`` seconds.

    A guest agent that is enabled but dead can hold a PVE API call for a long time; the
    backup must not hang on it (the thread is abandoned, the module exits anyway).
    """
    return AsyncCall(fn).wait(timeout)


Caller = Callable[[Callable[[], Any], float], Any]

# PVE's answers to an agent call that never reached the guest (Agent.pm assert_agent_available,
# pveproxy's 595 when the node cannot be reached): the guest cannot have been frozen by it.
NOT_REACHED = re.compile(r"(No QEMU guest agent configured|QEMU guest agent is not running|VM \d+ is not running)\s*$")
NOT_REACHED_STATUS = 595
DENIED_STATUS = 403
ON_FREEZE_DENIED = ("fail", "crash_consistent")
FREEZE_PRIVILEGES = "VM.GuestAgent.FileSystemMgmt (PVE 9) or VM.Monitor (older)"


def never_reached_guest(exc: BaseException) -> bool:
    if not isinstance(exc, PveError) or exc.status is None:
        return False
    if exc.status == NOT_REACHED_STATUS:
        return True
    return exc.status == 500 and NOT_REACHED.search(str(exc)) is not None


def denied(exc: BaseException) -> bool:
    return isinstance(exc, PveError) and exc.status == DENIED_STATUS


@dataclass
class ThawPolicy:
    """How long and how often to thaw and ask ``fsfreeze-status`` after a freeze attempt."""

    timeout: float = 60.0  # thaw_timeout: the whole thaw-and-verify phase
    call_timeout: float = 60.0  # freeze_timeout: one API call
    first_pause: float = 0.5
    max_pause: float = 5.0


@dataclass
class ThawResult:
    thawed: bool
    detail: str
    warnings: list[str] = field(default_factory=list)


def thaw_and_verify(
    api: PveApi,
    node: str,
    vmid: int,
    policy: ThawPolicy,
    freeze_in_flight: Callable[[], bool],
    calls: list[str],
    *,
    call: Caller = call_with_timeout,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ThawResult:
    """Thaw, then ask ``fsfreeze-status``, again and again with a growing pause, until the guest
    says ``thawed`` or ``policy.timeout`` is spent (at least one round; each call may take
    ``policy.call_timeout``).

    "thawed" counts only when no freeze of ours was in flight when the status was asked: a
    freeze we stopped waiting for may still land after the thaw. When the API refuses the status
    (403: no VM.GuestAgent.Audit), a thaw that answered, sent with no freeze in flight, counts,
    with a warning. Anything else at the end (frozen, no answer, a freeze still in flight) is
    not thawed, and ``detail`` says what was last seen.
    """
    deadline = clock() + policy.timeout
    pause = policy.first_pause
    last = "no answer yet"
    # Each call gets its whole call_timeout, also in the last round: no round starts after the
    # deadline, so the phase lasts at most timeout + 2 x call_timeout.
    budget = policy.call_timeout
    while True:
        pending = freeze_in_flight()
        calls.append("fsfreeze-thaw")
        thaw_ok = False
        try:
            call(lambda: agent_command(api, node, vmid, "fsfreeze-thaw"), budget)
            thaw_ok = True
        except (PveError, TimeoutError, OSError) as exc:
            last = f"fsfreeze-thaw failed: {exc}"
        pending = pending or freeze_in_flight()
        calls.append("fsfreeze-status")
        try:
            status = call(lambda: agent_command(api, node, vmid, "fsfreeze-status"), budget)
        except (PveError, TimeoutError, OSError) as exc:
            if denied(exc) and thaw_ok and not pending:
                return ThawResult(
                    True,
                    "thawed (fsfreeze-thaw answered)",
                    [f"fsfreeze-status refused ({exc}): the thaw answered, unverified; grant VM.GuestAgent.Audit"],
                )
            last = f"fsfreeze-status failed: {exc}" if thaw_ok else f"{last}; fsfreeze-status failed: {exc}"
        else:
            if status == "thawed" and not pending:
                return ThawResult(True, "thawed")
            if status == "thawed":
                last = "fsfreeze-status says thawed, but our fsfreeze-freeze has not answered yet (it may still land)"
            else:
                last = f"fsfreeze-status says {status!r}"
        left = deadline - clock()
        if left <= 0:
            return ThawResult(False, last)
        sleep(min(pause, left))
        pause = min(pause * 2, policy.max_pause)


@dataclass
class FreezeState:
    attempted: bool = False
    frozen: bool = False  # the freeze answered success
    denied: str | None = None  # the API refused the freeze (403)
    not_reached: str | None = None  # the freeze never reached the guest (agent absent, ...)
    may_be_frozen: str | None = None  # why the guest may still be frozen after the thaw phase
    warnings: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """thawed, not-frozen, denied, may-be-frozen (or not-attempted)."""
        if not self.attempted:
            return "not-attempted"
        if self.may_be_frozen:
            return "may-be-frozen"
        if self.denied:
            return "denied"
        if self.not_reached:
            return "not-frozen"
        return "thawed"


@contextmanager
def frozen(
    api: PveApi,
    node: str,
    vmid: int,
    where: str,
    timeout: float,
    thaw_timeout: float = 60.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[FreezeState]:
    """Freeze the guest's filesystems for the block, then thaw and verify whatever happens.

    A freeze that fails or times out leaves a crash-consistent snapshot (with a warning), not a
    skipped guest. After any freeze that may have reached the guest (success, an error, a
    timeout, the API gone) the thaw is retried with backoff and confirmed with fsfreeze-status
    for up to ``thaw_timeout`` seconds (thaw_and_verify); a guest not confirmed thawed by then
    gets ``may_be_frozen`` (the caller fails the run naming it). A freeze PVE refused before it
    reached the guest (403: ``denied``; agent absent or not running: ``not_reached``) needs no
    verification: one thaw for the latter, as a courtesy, none for a 403 (it would be refused).
    """
    state = FreezeState(attempted=True)
    state.calls.append("fsfreeze-freeze")
    freeze = AsyncCall(lambda: agent_command(api, node, vmid, "fsfreeze-freeze"))
    try:
        freeze.wait(timeout)
        state.frozen = True
    except (PveError, TimeoutError, OSError) as exc:
        if denied(exc):
            state.denied = str(exc)
        elif never_reached_guest(exc):
            state.not_reached = str(exc)
            state.warnings.append(f"{where}: fsfreeze-freeze failed ({exc}): snapshot is crash-consistent")
        else:
            state.warnings.append(
                f"{where}: fsfreeze-freeze failed ({exc}): snapshot is crash-consistent; the freeze may still "
                "have reached the guest, it is thawed and checked"
            )
    try:
        yield state
    finally:
        if state.not_reached:
            state.calls.append("fsfreeze-thaw")
            # The freeze never reached the guest: nothing to undo, the thaw's outcome does not matter.
            with suppress(PveError, TimeoutError, OSError):
                call_with_timeout(lambda: agent_command(api, node, vmid, "fsfreeze-thaw"), timeout)
        elif not state.denied:
            result = thaw_and_verify(
                api,
                node,
                vmid,
                ThawPolicy(timeout=thaw_timeout, call_timeout=timeout),
                lambda: freeze.in_flight,
                state.calls,
                clock=clock,
                sleep=sleep,
            )
            state.warnings.extend(f"{where}: {text}" for text in result.warnings)
            if not result.thawed:
                state.may_be_frozen = (
                    f"{where} on node {node} may be frozen: not confirmed thawed within {thaw_timeout:g} s "
                    f"({result.detail}); thaw it by hand (qm guest cmd {vmid} fsfreeze-thaw) and check"
                )


def recheck_thawed(
    api: PveApi, guest: Mapping[str, Any], plans: list[dict[str, Any]], call_timeout: float, thaw_timeout: float
) -> tuple[list[str], list[str]]:
    """A guest an earlier run may have left frozen, with nothing to snapshot now: thaw and verify
    it anyway (so it does not wait for its next due snapshot); its plans get ``freeze``."""
    node, vmid = str(guest["node"]), int(guest["vmid"])
    where = f"guest {vmid} ({guest.get('name')})"
    calls: list[str] = []
    result = thaw_and_verify(
        api, node, vmid, ThawPolicy(timeout=thaw_timeout, call_timeout=call_timeout), lambda: False, calls
    )
    message = None
    if not result.thawed:
        message = (
            f"{where} on node {node} may be frozen (since an earlier run): not confirmed thawed within "
            f"{thaw_timeout:g} s ({result.detail}); thaw it by hand (qm guest cmd {vmid} fsfreeze-thaw) and check"
        )
    for plan in plans:
        plan["freeze"] = {"state": "thawed" if result.thawed else "may-be-frozen", "message": message}
    return [f"{where}: {text}" for text in result.warnings], calls


# Guests a run could not confirm thawed, per live cluster, on the node running proxmox_snapshot:
# the next run thaws and verifies them even when they have nothing due.
THAW_PENDING_FILE = "pve-thaw-pending.json"


def load_thaw_pending(path: str, cluster: str) -> dict[str, dict[str, Any]]:
    """vmid (text) -> {node, since, message}; an unreadable file counts as empty."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    pending = data.get(cluster) if isinstance(data, dict) else None
    return {str(k): v for k, v in pending.items() if isinstance(v, dict)} if isinstance(pending, dict) else {}


def save_thaw_pending(path: str, cluster: str, pending: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace this cluster's entry, atomically (several clusters may share the file)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    if pending:
        data[cluster] = {str(k): dict(v) for k, v in pending.items()}
    else:
        data.pop(cluster, None)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)


# -- profiles_api ----------------------------------------------------------------------------


def fetch_profiles(url: str, guest_info: Mapping[str, Any], timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """POST the guest's info as JSON; the answer is a JSON object of extra profiles, or
    ``{"backup": false}``. Any failure: (None, why), and the defaults apply."""
    try:
        import requests  # a dependency of proxmoxer, so present wherever discovery runs
    except ImportError as exc:
        return None, f"profiles_api {url}: the Python library requests is missing ({exc}): defaults apply"
    try:
        response = requests.post(url, json=dict(guest_info), timeout=timeout, headers={"Accept": "application/json"})
    except requests.Timeout:
        return None, f"profiles_api {url}: timed out after {timeout:g} s: defaults apply"
    except requests.RequestException as exc:
        return None, f"profiles_api {url}: {exc}: defaults apply"
    if response.status_code >= 400:
        return None, f"profiles_api {url}: HTTP {response.status_code} {response.reason}: defaults apply"
    raw = response.content[: 1 << 20]
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"profiles_api {url}: answer is not JSON ({exc}): defaults apply"
    if not isinstance(answer, dict):
        return None, f"profiles_api {url}: answer is not a JSON object: defaults apply"
    if "backup" in answer and not isinstance(answer["backup"], bool):
        return None, f"profiles_api {url}: 'backup' must be true or false, got {answer['backup']!r}: defaults apply"
    profiles = answer.get("profiles", {k: v for k, v in answer.items() if k != "backup"})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        return None, f"profiles_api {url}: profiles must map names to profile definitions: defaults apply"
    return answer, None


# -- hooks -----------------------------------------------------------------------------------

HOOK_KINDS = ("pre_vm", "pre_disk", "post_disk", "post_vm")


@dataclass(frozen=True)
class HookResult:
    ok: bool
    output: str


def run_hook(path: str, kind: str, guest_name: str, disk: str, timeout: float) -> HookResult:
    """``PATH KIND GUEST_NAME DISK`` as an argument list (no shell); non-zero or timeout = failure."""
    argv = [path, kind, guest_name, disk]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        return HookResult(False, f"timed out after {timeout:g} s; output: {out.decode('utf-8', 'replace').strip()}")
    except OSError as exc:
        return HookResult(False, f"cannot run: {exc}")
    output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    if done.returncode != 0:
        return HookResult(False, f"exit status {done.returncode}; output: {output}")
    return HookResult(True, output)


# -- one guest's snapshot step ---------------------------------------------------------------


def cancel(plan: dict[str, Any], note: str) -> None:
    """A pre hook said no: nothing is created for this disk, nothing new is sent; not a failure."""
    plan.update(new_snapshots=[], due=[], transfers=[], kind="none", note=note)


def snapshot_guest(
    guest: Mapping[str, Any],
    plans: list[dict[str, Any]],
    create: Callable[[dict[str, Any]], None],
    api: PveApi | None,
    hooks: Mapping[str, str | None],
    hook_timeout: float,
    freeze: bool,
    freeze_timeout: float,
    thaw_timeout: float = 60.0,
    on_freeze_denied: str = "fail",
) -> tuple[list[str], list[str]]:
    """Snapshot one guest's disks that have snapshots due: returns (warnings, agent calls).

    Order: pre_vm hook; pre_disk hook per disk; fsfreeze-freeze (running qemu guests whose agent
    allows it); every disk's snapshots; thaw and verify (on every path: try/finally, see
    frozen()); post_disk hooks; post_vm hook. Pre-disk hooks run before the freeze so the guest
    stays frozen only for the snapshots themselves. A failing pre hook cancels its guest or disk
    with a warning that carries its output, and its post hook does not run. ``create(plan)``
    creates one disk's snapshots and records its own failure in the plan; the other disks go on.

    A freeze the API refuses (403) fails the guest's disks with nothing snapshotted when
    ``on_freeze_denied`` is ``fail``, or snapshots them crash-consistent with a warning
    (``crash_consistent``). Every plan of a guest whose freeze was attempted gets ``freeze``:
    ``{"state": thawed|not-frozen|denied|may-be-frozen, "message": ...}``.
    """
    warnings: list[str] = []
    calls: list[str] = []
    where = f"guest {guest.get('vmid')} ({guest.get('name')})"
    todo = [plan for plan in plans if plan.get("ok", True) and plan.get("new_snapshots")]
    if not todo:
        return warnings, calls
    name = str(guest.get("name", ""))

    def hook(kind: str, disk: str) -> bool:
        path = hooks.get(kind)
        if not path:
            return True
        result = run_hook(path, kind, name, disk, hook_timeout)
        if not result.ok:
            target = where + (f" disk {disk}" if disk else "")
            warnings.append(f"{target}: hook {kind} {path} failed: {result.output}")
        return result.ok

    def guarded(plan: dict[str, Any]) -> None:
        try:
            create(plan)
        except Exception as exc:
            # One disk failing must neither skip the others nor the thaw.
            made = set(plan.get("created", []))
            plan.update(ok=False, error=f"{where} disk {plan.get('disk')}: {exc}")
            plan["transfers"] = [
                t
                for t in plan.get("transfers", [])
                if t["to_snap"] not in plan["new_snapshots"] or t["to_snap"] in made
            ]

    def refuse(plan: dict[str, Any], why: str) -> None:
        # Nothing was created: only transfers of snapshots that already exist remain.
        plan["transfers"] = [t for t in plan.get("transfers", []) if t["to_snap"] not in plan["new_snapshots"]]
        plan.update(ok=False, error=f"{where} disk {plan.get('disk')}: {why}", new_snapshots=[], due=[])

    if not hook("pre_vm", ""):
        for plan in todo:
            cancel(plan, f"{where}: cancelled by the pre_vm hook")
        return warnings, calls
    ready = []
    for plan in todo:
        if hook("pre_disk", plan.get("disk", plan["image"])):
            ready.append(plan)
        else:
            cancel(plan, f"{where} disk {plan.get('disk')}: cancelled by the pre_disk hook")
    if ready:
        if freeze and api is not None and guest.get("freeze"):
            node, vmid = str(guest["node"]), int(guest["vmid"])
            with frozen(api, node, vmid, where, freeze_timeout, thaw_timeout) as state:
                if state.denied and on_freeze_denied == "fail":
                    why = (
                        f"fsfreeze-freeze refused by the API ({state.denied}): the API user needs "
                        f"{FREEZE_PRIVILEGES} on /vms/{vmid}; nothing snapshotted (on_freeze_denied: fail; "
                        "crash_consistent backs it up unfrozen)"
                    )
                    for plan in ready:
                        refuse(plan, why)
                else:
                    if state.denied:
                        state.warnings.append(
                            f"{where}: fsfreeze-freeze refused by the API ({state.denied}): snapshot is "
                            "crash-consistent (on_freeze_denied: crash_consistent)"
                        )
                    for plan in ready:
                        guarded(plan)
            warnings.extend(state.warnings)
            calls.extend(state.calls)
            record = {"state": state.outcome, "message": state.may_be_frozen}
            for plan in plans:
                plan["freeze"] = dict(record)
        else:
            for plan in ready:
                guarded(plan)
        for plan in ready:
            if plan.get("ok", True):
                hook("post_disk", plan.get("disk", plan["image"]))
    hook("post_vm", "")
    return warnings, calls
