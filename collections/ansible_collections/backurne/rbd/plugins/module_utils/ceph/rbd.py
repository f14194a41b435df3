# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The one place where rbd/rados commands are built and run, locally or on a remote node over
# ssh. Every command is an argument list; the only shell string in the product is the remote
# command handed to ssh (and the `bash -c` script of a remote pipeline), and both are built by
# quote_argv() alone. RbdError and stderr_cause live in ceph/errors.py (imported from here too).
import atexit
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ansible_collections.backurne.rbd.plugins.module_utils.ceph.capacity import full_pool_hint
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.errors import RbdError, stderr_cause
from ansible_collections.backurne.rbd.plugins.module_utils.ceph.rados_listing import (
    ImageMissing,
    RadosSession,
    SnapshotFailed,
)
from ansible_collections.backurne.rbd.plugins.module_utils.compat.stdlib import zip_strict

# An image/pool/namespace name that contains one of these cannot be addressed through the rbd
# CLI at all: even `--image=NAME` goes through rbd's spec parser, which splits on them
# (verified on 16.2: `--image=x@y` -> "snapshot name specified for a command that doesn't use
# it", `--image=x/y` -> "error opening pool 'x'"). Refuse them early with a clear message.
_SPEC_SEPARATORS = ("/", "@")

# What the Ceph CLIs print for a keyring or conf path they cannot read (16.2).
_KEYRING_MISSING = re.compile(r"unable to find a keyring on (\S+?):? \(")
_CONF_MISSING = re.compile(r"unable to open config file from search list (\S+)")


def quote_argv(argv: Sequence[str]) -> str:
    """Quote an argument list into one POSIX shell command line, word by word.

    This is THE quoting function: a remote command (ssh passes one string to the remote login
    shell) and the script of a remote pipeline are built here and nowhere else.
    """
    words = list(argv)
    if not words:
        raise ValueError("cannot quote an empty command")
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"command words must be str, got {type(word).__name__}: {word!r}")
        if "\0" in word:
            # execve() cannot carry a NUL; better fail here than run a truncated word.
            raise ValueError(f"NUL byte in command word {word!r}")
    return " ".join(shlex.quote(word) for word in words)


def in_creation_order(entries: Sequence[Mapping[str, Any]], id_key: str = "id") -> list[Mapping[str, Any]]:
    """`rbd` JSON snapshot entries in Ceph's creation order: snapshot id ascending.

    The id only grows, whatever a snapshot is named (backurne 2.x wrote local time into its
    names). librbd lists in id order already; sorting says so rather than relying on it.
    Entries keep their listed order when any lacks an integer id (nothing better to go by).
    """
    ids = [entry.get(id_key) for entry in entries]
    if not all(isinstance(snap_id, int) and not isinstance(snap_id, bool) for snap_id in ids):
        return list(entries)
    return [entry for _snap_id, _index, entry in sorted(zip_strict(ids, range(len(ids)), entries))]


def _check_name(kind: str, value: str) -> None:
    if not value:
        raise ValueError(f"empty {kind} name")
    if "\0" in value or any(sep in value for sep in _SPEC_SEPARATORS):
        raise ValueError(f"{kind} name {value!r} cannot be addressed by the rbd CLI (contains '/', '@' or NUL)")


@dataclass(frozen=True)
class ImageSpec:
    """pool/[namespace/]image[@snap], passed to rbd as --pool=/--namespace=/--image=/--snap=.

    Options rather than a positional spec: a name starting with a dash would be read as an
    option when positional; `--image=-x` is unambiguous (the `=` form keeps even boost's
    parser from looking at the value).
    """

    pool: str
    namespace: str | None
    image: str
    snap: str | None = None

    def __post_init__(self) -> None:
        if self.namespace == "":
            object.__setattr__(self, "namespace", None)
        _check_name("pool", self.pool)
        if self.namespace is not None:
            _check_name("namespace", self.namespace)
        _check_name("image", self.image)
        if self.snap is not None and (not self.snap or "\0" in self.snap):
            raise ValueError(f"invalid snapshot name {self.snap!r}")

    @classmethod
    def parse(cls, text: str) -> ImageSpec:
        head, at, snap = text.partition("@")
        parts = head.split("/")
        if len(parts) == 2:
            pool, namespace, image = parts[0], None, parts[1]
        elif len(parts) == 3:
            pool, namespace, image = parts
        else:
            raise ValueError(f"image spec {text!r} is not pool/[namespace/]image[@snap]")
        return cls(pool, namespace, image, snap if at else None)

    @classmethod
    def of(cls, spec: ImageSpec | str) -> ImageSpec:
        return spec if isinstance(spec, ImageSpec) else cls.parse(spec)

    def at(self, snap: str | None) -> ImageSpec:
        return replace(self, snap=snap)

    def options(self, *, with_snap: bool = True) -> list[str]:
        words = [f"--pool={self.pool}"]
        if self.namespace:
            words.append(f"--namespace={self.namespace}")
        words.append(f"--image={self.image}")
        if with_snap and self.snap is not None:
            words.append(f"--snap={self.snap}")
        return words

    def __str__(self) -> str:
        text = f"{self.pool}/{self.namespace}/{self.image}" if self.namespace else f"{self.pool}/{self.image}"
        return f"{text}@{self.snap}" if self.snap is not None else text


@dataclass(frozen=True)
class CephAccess:
    """How to reach one Ceph cluster from the node the command runs on."""

    cluster: str = "ceph"
    ceph_client: str = "admin"
    keyring: str | None = None
    ceph_conf: str | None = None
    # Whose options these are, for messages: "the backup node", "live cluster NAME".
    owner: str = field(default="", compare=False)

    def file_problem(self) -> str | None:
        """Why the keyring or ceph_conf path cannot be used on this node, or None.

        Only meaningful where the files live (the node the command runs on). Checked before
        any rbd call: the CLI would say "(2) No such file or directory", naming neither the file
        nor the option, and read like a missing image.
        """
        for option, path in (("keyring", self.keyring), ("ceph_conf", self.ceph_conf)):
            if not path:
                continue
            problem = _path_problem(path)
            if problem:
                owner = f" of {self.owner}" if self.owner else ""
                return f"{option} {path} (option {option}{owner}) {problem}"
        return None

    def _common(self) -> list[str]:
        # The keyring is a path: key material never appears on a command line (ps, logs).
        words = ["--cluster", self.cluster, "--id", self.ceph_client]
        if self.keyring:
            words += ["--keyring", self.keyring]
        if self.ceph_conf:
            words += ["-c", self.ceph_conf]
        return words

    def rbd_argv(self, *args: str) -> list[str]:
        return ["rbd", *self._common(), *args]

    def rados_argv(self, *args: str) -> list[str]:
        return ["rados", *self._common(), *args]

    def ceph_argv(self, *args: str) -> list[str]:
        return ["ceph", *self._common(), *args]


def _path_problem(path: str) -> str:
    """What is wrong with ``path`` as a file to read; empty when nothing is."""
    if not os.path.exists(path):
        return "does not exist"
    if os.path.isdir(path):
        return "is a directory, not a file"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return ""


def _ssh_option_path(path: str, token_suffix: str = "") -> str:
    # ssh expands %-tokens in these paths and splits -o values on whitespace (double quotes
    # group); escape both so an odd path is taken literally. token_suffix is appended as is.
    if '"' in path:
        raise ValueError(f"ssh path {path!r} contains a double quote")
    value = path.replace("%", "%%") + token_suffix
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


@dataclass(frozen=True)
class SshTarget:
    """A live node reached over ssh, non-interactively, with a strict host key when known."""

    host: str
    user: str = "root"
    port: int = 22
    identity_file: str | None = None
    known_hosts_file: str | None = None
    cipher: str | None = None
    control_master: bool = True
    control_persist: int = 60
    control_dir: str = "~/.ansible/cp-backurne"
    connect_timeout: int = 10
    extra_options: tuple[str, ...] = ()
    server_alive_interval: int = 15
    server_alive_count_max: int = 3

    def __post_init__(self) -> None:
        for kind, value in (("host", self.host), ("user", self.user)):
            if not value or value.startswith("-") or any(ch.isspace() or ch in "@\0" for ch in value):
                raise ValueError(f"invalid ssh {kind} {value!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid ssh port {self.port}")
        object.__setattr__(self, "extra_options", tuple(self.extra_options))

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def control_path_dir(self) -> str:
        path = os.path.expanduser(self.control_dir)
        # The socket grants a shell on the live node to whoever can connect to it: 0700.
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def argv(self, remote_command: str) -> list[str]:
        argv = [
            "ssh",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            f"ServerAliveInterval={self.server_alive_interval}",
            "-o",
            f"ServerAliveCountMax={self.server_alive_count_max}",
            # Keeps banners and "Permanently added" chatter out of the stderr we report.
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(self.port),
        ]
        if self.identity_file:
            argv += ["-i", self.identity_file.replace("%", "%%"), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts_file:
            argv += [
                "-o",
                f"UserKnownHostsFile={_ssh_option_path(self.known_hosts_file)}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
            ]
        if self.cipher:
            argv += ["-c", self.cipher]
        if self.control_master:
            # %C: a hash of (local host, remote host, port, user), short enough for a socket.
            control_path = _ssh_option_path(self.control_path_dir(), "/%C")
            argv += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={control_path}",
                "-o",
                f"ControlPersist={self.control_persist}",
            ]
        else:
            argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        for option in self.extra_options:
            argv += ["-o", option]
        # `--` after the destination: nothing in the remote command is parsed by ssh itself.
        argv += [f"{self.user}@{self.host}", "--", remote_command]
        return argv

    def exit_master_argv(self) -> list[str]:
        """argv asking this target's ControlMaster (if any) to exit now, not at ControlPersist."""
        control_path = _ssh_option_path(self.control_path_dir(), "/%C")
        return [
            "ssh",
            "-o",
            f"ControlPath={control_path}",
            "-p",
            str(self.port),
            "-O",
            "exit",
            f"{self.user}@{self.host}",
        ]


@dataclass
class _Completed:
    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str = field(repr=False)


def _describe(args: Sequence[str]) -> tuple[str, str]:
    """("rbd snap create", "pool/ns/img@snap") from an rbd argument list, for error messages."""
    action = []
    for word in args:
        if word.startswith("-") or not word.replace("-", "").isalpha():
            break
        action.append(word)
    values: dict[str, str] = {}
    for word in args:
        for key in ("pool", "namespace", "image", "snap"):
            if word.startswith(f"--{key}="):
                values[key] = word.split("=", 1)[1]
    subject = ""
    if "image" in values:
        parts = [values.get("pool", "?"), values.get("namespace", ""), values["image"]]
        subject = "/".join(part for part in parts if part)
        if "snap" in values:
            subject += "@" + values["snap"]
    elif "pool" in values:
        subject = "/".join(part for part in (values["pool"], values.get("namespace", "")) if part)
    return " ".join(action), subject


class RbdRunner:
    """Runs rbd (and rados) on one node: here, or on a live node over ssh."""

    def __init__(
        self,
        access: CephAccess,
        ssh: SshTarget | None = None,
        default_timeout: float = 120,
        label: str | None = None,
        in_process: bool = True,
    ) -> None:
        self.access = access
        self.ssh = ssh
        self.default_timeout = default_timeout
        self.label = label or (f"node {ssh.host}" if ssh else "local")
        # Listing, header lookups, backup locks and snapshot creation go through one in-process
        # RADOS client when this node has python3-rados (module_utils/ceph/rados_listing.py), else
        # through the CLIs. BACKURNE_RADOS_IN_PROCESS=0 (the task's environment) turns it off.
        self.in_process = in_process and os.environ.get("BACKURNE_RADOS_IN_PROCESS", "1") != "0"
        self._session: RadosSession | None = None
        self._session_tried = False
        self._session_guard = threading.Lock()
        # Which way the last listing went, for tests and the benchmarks: "rados" or "rbd".
        self.last_listing: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.ssh is not None

    def file_problem(self) -> str | None:
        """What is wrong with this node's keyring/ceph_conf paths (local runners only), or None."""
        return None if self.is_remote else self.access.file_problem()

    def rados_session(self) -> RadosSession | None:
        """This node's in-process RADOS client (opened once, on first use), or None: use the CLIs."""
        if not self.in_process or self.is_remote or self.file_problem():
            return None
        with self._session_guard:
            if not self._session_tried:
                self._session_tried = True
                access = self.access
                self._session = RadosSession.open(
                    access.cluster, access.ceph_client, access.keyring, access.ceph_conf, self._timeout(None)
                )
                if self._session is not None:
                    atexit.register(self._session.close)
            return self._session

    def command_argv(self, words: Sequence[str]) -> list[str]:
        """The argv that runs `words` on this runner's node."""
        if self.ssh is None:
            return list(words)
        return self.ssh.argv(quote_argv(words))

    def remote_shell_argv(self, pipeline_words: Sequence[Sequence[str]]) -> list[str]:
        """argv running `stage1 | stage2 | …` on this runner's node, failing if any stage fails.

        Only the pipe is shell syntax; every word of every stage is quoted by quote_argv.
        pipefail makes bash exit non-zero when an early stage (rbd export…) fails even though
        the last one (zstd, a hasher) succeeded on the truncated input. --norc/--noprofile:
        bash run under sshd reads ~/.bashrc even with -c, and a node's .bashrc may cost more
        than the transfer itself (185 ms per call measured on the lab VM: bench/README.md).
        """
        if not pipeline_words:
            raise ValueError("empty pipeline")
        script = " | ".join(quote_argv(stage) for stage in pipeline_words)
        return self.command_argv(["bash", "--norc", "--noprofile", "-o", "pipefail", "-c", script])

    def _execute(
        self,
        argv: list[str],
        *,
        timeout: float | None,
        stdin: bytes | None = None,
    ) -> _Completed:
        problem = self.file_problem()
        if problem:
            # Not the CLI's "(2) No such file or directory": that names neither the file nor the
            # option, and callers would read it as "image not found".
            return _Completed(argv, 2, "", problem)
        try:
            # Own process group, so that a timeout also ends what the command started (the
            # stages of a local `bash -c` pipeline), not just its first process.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            # e.g. rbd or ssh not installed on this node
            return _Completed(argv, 127, "", f"cannot run {argv[0]}: {exc}")
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out, err = b"", b""
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            return _Completed(argv, None, "", err.decode("utf-8", "replace"))
        return _Completed(argv, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def _error(self, done: _Completed, args: Sequence[str], timeout: float | None, tool: str) -> RbdError:
        action, subject = _describe(args)
        cause = None
        if done.rc is None:
            cause = f"timed out after {timeout:g} s" + self._timeout_hint(args, tool)
        elif self.ssh is not None and done.rc == 255:
            cause = "ssh: " + (stderr_cause(done.stderr) or "connection failed")
        else:
            cause = self._access_cause(done.stderr)
        return RbdError(
            done.argv,
            done.rc,
            done.stderr,
            self.label,
            action=f"{tool} {action}".strip(),
            subject=subject,
            cause=cause,
        )

    def _timeout_hint(self, args: Sequence[str], tool: str) -> str:
        """The ", probably because …" of a command that timed out on a pool that cannot take writes.

        Ceph holds writes into a full pool (full OSD, quota reached) instead of failing them:
        the timeout is all the command sees. One monitor read tells (local runners only: that
        is the backup node, where the writes go).
        """
        pool = next((word.split("=", 1)[1] for word in args if word.startswith("--pool=")), None)
        if tool == "ceph" or self.is_remote or not pool:
            return ""
        hint = full_pool_hint(self, pool)
        return f", probably because {hint}" if hint else ""

    def _access_cause(self, stderr: str) -> str | None:
        """The CLI's own words for a keyring or conf file it could not read, with the option
        and whose it is (for a remote node, whose files are not checked beforehand)."""
        for pattern, option in ((_KEYRING_MISSING, "keyring"), (_CONF_MISSING, "ceph_conf")):
            found = pattern.search(stderr)
            if found:
                owner = f" of {self.access.owner}" if self.access.owner else ""
                return f"{option} {found.group(1)} (option {option}{owner}) cannot be read on {self.label}"
        return None

    def _timeout(self, timeout: float | None) -> float:
        return self.default_timeout if timeout is None else timeout

    def run(self, args: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None) -> str:
        """Run `rbd ARGS`; return its stdout; raise RbdError on any failure or timeout."""
        limit = self._timeout(timeout)
        done = self._execute(self.command_argv(self.access.rbd_argv(*args)), timeout=limit, stdin=stdin)
        if done.rc != 0:
            raise self._error(done, args, limit, "rbd")
        return done.stdout

    def run_rados(self, args: Sequence[str], *, timeout: float | None = None) -> str:
        limit = self._timeout(timeout)
        done = self._execute(self.command_argv(self.access.rados_argv(*args)), timeout=limit)
        if done.rc != 0:
            raise self._error(done, args, limit, "rados")
        return done.stdout

    def run_pipeline(
        self,
        pipeline_words: Sequence[Sequence[str]],
        *,
        timeout: float | None,
        action: str,
        subject: str = "",
    ) -> str:
        """Run a pipeline on this node (see remote_shell_argv); timeout None = no limit."""
        done = self._execute(self.remote_shell_argv(pipeline_words), timeout=timeout)
        if done.rc != 0:
            cause = f"timed out after {timeout:g} s" if done.rc is None and timeout is not None else None
            raise RbdError(done.argv, done.rc, done.stderr, self.label, action=action, subject=subject, cause=cause)
        return done.stdout

    def mon_json(
        self, command: dict[str, Any], words: Sequence[str], *, timeout: float | None = None, open_session: bool = True
    ) -> Any:
        """A monitor command's JSON answer: in process when possible, else `ceph WORDS --format=json`.

        ``command`` is the monitor's form ({"prefix": "osd dump", ...}), ``words`` the same
        command as CLI arguments. ``open_session`` False uses the in-process client only when it
        is already connected (connecting waits up to the default timeout, not ``timeout``).
        """
        limit = self._timeout(timeout)
        session = self.rados_session() if open_session else self._session
        if session is not None:
            try:
                return session.mon_command({**command, "format": "json"}, limit)
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # the CLI below answers, or says what is wrong
        args = [*words, "--format=json"]
        done = self._execute(self.command_argv(self.access.ceph_argv(*args)), timeout=limit)
        if done.rc != 0:
            raise self._error(done, args, limit, "ceph")
        return self.parse_json(done.stdout, args, tool="ceph")

    def json(self, args: Sequence[str], *, timeout: float | None = None) -> Any:
        out = self.run([*args, "--format=json"], timeout=timeout)
        return self.parse_json(out, args)

    def parse_json(self, out: str, args: Sequence[str], tool: str = "rbd") -> Any:
        try:
            return json.loads(out)
        except ValueError as exc:
            action, subject = _describe(args)
            raise RbdError(
                [tool, *args],
                0,
                "",
                self.label,
                action=f"{tool} {action}",
                subject=subject,
                cause=f"unparsable JSON output ({exc})",
            ) from exc

    # -- images and snapshots -------------------------------------------------------------

    def list_images(self, pool: str, namespace: str | None = None) -> dict[str, list[str]]:
        """Every image of pool[/namespace] -> its snapshot names, oldest first, in one call."""
        _check_name("pool", pool)
        if namespace:
            _check_name("namespace", namespace)
        session = self.rados_session()
        if session is not None:
            try:
                listed = session.list_images(pool, namespace)
            except Exception:  # pylint: disable=broad-exception-caught
                # Whatever went wrong (a format it does not read, a timeout), the CLI listing
                # either works or fails with the message an operator can act on.
                pass
            else:
                self.last_listing = "rados"
                return listed
        self.last_listing = "rbd"
        args = ["ls", "--long", f"--pool={pool}"]
        if namespace:
            args.append(f"--namespace={namespace}")
        args.append("--format=json")
        limit = self._timeout(None)
        done = self._execute(self.command_argv(self.access.rbd_argv(*args)), timeout=limit)
        if done.rc != 0:
            # `rbd ls -l` fails (and says so on stderr) when an image disappears between its
            # listing and its opening, e.g. a concurrent `rbd rm`; its JSON for all the other
            # images is still complete, so only a missing/garbled document is an error.
            try:
                entries = json.loads(done.stdout)
            except ValueError:
                raise self._error(done, args, limit, "rbd") from None
            if not isinstance(entries, list):
                raise self._error(done, args, limit, "rbd")
        else:
            entries = self.parse_json(done.stdout, args)
        rows: dict[str, list[Mapping[str, Any]]] = {}
        for entry in entries:
            name = entry.get("image")
            if not isinstance(name, str):
                continue
            snaps = rows.setdefault(name, [])
            if "snapshot" in entry:
                snaps.append(entry)
        return {
            name: [str(entry["snapshot"]) for entry in in_creation_order(snaps, "snapshot_id")]
            for name, snaps in rows.items()
        }

    def list_images_with_meta(
        self, pool: str, namespace: str | None, meta_prefix: str
    ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
        """list_images, plus each image's image-meta whose key starts with ``meta_prefix`` (holds).

        In process, the image-meta comes from the header already read for the snapshots (no
        extra process per image); only when that reader is unavailable, `rbd image-meta list`
        runs for each image.
        """
        session = self.rados_session()
        if session is not None:
            try:
                found = session.list_images_meta(pool, namespace, meta_prefix)
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # the CLI below answers, or says what is wrong
            else:
                self.last_listing = "rados"
                return {n: snaps for n, (snaps, _m) in found.items()}, {n: meta for n, (_s, meta) in found.items()}
        listing = self.list_images(pool, namespace)
        metas: dict[str, dict[str, str]] = {}
        for image in listing:
            try:
                meta = self.image_meta(ImageSpec(pool, namespace, image))
            except RbdError as exc:
                if exc.is_not_found:
                    continue  # removed since the listing: nothing left to hold (its snap rm would find nothing)
                raise
            metas[image] = {key: value for key, value in meta.items() if key.startswith(meta_prefix)}
        return listing, metas

    def header(self, spec: ImageSpec | str) -> tuple[str, int | None, list[str] | None]:
        """(header object, size, user snapshots or None) of a format-2 image.

        In process when possible (two omap reads, snapshots included), else `rbd info` (no
        snapshots: None). A missing image raises the RbdError `rbd info` would (is_not_found).
        """
        spec = ImageSpec.of(spec)
        session = self.rados_session()
        if session is not None:
            try:
                header, size, snaps = session.image_header(spec.pool, spec.namespace, spec.image)
            except ImageMissing:
                raise self._missing(spec, "find the header of") from None
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # the CLI below answers, or says what is wrong
            else:
                return header, size, snaps
        info = self.image_info(spec)
        image_id = info.get("id")
        if not image_id:
            raise RbdError([], 0, "", self.label, action="lock", subject=str(spec), cause="image has no id (format 1?)")
        size = info.get("size")
        return f"rbd_header.{image_id}", int(size) if isinstance(size, int) else None, None

    def image_meta(self, spec: ImageSpec | str) -> dict[str, str]:
        """The image's `rbd image-meta` keys and values (in process when possible, else
        `rbd image-meta list`). A missing image raises the RbdError the CLI would (is_not_found)."""
        spec = ImageSpec.of(spec)
        session = self.rados_session()
        if session is not None:
            try:
                return session.image_metadata(spec.pool, spec.namespace, spec.image)
            except ImageMissing:
                raise self._missing(spec, "read the image-meta of") from None
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # the CLI below answers, or says what is wrong
        args = ["image-meta", "list", *spec.options(), "--format=json"]
        out = self.run(args)
        found = self.parse_json(out, args) if out.strip() else {}
        return {str(key): str(value) for key, value in found.items()} if isinstance(found, dict) else {}

    def _missing(self, spec: ImageSpec, action: str) -> RbdError:
        stderr = "(2) No such file or directory"  # what is_not_found looks for
        return RbdError([], 2, stderr, self.label, action=action, subject=str(spec), cause="image not found")

    def snapshot_names(self, spec: ImageSpec | str) -> list[str]:
        """The image's user snapshots, oldest first (in process when possible, else `rbd snap ls`)."""
        spec = ImageSpec.of(spec)
        if self.rados_session() is not None:
            found = self.header(spec)[2]
            if found is not None:
                return found
        return [str(snap["name"]) for snap in in_creation_order(self.json(["snap", "ls", *spec.options()]))]

    def image_info(self, spec: ImageSpec | str) -> dict[str, Any]:
        return self.json(["info", *ImageSpec.of(spec).options()])

    def exists(self, spec: ImageSpec | str) -> bool:
        """Whether the image (or, with @snap, the snapshot) exists; other errors raise."""
        try:
            self.image_info(spec)
        except RbdError as exc:
            if exc.is_not_found:
                return False
            raise
        return True

    @staticmethod
    def _snapshot_spec(spec: ImageSpec | str, operation: str) -> ImageSpec:
        parsed = ImageSpec.of(spec)
        if parsed.snap is None:
            raise ValueError(f"{operation} needs image@snap, got {parsed}")
        return parsed

    def _librbd_snapshot_op(self, parsed: ImageSpec, method: str, action: str) -> tuple[bool, Any]:
        """RadosSession.``method`` (pool, namespace, image, snap) in this process: (True, its answer),
        or (False, None) when there is no session or it failed unexpectedly (no python3-rbd,
        anything else): the CLI then does it and reports. A refusal by librbd raises the RbdError
        the CLI's ``action`` would."""
        session = self.rados_session()
        if session is None:
            return False, None
        try:
            return True, getattr(session, method)(parsed.pool, parsed.namespace, parsed.image, parsed.snap)
        except SnapshotFailed as exc:
            raise self._librbd_error(exc, action, parsed) from None
        except Exception:  # pylint: disable=broad-exception-caught
            return False, None

    def snap_create(self, spec: ImageSpec | str) -> None:
        parsed = self._snapshot_spec(spec, "snap_create")
        # librbd in this process: the same request `rbd snap create` makes (through the exclusive
        # lock's owner when a VM has the image open), without a process and a cephx handshake per image.
        done, _answer = self._librbd_snapshot_op(parsed, "snap_create", "snap create")
        if not done:
            self.run(["snap", "create", "--no-progress", *parsed.options()])

    def snap_remove(self, spec: ImageSpec | str) -> None:
        parsed = self._snapshot_spec(spec, "snap_remove")
        self.run(["snap", "rm", "--no-progress", *parsed.options()])

    def head_differs(self, spec: ImageSpec | str) -> bool:
        """Whether image's HEAD differs from image@snap: another size, or any extent written since.

        In process when possible (librbd's diff_iterate, stopping at the first extent), else
        `rbd info` twice and `rbd diff --from-snap --whole-object`. Object granular: an object
        written back to the same bytes still counts (the answer is "maybe" -> roll back).
        """
        parsed = self._snapshot_spec(spec, "head_differs")
        done, differs = self._librbd_snapshot_op(parsed, "head_differs", "diff")
        if done:
            return bool(differs)
        head, snap = self.image_info(parsed.at(None)), self.image_info(parsed)
        if head.get("size") != snap.get("size"):
            return True
        extents = self.json(["diff", f"--from-snap={parsed.snap}", "--whole-object", *parsed.options(with_snap=False)])
        return bool(extents)

    def snap_rollback(self, spec: ImageSpec | str, timeout: float | None = None) -> None:
        """Reset image's HEAD to image@snap (`rbd snap rollback`); writes every object: may take a while."""
        parsed = self._snapshot_spec(spec, "snap_rollback")
        done, _answer = self._librbd_snapshot_op(parsed, "snap_rollback", "snap rollback")
        if not done:
            self.run(["snap", "rollback", "--no-progress", *parsed.options()], timeout=timeout)

    def _librbd_error(self, exc: SnapshotFailed, action: str, spec: ImageSpec) -> RbdError:
        # The text rbd would print, so that is_not_found & co. work as for the CLI.
        text = f"({exc.errno}) {os.strerror(exc.errno)}: {exc}" if exc.errno else str(exc)
        return RbdError([], exc.errno or None, text, self.label, action=action, subject=str(spec))

    def create(self, spec: ImageSpec | str, size_bytes: int) -> None:
        parsed = ImageSpec.of(spec).at(None)
        # In process when possible: a backup's placeholder per new image would otherwise cost an
        # `rbd` process and a cluster connection (~70-100 ms on the lab, bench/engine.py).
        session = self.rados_session()
        if session is not None:
            try:
                session.create_image(parsed.pool, parsed.namespace, parsed.image, int(size_bytes))
                return
            except SnapshotFailed as exc:
                raise self._librbd_error(exc, "create", parsed) from None
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # no python3-rbd, or anything unexpected: the CLI does it and reports
        self.run(["create", f"--size={int(size_bytes)}B", *parsed.options(with_snap=False)])

    def remove(self, spec: ImageSpec | str) -> None:
        self.run(["rm", "--no-progress", *ImageSpec.of(spec).options(with_snap=False)])

    def resize(self, spec: ImageSpec | str, size_bytes: int, allow_shrink: bool = False) -> None:
        args = ["resize", "--no-progress", f"--size={int(size_bytes)}B"]
        if allow_shrink:
            args.append("--allow-shrink")
        self.run([*args, *ImageSpec.of(spec).options(with_snap=False)])
