"""Opening a node's drives: format new ones, check old ones agree, place them in sets.

First start (no drive formatted): a cluster id is made, drives are grouped into sets of
k+m in the order given, and every drive gets its format.json. Later starts read the
format records back. A drive directory that is missing is an offline slot (it may be an
unmounted disk, so nothing is created in its place); an existing empty directory in a
slot whose drive is missing is a replacement and is formatted into that slot; a drive
whose format disagrees with the others stops the node with a clear message.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shardfleet.cluster.drive import Drive, OfflineDrive
from shardfleet.cluster.topology import DriveFormat
from shardfleet.erasure import ErasureParams
from shardfleet.node.storage.fsutil import atomic_write
from shardfleet.node.storage.local_drive import HEAL_MARK, LocalDrive

FORMAT_FILE = "format.json"
#: what a running node may leave in a wiped drive's directory before it notices the wipe
#: (and the heal mark, written first when a replacement is formatted)
LEFTOVERS = frozenset({"data", "tmp", "mrf.msgpack", "mrf.tmp", HEAL_MARK})
T = TypeVar("T")


class FormatError(Exception):
    """The drives on disk do not form a consistent set; the node must not start."""


@dataclass(slots=True)
class OpenedSet:
    index: int
    drives: list[Drive]  # by position; OfflineDrive where a drive is missing
    params: ErasureParams
    cluster_id: str  # what every drive of the set records


def opened_here(drives: Iterable[Drive]) -> list[LocalDrive]:
    """The drives among `drives` that this node opened from its disks: the ones the node
    probes, sweeps, writes the topology to and closes (its own storage, so the node holds
    them by their class; everything else goes through the Drive interface)."""
    return [d for d in drives if isinstance(d, LocalDrive)]


def _read_format(path: Path) -> DriveFormat | None:
    try:
        return DriveFormat.from_json((path / FORMAT_FILE).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError(f"{path / FORMAT_FILE}: unreadable format record: {exc}") from exc


def _is_empty_dir(path: Path) -> bool:
    """Empty, or holding only the heal mark (a replacement's formatting cut short)."""
    return path.is_dir() and all(p.name == HEAL_MARK for p in path.iterdir())


def _format_replacement(path: Path, fmt: DriveFormat) -> None:
    """Formats an empty directory into the slot of a drive that held data: the heal mark
    first, so a drive is never formatted without it (until healed, its "no such key" and
    its listing rows are no evidence: see LocalDrive.healing_since)."""
    atomic_write(path, HEAL_MARK, [b"formatted empty into its slot; healing\n"])
    atomic_write(path, FORMAT_FILE, [fmt.to_json().encode()])


def _may_adopt(path: Path, formatted: list[Path]) -> bool:
    """Whether an empty directory may be formatted as a replacement drive.

    When this node's drives are mount points, an empty directory that is not one is most
    likely a disk that failed to mount: formatting it would put shards on the root file
    system. Single-file-system setups (dev, tests) adopt empty directories as before."""
    if any(os.path.ismount(p) for p in formatted):
        return os.path.ismount(path)
    return True


def _format_fresh(paths: list[Path], params: ErasureParams) -> None:
    if len(paths) % params.n:
        raise FormatError(
            f"{len(paths)} drives cannot form sets of {params.n} ({params}): "
            f"give a multiple of {params.n} drives"
        )
    for path in paths:
        if path.exists() and not _is_empty_dir(path):
            raise FormatError(
                f"{path}: not empty and not a shardfleet drive; refusing to format it"
            )
    cluster_id = uuid.uuid4().hex
    ids = [uuid.uuid4().hex for _ in paths]
    records: list[tuple[Path, DriveFormat]] = []
    for set_no in range(len(paths) // params.n):
        members = ids[set_no * params.n : (set_no + 1) * params.n]
        for pos, drive_id in enumerate(members):
            fmt = DriveFormat(
                cluster_id=cluster_id,
                drive_id=drive_id,
                pool=0,
                set=set_no,
                position=pos,
                ec=str(params),
                stripe_size=params.stripe_size,
                set_drives=members,
            )
            records.append((paths[set_no * params.n + pos], fmt))

    def write(path: Path, fmt: DriveFormat) -> None:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path, FORMAT_FILE, [fmt.to_json().encode()])

    _each_drive(write, records)


def _each_drive(
    fn: Callable[[Path, DriveFormat], T], items: list[tuple[Path, DriveFormat]]
) -> list[T]:
    """fn(path, fmt) for every drive at once, results in order; the first error is raised.

    The work per drive is file system and LMDB calls that wait on the disk (fsyncs on a new
    drive) with the GIL released, so a node's drives open side by side."""
    if len(items) < 2:
        return [fn(path, fmt) for path, fmt in items]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="open-drive") as pool:
        return list(pool.map(fn, *zip(*items, strict=True)))


def open_drives(paths: list[Path], params: ErasureParams, io_pool: Executor) -> list[OpenedSet]:
    """Opens (formatting on first start) the drives; returns the erasure sets."""
    formats = {p: _read_format(p) if p.is_dir() else None for p in paths}
    if not any(formats.values()):
        _format_fresh(paths, params)
        formats = {p: _read_format(p) for p in paths}
    known = [f for f in formats.values() if f is not None]
    cluster_id = known[0].cluster_id
    for path, fmt in formats.items():
        if fmt is not None and fmt.cluster_id != cluster_id:
            raise FormatError(
                f"{path} belongs to cluster {fmt.cluster_id}, the other drives to {cluster_id}"
            )
    on_disk = ErasureParams.parse(known[0].ec, known[0].stripe_size)
    if (on_disk.k, on_disk.m) != (params.k, params.m):
        raise FormatError(
            f"drives were formatted as {on_disk} but the node was started with --ec {params}"
        )
    sets: dict[int, dict[int, tuple[Path, DriveFormat]]] = {}
    templates: dict[int, DriveFormat] = {}
    for path, fmt in formats.items():
        if fmt is None:
            continue
        template = templates.setdefault(fmt.set, fmt)
        if not template.same_set(fmt):
            raise FormatError(
                f"{path}: its format.json disagrees with the other drives of set {fmt.set}"
            )
        slot = sets.setdefault(fmt.set, {})
        if fmt.position in slot:
            raise FormatError(f"{path} and {slot[fmt.position][0]} claim the same slot")
        slot[fmt.position] = (path, fmt)
    _adopt_replacements(formats, sets, templates)

    def open_local(path: Path, fmt: DriveFormat) -> LocalDrive:
        drive = LocalDrive(path, fmt, io_pool)
        drive.reconcile_startup()
        return drive

    present = [sets[i][pos] for i in sorted(sets) for pos in range(on_disk.n) if pos in sets[i]]
    local = dict(zip((path for path, _ in present), _each_drive(open_local, present), strict=True))
    opened: list[OpenedSet] = []
    for set_no in sorted(sets):
        template = templates[set_no]
        drives: list[Drive] = []
        for pos in range(on_disk.n):
            if pos in sets[set_no]:
                drives.append(local[sets[set_no][pos][0]])
            else:
                drives.append(
                    OfflineDrive(
                        template.set_drives[pos], f"set {set_no} slot {pos}", "drive missing"
                    )
                )
        opened.append(OpenedSet(set_no, drives, on_disk, template.cluster_id))
    return opened


def _adopt_replacements(
    formats: dict[Path, DriveFormat | None],
    sets: dict[int, dict[int, tuple[Path, DriveFormat]]],
    templates: dict[int, DriveFormat],
) -> None:
    """Formats empty directories into the slots of missing drives, in the order given."""
    formatted = [p for p, f in formats.items() if f is not None]
    empty = [
        p for p, f in formats.items() if f is None and _is_empty_dir(p) and _may_adopt(p, formatted)
    ]
    for set_no in sorted(sets):
        template = templates[set_no]
        for pos in range(len(template.set_drives)):
            if pos in sets[set_no] or not empty:
                continue
            path = empty.pop(0)
            fmt = DriveFormat(
                cluster_id=template.cluster_id,
                drive_id=template.set_drives[pos],
                pool=template.pool,
                set=set_no,
                position=pos,
                ec=template.ec,
                stripe_size=template.stripe_size,
                set_drives=template.set_drives,
            )
            _format_replacement(path, fmt)
            sets[set_no][pos] = (path, fmt)


def open_assigned(expected: dict[Path, DriveFormat], io_pool: Executor) -> dict[Path, Drive]:
    """Opens this node's drives of a cluster whose layout comes from the cluster file.

    Every drive must carry exactly the format record the layout gives it; an unformatted
    drive (on first start, or an empty replacement) is formatted into its slot, a missing
    directory is an offline slot, and any disagreement stops the node.
    """
    formatted = [p for p in expected if p.is_dir() and _read_format(p) is not None]
    first_start = not formatted
    opened: dict[Path, Drive] = {}
    for path, want in expected.items():
        if first_start:
            path.mkdir(parents=True, exist_ok=True)
        fmt = _read_format(path) if path.is_dir() else None
        if fmt is None and _is_empty_dir(path) and (first_start or _may_adopt(path, formatted)):
            if first_start:
                atomic_write(path, FORMAT_FILE, [want.to_json().encode()])
            else:
                _format_replacement(path, want)
            fmt = want
        if fmt is None:
            opened[path] = OfflineDrive(want.drive_id, str(path), "drive missing or not formatted")
            continue
        if fmt != want:
            raise FormatError(
                f"{path}: its format.json (cluster {fmt.cluster_id}, pool {fmt.pool}, set "
                f"{fmt.set}, position {fmt.position}) disagrees with the cluster file (cluster "
                f"{want.cluster_id}, pool {want.pool}, set {want.set}, position {want.position})"
            )
        drive = LocalDrive(path, fmt, io_pool)
        drive.reconcile_startup()
        opened[path] = drive
    return opened


def replacement_for(
    drive: LocalDrive, others: list[LocalDrive], io_pool: Executor
) -> LocalDrive | None:
    """While the node runs: a new, empty drive in the slot of `drive`, which went offline
    (wiped, or a fresh disk mounted where it was), formatted into that slot with the same
    identity and opened; None while the slot is not an empty directory, or it fails the
    mount-point guard of start-up (an empty directory that is not a mount point, beside
    drives that are, is most likely a disk that failed to mount)."""
    path = drive.root
    try:
        if not path.is_dir() or (path / FORMAT_FILE).exists():
            return None
        # what the node itself may have put there since the wipe (a write in flight making
        # data/ again, the MRF queue's file) is not someone else's disk: cleared first
        left = {p.name for p in path.iterdir()}
        if not left <= LEFTOVERS or not _may_adopt(path, [d.root for d in others]):
            return None
        for name in left - {HEAL_MARK}:
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        _format_replacement(path, drive.format)
        fresh = LocalDrive(path, drive.format, io_pool)
        fresh.reconcile_startup()
    except OSError:
        return None
    drive.close()
    return fresh
