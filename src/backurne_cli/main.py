# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``backurne``: inspect backups, reach their files, restore them (docs/cli.md).

Exit codes: 0 success, 1 error (the message on stderr names the image/snapshot/key), 2 bad
command line.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from backurne_browse.catalog import (
    CatalogError,
    DiskEntry,
    find_disk,
    list_disks,
    resolve_disk,
    resolve_snapshot,
)
from backurne_browse.mapping import (
    AlreadyMapped,
    Mapper,
    Mapping,
    MappingError,
)
from backurne_cli import __version__
from backurne_cli.config import Config, ConfigError, load_config
from backurne_cli.migrate import MigrationError, format_notes, migrate, write_inventory
from backurne_core.ceph.holds import pin, read_holds, remove_hold
from backurne_core.ceph.rbd import ImageSpec, RbdError, RbdRunner
from backurne_core.policy.holds import HoldError
from backurne_core.policy.naming import NamingError
from backurne_core.report.units import human_bytes as human_size

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error to report on stderr with exit status 1."""


# -- output -----------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; cells rendered with str()."""
    lines = [[str(cell) for cell in header], *[["" if cell is None else str(cell) for cell in row] for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


class Output:
    def __init__(self, as_json: bool, stream: TextIO) -> None:
        self.as_json = as_json
        self.stream = stream

    def emit(self, document: Any, human: Callable[[], str]) -> None:
        if self.as_json:
            json.dump(document, self.stream, indent=2, sort_keys=False, default=str)
            self.stream.write("\n")
        else:
            text = human()
            if text:
                self.stream.write(text + "\n")


# -- helpers ----------------------------------------------------------------------------------


def _where(config: Config) -> str:
    backup = config.backup
    return f"{backup.pool}/{backup.namespace}" if backup.namespace else backup.pool


def _mapper(config: Config, timeout: float) -> Mapper:
    return config.mapper(timeout)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise CliError(f"{what} needs root (it clones, attaches loop devices and mounts)")


def _resolve(config: Config, image_ref: str, snap_ref: str, timeout: float) -> tuple[DiskEntry, str]:
    disk = find_disk(
        config.backup_runner(timeout), config.backup.pool, config.backup.namespace, config.snap_prefix, image_ref
    )
    return disk, resolve_snapshot(disk.snapshots, snap_ref, disk.image).name


def _mapping_dict(mapping: Mapping) -> dict[str, Any]:
    return {
        "id": mapping.id,
        "image": mapping.image,
        "snapshot": mapping.snapshot,
        "pool": mapping.pool,
        "namespace": mapping.namespace,
        "clone": mapping.clone,
        "method": mapping.method,
        "status": mapping.status,
        "created": mapping.created,
        "devices": list(dict.fromkeys(d for d in [mapping.base_device, *mapping.loop_devices] if d)),
        "filesystems": [
            {"name": fs.name, "device": fs.device, "fstype": fs.fstype, "mountpoint": fs.mountpoint, "error": fs.error}
            for fs in mapping.filesystems
        ],
    }


def _mapping_text(mapping: Mapping) -> str:
    lines = [f"{mapping.image} @ {mapping.snapshot}  ({mapping.method}, clone {mapping.clone})"]
    for fs in mapping.filesystems:
        if fs.mountpoint and not fs.error:
            lines.append(f"  {fs.name}: {fs.fstype} mounted read-only on {fs.mountpoint}")
        else:
            lines.append(f"  {fs.name}: {fs.device}: not mounted: {fs.error}")
    return "\n".join(lines)


def _match_mapped(mappings: Sequence[Mapping], image_ref: str, snap_ref: str) -> list[Mapping]:
    """Mappings that IMAGE SNAP designate, read from the records alone (no Ceph listing):
    unmap must work even once retention has moved the snapshot to the trash."""

    def image_matches(m: Mapping) -> bool:
        if m.image == image_ref:
            return True
        fields = m.image.split(";")
        return (";" not in image_ref and image_ref in fields) or image_ref == ";".join(fields[:2])

    def snap_matches(m: Mapping) -> bool:
        if m.snapshot == snap_ref or snap_ref in ("latest", "newest"):
            return True
        created = m.snapshot.split(";")[-1]
        return bool(snap_ref) and created.startswith(snap_ref)

    found = [m for m in mappings if image_matches(m) and snap_matches(m)]
    if snap_ref in ("latest", "newest") and found:
        newest = max(found, key=lambda m: m.snapshot.split(";")[-1])
        found = [m for m in found if m.image == newest.image and m.snapshot == newest.snapshot]
    return found


# -- subcommands ------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace, config: Config, out: Output) -> int:
    runner = config.backup_runner(args.timeout)
    if args.image is None:
        disks = list_disks(runner, config.backup.pool, config.backup.namespace, config.snap_prefix)
        out.emit(
            [disk.to_dict() for disk in disks],
            lambda: (
                table(
                    ("ident", "disk", "comment", "snapshots", "newest backup", "size"),
                    [
                        (
                            d.ident,
                            d.disk,
                            d.comment,
                            len(d.snapshots),
                            d.newest.created.isoformat(sep=" ", timespec="seconds") if d.newest else "-",
                            human_size(d.size),
                        )
                        for d in disks
                    ],
                )
                if disks
                else f"no backup image in {_where(config)}"
            ),
        )
        return EXIT_OK
    disk = find_disk(runner, config.backup.pool, config.backup.namespace, config.snap_prefix, args.image)

    def human() -> str:
        head = f"{disk.image}  (ident {disk.ident}, disk {disk.disk}, comment {disk.comment}"
        head += f", size {human_size(disk.size)})"
        if not disk.snapshots:
            return head + "\nno backurne snapshot"
        rows = [(s.created.isoformat(sep=" ", timespec="seconds"), s.profile, s.count, s.name) for s in disk.snapshots]
        return head + "\n" + table(("date (UTC)", "profile", "count", "snapshot"), rows)

    out.emit(disk.to_dict(with_snapshots=True), human)
    return EXIT_OK


def cmd_map(args: argparse.Namespace, config: Config, out: Output) -> int:
    _need_root("map")
    disk, snapshot = _resolve(config, args.image, args.snapshot, args.timeout)
    mapper = _mapper(config, args.timeout)
    try:
        mapping = mapper.map(disk.image, snapshot)
    except AlreadyMapped as exc:
        mapping = exc.mapping
        if mapping.status != "mapped":
            # Left half-made by an interrupted map (a running one holds the lock until done).
            raise CliError(
                f"{exc}, but not completely (status {mapping.status!r}): if no other backurne is "
                f"mapping it, run: backurne unmap '{mapping.image}' '{mapping.snapshot}'"
            ) from None
        print(f"backurne: {exc}", file=sys.stderr)
    out.emit(_mapping_dict(mapping), lambda: _mapping_text(mapping))
    if not mapping.mounted:
        print(f"backurne: warning: no filesystem of {mapping.label} could be mounted", file=sys.stderr)
    return EXIT_OK


def cmd_unmap(args: argparse.Namespace, config: Config, out: Output) -> int:
    _need_root("unmap")
    mapper = _mapper(config, args.timeout)
    mine = [
        m
        for m in mapper.list_mapped()
        if m.pool == config.backup.pool and (m.namespace or None) == config.backup.namespace
    ]
    if args.all:
        targets = mine
    else:
        if args.image is None or args.snapshot is None:
            raise CliError("unmap needs IMAGE and SNAPSHOT (or --all)")
        targets = _match_mapped(mine, args.image, args.snapshot)
        if len(targets) > 1:
            names = ", ".join(f"{m.image}@{m.snapshot}" for m in targets)
            raise CliError(f"{args.image} {args.snapshot} matches several mappings ({names}); be more precise")
    undone = []
    if not targets and not args.all:
        # Not recorded: still clean up a clone a crash may have left (exact names only).
        mapper.unmap(args.image, args.snapshot)
    for mapping in targets:
        mapper.unmap(mapping.image, mapping.snapshot)
        undone.append(mapping)
    out.emit(
        {"unmapped": [_mapping_dict(m) for m in undone]},
        lambda: "\n".join(f"unmapped {m.image} @ {m.snapshot}" for m in undone) or "nothing was mapped",
    )
    return EXIT_OK


def cmd_list_mapped(args: argparse.Namespace, config: Config, out: Output) -> int:
    mappings = _mapper(config, args.timeout).list_mapped()

    def human() -> str:
        if not mappings:
            return "nothing is mapped"
        rows = []
        for m in mappings:
            mounts = ", ".join(f"{fs.name}={fs.mountpoint}" for fs in m.mounted) or "(none mounted)"
            rows.append((m.image, m.snapshot, m.method, m.status, mounts))
        return table(("image", "snapshot", "method", "status", "mounted"), rows)

    out.emit([_mapping_dict(m) for m in mappings], human)
    return EXIT_OK


def cmd_extract(args: argparse.Namespace, config: Config, out: Output) -> int:
    _need_root("extract")
    disk, snapshot = _resolve(config, args.image, args.snapshot, args.timeout)
    copied = _mapper(config, args.timeout).extract(disk.image, snapshot, args.paths, args.to)

    def human() -> str:
        lines = [f"{c['path']} -> {c['to']} ({c['type']}, {human_size(c['bytes'])})" for c in copied]
        for c in copied:
            lines += [f"  skipped (not a file, directory or symlink): {s}" for s in c["skipped"]]
        return "\n".join(lines)

    out.emit({"image": disk.image, "snapshot": snapshot, "copied": copied}, human)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, config: Config, out: Output) -> int:
    from backurne_core.stream.restore import (
        RestoreError,
        RestoreRequest,
        plan_restore,
        restore_snapshot,
    )
    from backurne_core.stream.transfer import Compression, StreamOptions

    cluster = config.live_cluster(args.cluster)
    backup = config.backup_runner(args.timeout)
    disk = find_disk(backup, config.backup.pool, config.backup.namespace, config.snap_prefix, args.image)
    # "before:ISO" goes to the restore core as it is; anything else is resolved here like
    # everywhere in the CLI (exact name, latest, or an ISO time prefix).
    if args.snapshot.strip().startswith("before:"):
        snapshot = args.snapshot
    else:
        snapshot = resolve_snapshot(disk.snapshots, args.snapshot, disk.image).name
    live = cluster.runner(args.timeout)
    request = RestoreRequest(
        config.backup.pool,
        config.backup.namespace,
        disk.image,
        snapshot,
        target_pool=args.pool or cluster.pool,
        target_namespace=args.namespace if args.namespace is not None else cluster.namespace,
        target_image=args.name,
        force=args.force,
    )
    if args.dry_run:
        try:
            plan = plan_restore(backup, live, request, snap_prefix=config.snap_prefix)
        except RestoreError as exc:
            raise CliError(str(exc)) from None
        document = plan.to_dict()

        def plan_text() -> str:
            line = f"would {plan.action} {plan.target} from {plan.source} ({human_size(plan.size_bytes)})"
            return line + (f"; the current image would be kept as {plan.kept_as}" if plan.kept_as else "")

        out.emit(document, plan_text)
        return EXIT_OK
    compression = Compression(enabled=not args.no_compression, level=args.compression_level)
    progress = None
    if not args.json and sys.stderr.isatty():
        # Called from a relay thread with the bytes read so far; a terminal gets one live line.
        def progress(done: int) -> None:
            print(f"\rrestoring {disk.disk}: {human_size(done)} read", end="", file=sys.stderr, flush=True)

    result = restore_snapshot(
        backup,
        live,
        request,
        StreamOptions(compression, timeout=args.restore_timeout),
        snap_prefix=config.snap_prefix,
        verify=not args.no_verify,
        progress=progress,
    )
    if progress is not None:
        print(file=sys.stderr)
    document = result.to_dict()

    def result_text() -> str:
        if not result.ok:
            return ""
        line = f"restored {result.source} as {result.target}"
        line += f" ({human_size(result.size_bytes)}, {result.duration:.1f} s)"
        if result.kept_as:
            line += f"; the previous image is kept as {result.kept_as}"
        if result.checksum_target:
            line += f"; checksum {result.checksum_target} matches"
        return line

    out.emit(document, result_text)
    if not result.ok:
        raise CliError(f"restore of {disk.image}@{snapshot} failed at {result.failed_stage}: {result.error}")
    return EXIT_OK


def _hold_target(config: Config, args: argparse.Namespace) -> tuple[RbdRunner, ImageSpec, str]:
    disk, snapshot = _resolve(config, args.image, args.snapshot, args.timeout)
    return (
        config.backup_runner(args.timeout),
        ImageSpec(config.backup.pool, config.backup.namespace, disk.image),
        snapshot,
    )


def _hold_line(image: str, hold: dict[str, Any]) -> str:
    until = hold["until"] or "released by hand"
    state = "" if hold.get("active", True) else "  (expired: counts as released)"
    return f"{image} @ {hold['snapshot']}: {hold['reason']}  until {until}  by {hold['by']} at {hold['at']}{state}"


def cmd_hold(args: argparse.Namespace, config: Config, out: Output) -> int:
    runner, spec, snapshot = _hold_target(config, args)
    by = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
    now = datetime.now(UTC).replace(tzinfo=None)
    hold = pin(runner, spec, snapshot, args.reason, args.until, by, now).to_dict(now)
    out.emit({"image": spec.image, **hold}, lambda: "held " + _hold_line(spec.image, hold))
    return EXIT_OK


def cmd_release(args: argparse.Namespace, config: Config, out: Output) -> int:
    runner, spec, snapshot = _hold_target(config, args)
    released = remove_hold(runner, spec, snapshot)
    if released is None:
        raise CliError(f"{spec.image} @ {snapshot} has no hold")
    hold = released.to_dict()
    out.emit({"image": spec.image, **hold, "released": True}, lambda: "released " + _hold_line(spec.image, hold))
    return EXIT_OK


def cmd_holds(args: argparse.Namespace, config: Config, out: Output) -> int:
    runner = config.backup_runner(args.timeout)
    disks = list_disks(runner, config.backup.pool, config.backup.namespace, config.snap_prefix)
    if args.image is not None:
        disks = [resolve_disk(disks, args.image)]
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for disk in disks:
        spec = ImageSpec(config.backup.pool, config.backup.namespace, disk.image)
        rows += [{"image": disk.image, **hold.to_dict(now)} for hold in read_holds(runner, spec).values()]
    out.emit(rows, lambda: "\n".join(_hold_line(row["image"], row) for row in rows) or "no hold")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, config: Config, out: Output) -> int:
    from backurne_core.stream.progress import format_status, read_status

    rows = read_status(config.state_dir)
    out.emit(rows, lambda: format_status(rows))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, config: Config, out: Output) -> int:
    from backurne_core.ceph.usage import collect_stats, format_stats

    try:
        usage = collect_stats(config.backup_runner(args.timeout), config.backup.pool, config.backup.namespace)
    except ValueError as exc:
        raise CliError(f"stats of {_where(config)}: {exc}") from None
    out.emit(usage.to_dict(), lambda: format_stats(usage))
    return EXIT_OK


def cmd_migrate_config(args: argparse.Namespace, config: Config | None, out: Output) -> int:
    try:
        with open(args.source, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise CliError(f"cannot read {args.source}: {exc.strerror}") from None
    migration = migrate(text, args.source)
    written = [] if args.dry_run else write_inventory(migration, args.out, args.source, args.force)
    notes = [vars(note) for note in migration.notes]
    out.emit(
        {"written": written, "settings": notes, "not_carried": [n for n in notes if n["outcome"] == "not carried"]},
        lambda: "\n".join([*(f"wrote {path}" for path in written), format_notes(migration.notes)]),
    )
    return EXIT_OK


def cmd_version(args: argparse.Namespace, config: Config | None, out: Output) -> int:
    out.emit({"version": __version__}, lambda: f"backurne {__version__}")
    return EXIT_OK


# -- argument parsing -------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of a table")
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="configuration file (default: $BACKURNE_CONFIG, else /etc/backurne/backurne.yml)",
    )
    common.add_argument(
        "--timeout",
        type=_positive,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="limit for each Ceph/system command (default 120)",
    )
    parser = argparse.ArgumentParser(
        prog="backurne",
        description="Inspect backurne backups, reach their files, restore them.",
        epilog="Exit status: 0 success, 1 error, 2 bad command line. See docs/cli.md.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ls", parents=[common], help="list backed-up disks, or the snapshots of one")
    p.add_argument(
        "image", nargs="?", metavar="IMAGE", help="IDENT;DISK;COMMENT, IDENT;DISK, or a unique DISK/COMMENT/IDENT"
    )
    p.set_defaults(func=cmd_ls)

    snap_help = "snapshot name, 'latest', or its time (ISO, a unique prefix is enough)"
    p = sub.add_parser("map", parents=[common], help="mount a backup snapshot's filesystems read-only")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=snap_help)
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("unmap", parents=[common], help="undo map (mounts, devices, clone); idempotent")
    p.add_argument("image", nargs="?", metavar="IMAGE")
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT")
    p.add_argument("--all", action="store_true", help="unmap every mapping of the backup pool")
    p.set_defaults(func=cmd_unmap)

    p = sub.add_parser("list-mapped", parents=[common], help="mapped snapshots on this host")
    p.set_defaults(func=cmd_list_mapped)

    p = sub.add_parser("extract", parents=[common], help="copy files or directories out of a backup snapshot")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=snap_help)
    p.add_argument("paths", nargs="+", metavar="PATH", help="relative to the filesystem (p1/..., p2/... with several)")
    p.add_argument(
        "--to", required=True, metavar="DIR", help="existing directory to copy into (nothing is overwritten)"
    )
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("restore", parents=[common], help="restore a backup snapshot as a new image on a live cluster")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=snap_help + ", or before:ISO")
    p.add_argument("--cluster", required=True, help="live cluster (a key of live_clusters in the configuration)")
    p.add_argument("--pool", help="target pool (default: the live cluster's pool)")
    p.add_argument("--namespace", help="target namespace (default: the live cluster's)")
    p.add_argument("--name", help="target image name (default: DISK-restore-TIME)")
    p.add_argument("--force", action="store_true", help="replace an existing target, keeping it renamed")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--no-verify", action="store_true", help="skip the checksum comparison after the restore")
    p.add_argument("--no-compression", action="store_true", help="send uncompressed (zstd otherwise)")
    p.add_argument("--compression-level", type=int, default=1, choices=range(1, 20), metavar="1-19")
    p.add_argument(
        "--restore-timeout", type=_positive, metavar="SECONDS", help="limit for the whole stream (default: none)"
    )
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("hold", parents=[common], help="pin a backup snapshot: backup-side retention keeps it")
    p.add_argument("image", help="backup image (as for ls)")
    p.add_argument("snapshot", help="snapshot name, 'latest' or an ISO time")
    p.add_argument("--reason", required=True, help="why it is kept (shown everywhere the hold is)")
    p.add_argument("--until", help="ISO date or time (UTC) the hold ends; default: until released")
    p.add_argument("--by", help="who asks (default: $SUDO_USER, else the user running this)")
    p.set_defaults(func=cmd_hold)

    p = sub.add_parser("release", parents=[common], help="release a snapshot's hold")
    p.add_argument("image", help="backup image (as for ls)")
    p.add_argument("snapshot", help="snapshot name, 'latest' or an ISO time")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("holds", parents=[common], help="list the holds (of one backup image)")
    p.add_argument("image", nargs="?", help="backup image (as for ls); default: all")
    p.set_defaults(func=cmd_holds)

    p = sub.add_parser("status", parents=[common], help="transfers running on this backup node")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stats", parents=[common], help="space used by the backups (rbd du)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "migrate-config",
        parents=[common],
        help="turn a backurne 2.x configuration into an inventory (parsed, never executed)",
    )
    p.add_argument("source", metavar="V2_CONFIG", help="2.x's configuration file, e.g. /etc/backurne/backurne.conf")
    p.add_argument("--out", required=True, metavar="DIR", help="inventory directory to write (hosts.yml, group_vars)")
    p.add_argument("--force", action="store_true", help="replace files already there")
    p.add_argument("--dry-run", action="store_true", help="print what would be carried, write nothing")
    p.set_defaults(func=cmd_migrate_config)

    p = sub.add_parser("version", parents=[common], help="print the version")
    p.set_defaults(func=cmd_version)
    return parser


def fail(message: str) -> NoReturn:
    print(f"backurne: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a bad command line
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", 120.0)
    out = Output(args.json, sys.stdout)
    try:
        if args.func in (cmd_version, cmd_migrate_config):  # no backurne configuration needed
            return args.func(args, None, out)
        config = load_config(getattr(args, "config", None))
        return args.func(args, config, out)
    except (CliError, ConfigError, CatalogError, MappingError, RbdError, NamingError, MigrationError, HoldError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        print("backurne: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
