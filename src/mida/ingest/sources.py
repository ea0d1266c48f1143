"""Find ingest inputs in files, folders and zip/tar(.gz) archives.

Archives are read in memory, never extracted, so a member name can never
write outside a folder; members whose names would do so on extraction
(absolute paths, ``..``), links and device entries are refused all the same,
as an archive holding them is unsafe. Expansion is bounded: per member, in
total, and by compression ratio (zip bombs). Sources are opened read-only and
never modified.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mida.config import Settings
from mida.errors import QuarantineReason

ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
_MIN_BOMB_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One input to ingest: a file, or a member of an archive.

    ``ref`` is a local description of where the input came from; it may
    contain identifying folder names, so it is only ever hashed before it is
    stored and shown only to the local operator.
    """

    kind: str  # file | zip | tar
    ref: str
    path: str
    member: str | None = None
    data: bytes | None = None
    size: int = 0


@dataclass(frozen=True)
class Refused:
    """An input refused before parsing (unsafe archive member, bomb, unreadable)."""

    kind: str
    ref: str
    path: str
    reason: QuarantineReason
    message: str
    data: bytes | None = None  # the member's bytes when they were read safely


def _magic(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(264)


def archive_kind(path: str) -> str | None:
    """``zip``, ``tar`` or None, decided by content, not by file name."""
    head = _magic(path)
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[257:262] == b"ustar" or head.startswith(GZIP_MAGIC) or head[:3] == b"BZh":
        try:
            if tarfile.is_tarfile(path):
                return "tar"
        except (OSError, EOFError, tarfile.TarError):
            return None
    return None


def _unsafe_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def iter_files(paths: list[Path]) -> Iterator[str]:
    """Regular files under ``paths`` in a stable order; symlinked folders are not followed."""
    for root in paths:
        if root.is_file():
            yield str(root)
            continue
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                try:
                    if stat.S_ISREG(os.stat(p).st_mode):
                        yield p
                except OSError:
                    continue


def count_inputs(paths: list[Path]) -> int:
    """A quick count of files (archives count as one) for progress bars."""
    return sum(1 for _ in iter_files(paths))


def discover(paths: list[Path], settings: Settings) -> Iterator[Item | Refused]:
    """Every ingest input under ``paths``, archives opened member by member."""
    for p in iter_files(paths):
        try:
            kind = archive_kind(p)
        except OSError as exc:
            yield Refused("file", p, p, QuarantineReason.UNREADABLE,
                          f"cannot read the file ({type(exc).__name__})")
            continue
        if kind == "zip":
            yield from _zip_items(p, settings)
        elif kind == "tar":
            yield from _tar_items(p, settings)
        else:
            try:
                size = os.path.getsize(p)
            except OSError:
                size = 0
            yield Item("file", p, p, size=size)


def _zip_items(path: str, s: Settings) -> Iterator[Item | Refused]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        yield Refused("file", path, path, QuarantineReason.NOT_DICOM,
                      f"a damaged zip archive ({type(exc).__name__})")
        return
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        total = sum(i.file_size for i in infos)
        packed = max(1, sum(i.compress_size for i in infos))
        if len(infos) > s.archive_max_members:
            yield Refused("file", path, path, QuarantineReason.ARCHIVE_LIMIT,
                          f"zip archive has {len(infos)} members, over the limit of "
                          f"{s.archive_max_members} (MIDA_ARCHIVE_MAX_MEMBERS)")
            return
        if total > s.archive_max_total_bytes or (
            total > _MIN_BOMB_BYTES and total / packed > s.archive_max_ratio
        ):
            yield Refused("file", path, path, QuarantineReason.ARCHIVE_LIMIT,
                          f"zip archive would expand to {total} bytes from {packed} "
                          f"(ratio {total / packed:.0f}); limits: "
                          f"{s.archive_max_total_bytes} bytes, ratio {s.archive_max_ratio:.0f}")
            return
        for info in infos:
            ref = f"{path}!{info.filename}"
            if _unsafe_name(info.filename) or stat.S_ISLNK(info.external_attr >> 16):
                yield Refused("zip", ref, path, QuarantineReason.UNSAFE_ARCHIVE,
                              "zip member with an absolute path, '..' or a symlink")
                continue
            ratio = info.file_size / max(1, info.compress_size)
            if info.file_size > s.archive_max_member_bytes or (
                info.file_size > _MIN_BOMB_BYTES and ratio > s.archive_max_ratio
            ):
                yield Refused("zip", ref, path, QuarantineReason.ARCHIVE_LIMIT,
                              f"zip member would expand to {info.file_size} bytes "
                              f"(ratio {ratio:.0f})")
                continue
            yield Item("zip", ref, path, member=info.filename, size=info.file_size)


def read_zip_member(path: str, member: str, limit: int) -> bytes:
    """Read one member, never more than ``limit`` bytes whatever its header claims."""
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"zip member expands beyond {limit} bytes")
    return data


def _tar_items(path: str, s: Settings) -> Iterator[Item | Refused]:
    packed = max(1, os.path.getsize(path))
    total = 0
    count = 0
    try:
        with tarfile.open(path, mode="r:*") as tf:
            for ti in tf:
                if ti.isdir():
                    continue
                ref = f"{path}!{ti.name}"
                count += 1
                if count > s.archive_max_members:
                    yield Refused("tar", ref, path, QuarantineReason.ARCHIVE_LIMIT,
                                  f"tar archive has more than {s.archive_max_members} members")
                    return
                if not ti.isfile() or _unsafe_name(ti.name):
                    yield Refused("tar", ref, path, QuarantineReason.UNSAFE_ARCHIVE,
                                  "tar member that is a link, a device, or has an absolute "
                                  "path or '..'")
                    continue
                total += ti.size
                if ti.size > s.archive_max_member_bytes or total > s.archive_max_total_bytes or (
                    total > _MIN_BOMB_BYTES and total / packed > s.archive_max_ratio
                ):
                    yield Refused("file", path, path, QuarantineReason.ARCHIVE_LIMIT,
                                  f"tar archive expands beyond its limits after {count} members "
                                  f"({total} bytes from {packed}); remaining members skipped")
                    return
                fh = tf.extractfile(ti)
                if fh is None:
                    continue
                data = fh.read(ti.size + 1)
                yield Item("tar", ref, path, member=ti.name, data=data, size=len(data))
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield Refused("file", path, path, QuarantineReason.TRUNCATED,
                      f"a damaged or truncated tar archive ({type(exc).__name__})")


__all__ = ["Item", "Refused", "archive_kind", "count_inputs", "discover", "iter_files",
           "read_zip_member"]
