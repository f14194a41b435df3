# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Safe access to the files of a mounted backup snapshot.

A client names a file by a path relative to one mounted filesystem of a snapshot. Nothing it
sends may reach a file outside that filesystem:

* the text is checked first: NUL, an absolute path and any ``..`` component are refused
  before the filesystem is touched (:class:`BadPath`);
* the path is then resolved with ``realpath`` and must still lie under the mount's own real
  path — a symlink inside the snapshot pointing at ``/etc/shadow`` of the host, or
  ``../../..`` out of it, is refused (:class:`OutsideSnapshot`), whether its target exists
  on the host or not (the answer must not tell);
* the resolved file is opened with ``O_PATH | O_NOFOLLOW`` (no side effect on a device or
  FIFO, no symlink followed at the last step) and its ``st_dev`` must be the mount's: even if
  a symlink changed between the check and the open, the descriptor handed out is on the
  snapshot's filesystem. Only a regular file is ever opened for reading, through the
  descriptor (``/proc/self/fd/N``), never again by name.

The mounts are read-only, so in practice nothing changes between the check and the open;
the checks do not rely on it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from backurne_browse.mapping import path_components

CHUNK = 256 * 1024


class FileAccessError(Exception):
    """Base of the errors a client can cause; the message names the path, never the host path."""


class BadPath(FileAccessError):
    """The path text itself is not acceptable (NUL, absolute, ``..``)."""


class OutsideSnapshot(FileAccessError):
    """The path resolves (through a symlink) to something outside the snapshot's filesystem."""


class NotFound(FileAccessError):
    """Nothing at that path (or a dangling symlink, or a symlink loop)."""


class WrongType(FileAccessError):
    """A directory where a file was asked for, a device where a file was asked for, ..."""


def split_relative(path: str) -> list[str]:
    """The components of a client-supplied relative path; BadPath for anything unsafe.

    ``""``, ``"."`` and ``"/"``-free paths such as ``"etc/hostname"`` are fine; empty
    components (``a//b``) and ``.`` are dropped. Refused: NUL, a leading ``/`` (absolute),
    any ``..`` component — also when it would stay inside (``a/../b``): a client never needs
    it, and refusing it outright leaves nothing to get wrong.
    """
    if not isinstance(path, str):
        raise BadPath(f"path must be a string, got {type(path).__name__}")
    return path_components(path, BadPath)


@dataclass(frozen=True)
class Entry:
    name: str
    type: str  # file | directory | symlink | other
    size: int
    mode: str  # octal permission bits, e.g. "0644"
    mtime: float
    target: str | None = None  # a symlink's text (not followed)


def _type_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class SnapshotFiles:
    """The files under one mount point, reachable only through checked relative paths."""

    def __init__(self, root: str, label: str) -> None:
        # label: how messages name this filesystem ("image I snapshot S, filesystem p1"): the
        # names the client used, and paths relative to the mount, never resolved host paths
        # (a refusal must not say where a symlink would have led).
        self.label = label
        try:
            self.root = os.path.realpath(root, strict=True)
            self.root_dev = os.stat(self.root).st_dev
        except OSError as exc:
            raise NotFound(f"{label} is not mounted any more") from exc
        if not os.path.isdir(self.root):
            raise NotFound(f"{label} is not mounted any more")

    def _describe(self, parts: list[str]) -> str:
        return "/" + "/".join(parts)

    def resolve(self, path: str) -> tuple[str, list[str]]:
        """The real host path for ``path``, checked to lie inside the mount."""
        parts = split_relative(path)
        candidate = os.path.join(self.root, *parts) if parts else self.root
        # Containment first, on the lax resolution (symlinks followed as far as they exist):
        # a symlink out of the snapshot is refused whether or not its target exists on the
        # host, so answers say nothing about the host's files.
        if not self._inside(os.path.realpath(candidate)):
            raise OutsideSnapshot(f"{self._describe(parts)} leads outside {self.label} (through a symlink)")
        try:
            real = os.path.realpath(candidate, strict=True)
        except FileNotFoundError as exc:
            raise NotFound(f"{self._describe(parts)} does not exist in {self.label}") from exc
        except OSError as exc:  # ELOOP (symlink loop), ENOTDIR, EACCES
            raise NotFound(f"{self._describe(parts)} cannot be resolved in {self.label}: {exc.strerror}") from exc
        if not self._inside(real):
            raise OutsideSnapshot(f"{self._describe(parts)} leads outside {self.label} (through a symlink)")
        return real, parts

    def _inside(self, real: str) -> bool:
        return real == self.root or os.path.commonpath([self.root, real]) == self.root

    def _open_path(self, real: str, parts: list[str]) -> tuple[int, os.stat_result]:
        """O_PATH descriptor of an already resolved path, on the snapshot's filesystem."""
        try:
            fd = os.open(real, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise NotFound(f"{self._describe(parts)} vanished from {self.label}") from exc
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if st.st_dev != self.root_dev:
            os.close(fd)
            raise OutsideSnapshot(f"{self._describe(parts)} leads outside {self.label}")
        return fd, st

    def list_dir(self, path: str) -> tuple[str, list[Entry]]:
        """(normalised path, entries sorted by name) of a directory; symlinks are not followed."""
        real, parts = self.resolve(path)
        pfd, st = self._open_path(real, parts)
        try:
            if not stat.S_ISDIR(st.st_mode):
                raise WrongType(f"{self._describe(parts)} in {self.label} is a {_type_of(st.st_mode)}, not a directory")
            dfd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(pfd)
        entries: list[Entry] = []
        try:
            with os.scandir(dfd) as it:
                for item in it:
                    try:
                        est = item.stat(follow_symlinks=False)
                    except OSError:
                        continue  # vanished under us: not worth failing the listing
                    target = None
                    if stat.S_ISLNK(est.st_mode):
                        try:
                            target = os.readlink(item.name, dir_fd=dfd)
                        except OSError:
                            target = None
                    entries.append(
                        Entry(
                            name=item.name,
                            type=_type_of(est.st_mode),
                            size=est.st_size,
                            mode=f"{stat.S_IMODE(est.st_mode):04o}",
                            mtime=est.st_mtime,
                            target=target,
                        )
                    )
        finally:
            os.close(dfd)
        entries.sort(key=lambda e: e.name)
        return self._describe(parts), entries

    def open_file(self, path: str) -> tuple[int, int, str]:
        """(read descriptor, size, base name) of a regular file; the caller closes it."""
        real, parts = self.resolve(path)
        pfd, st = self._open_path(real, parts)
        try:
            if not stat.S_ISREG(st.st_mode):
                raise WrongType(
                    f"{self._describe(parts)} in {self.label} is a {_type_of(st.st_mode)}, not a regular file"
                )
            # Re-open the very inode the O_PATH descriptor holds, not the name.
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(pfd)
        name = parts[-1] if parts else ""
        return fd, st.st_size, name


def iter_fd(fd: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Read a descriptor to its end in chunks, then close it (also when abandoned)."""
    try:
        while True:
            data = os.read(fd, chunk)
            if not data:
                return
            yield data
    finally:
        os.close(fd)
