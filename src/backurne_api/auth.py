# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bearer-token authentication of the REST API.

The tokens file holds one line per client, only the SHA-256 of each token, never a token::

    # comment
    sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 awx-restore
    sha256:...                                                                  alice

(the text after the hash is a label, used in the access log instead of the token). An optional
``scope=read`` or ``scope=operate`` right after the hash says what the token may do::

    sha256:...  scope=read  helpdesk

``read`` lists, browses what is already mapped and downloads; ``operate`` may also map, unmap,
restore and pin or release snapshots (holds). A line without a scope keeps the rights every
token had before scopes existed: ``operate``. A stolen
tokens file therefore lets nobody in. Tokens are random (``backurne-api --generate-token``
makes 256-bit ones), so a plain SHA-256 is enough: there is no low-entropy secret to stretch.

A presented token is hashed and compared with EVERY stored hash with ``hmac.compare_digest``
(no early exit on the first match), so the time taken says nothing about which hash, or which
prefix of one, is close. The file is re-read when its mtime or size changes: adding or
revoking a client needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

HASH_PREFIX = "sha256:"
_LINE = re.compile(r"^sha256:(?P<hex>[0-9a-fA-F]{64})(?:\s+scope=(?P<scope>\S*))?(?:\s+(?P<label>\S.*))?$")
READ, OPERATE = "read", "operate"
SCOPES = (READ, OPERATE)
DEFAULT_SCOPE = OPERATE  # what a line without scope= could always do
# What a bearer token may look like (RFC 6750 b64token), bounded: a longer header is refused
# before hashing anything.
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MAX_TOKEN_LENGTH = 512


class TokensFileError(ValueError):
    """The tokens file is missing or malformed; the message names the file and the line."""


def hash_token(token: str) -> str:
    """The tokens-file form of a token: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random token (32 bytes, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def valid_token_syntax(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_LENGTH and _TOKEN.match(token) is not None


@dataclass(frozen=True)
class StoredToken:
    digest: bytes
    label: str
    scope: str = DEFAULT_SCOPE

    @property
    def may_operate(self) -> bool:
        return self.scope == OPERATE


def may_operate(scope: str | None) -> bool:
    """Whether a principal of ``scope`` may change something (map, restore, hold)."""
    return scope == OPERATE


def parse_tokens_file(text: str, path: str) -> list[StoredToken]:
    tokens: list[StoredToken] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            # Do not echo the line: it might be a token pasted by mistake.
            raise TokensFileError(
                f"{path} line {number}: expected 'sha256:<64 hex digits> [scope=read|operate] [label]' "
                "(store hashes made by 'backurne-api --hash-token', never tokens)"
            )
        scope = match["scope"] if match["scope"] is not None else DEFAULT_SCOPE
        if scope not in SCOPES:
            raise TokensFileError(f"{path} line {number}: unknown scope {scope!r} (known: {', '.join(SCOPES)})")
        label = (match["label"] or f"line {number}").strip()
        tokens.append(StoredToken(bytes.fromhex(match["hex"]), label, scope))
    return tokens


class TokenStore:
    """The hashes of the tokens file, reloaded when the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._tokens: list[StoredToken] = []
        self._load()  # a broken file fails at start-up, not at the first request

    def _load(self) -> None:
        try:
            st = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokensFileError(f"tokens file {self.path}: {exc.strerror or exc}") from exc
        self._tokens = parse_tokens_file(text, str(self.path))
        self._stamp = (st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            # Keep the last good set rather than locking everybody out (or in) on a
            # transient error such as a non-atomic editor save; the error shows at restart.
            return
        if (st.st_mtime_ns, st.st_size) != self._stamp:
            try:
                self._load()
            except TokensFileError:
                return

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, token: str) -> str | None:
        """The label of the matching token, or None."""
        stored = self.identify(token)
        return stored.label if stored is not None else None

    def identify(self, token: str) -> StoredToken | None:
        """The line of the matching token (label and scope), or None."""
        return self.by_digest(hashlib.sha256(token.encode("utf-8")).digest())

    def by_digest(self, digest: bytes) -> StoredToken | None:
        """The line holding this SHA-256 now (a console session re-checks its token's with it:
        a token removed from the file, or given another scope, takes effect at once)."""
        with self._lock:
            self._refresh()
            tokens = list(self._tokens)
        found: StoredToken | None = None
        for stored in tokens:
            # No break: every hash is compared, whatever matched.
            if hmac.compare_digest(stored.digest, digest) and found is None:
                found = stored
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None if absent or malformed."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value if valid_token_syntax(value) else None
