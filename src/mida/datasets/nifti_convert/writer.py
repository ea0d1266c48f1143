"""Deterministic NIfTI files: the same volume always gives the same bytes.

A ``.nii.gz`` is a gzip stream with modification time 0 and no file name in
its header, so two exports of one release hash the same; the sidecar JSON
has sorted keys, two-space indentation and a final newline.

Compression dominates the time of an export (zlib level 6 runs at about
16 MB/s a core), so :func:`gzip_bytes` deflates fixed-size chunks in threads,
as pigz does: each chunk is primed with the 32 KiB before it and ends on a
byte boundary (a sync flush), and the raw deflate streams are concatenated
into one gzip member. The output depends only on the data, the level and the
chunk size, never on the number of threads; any gzip reader reads it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from mida.datasets.nifti_convert.models import MemoryFile, NiftiVolume


def nifti_bytes(image: nib.Nifti1Image) -> tuple[bytes, memoryview]:
    """The single-file NIfTI-1 header and data of ``image``, as they go on disk.

    Stored values and their scaling are written as the image holds them: a
    volume made by the converter is written without copying or rescaling its
    data. An image whose data was replaced by an array is written as that
    array, unscaled.
    """
    image.update_header()
    hdr = image.header.copy()
    proxy = image.dataobj
    if isinstance(proxy, ArrayProxy):
        hdr.set_data_dtype(proxy.dtype)
        hdr.set_data_shape(proxy.shape)
        hdr.set_slope_inter(proxy.slope, proxy.inter)
        nbytes = int(np.prod(proxy.shape)) * proxy.dtype.itemsize
        if isinstance(proxy.file_like, MemoryFile) and proxy.order == "F":
            # The converter's own images: the bytes are already in file order.
            data = proxy.file_like.buffer[proxy.offset:proxy.offset + nbytes]
        else:
            data = memoryview(proxy.get_unscaled().tobytes(order="F"))
    else:
        arr = np.asanyarray(proxy)
        hdr.set_data_dtype(arr.dtype)
        hdr.set_data_shape(arr.shape)
        hdr.set_slope_inter(1.0, 0.0)
        data = memoryview(arr.tobytes(order="F"))
    hdr["vox_offset"] = 0  # write_to sets the smallest offset that fits any extensions
    out = io.BytesIO()
    hdr.write_to(out)
    return out.getvalue(), data


CHUNK = 1 << 22  # 4 MiB: large enough that priming and flushing cost < 0.1 % in size
_WINDOW = 1 << 15
# gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class _Joined:
    """Byte ranges of several buffers read as one, without copying the large ones."""

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        self.parts = [memoryview(p).cast("B") for p in parts]
        self.starts: list[int] = []
        pos = 0
        for p in self.parts:
            self.starts.append(pos)
            pos += len(p)
        self.size = pos

    def span(self, a: int, b: int) -> bytes | memoryview:
        pieces = []
        for start, p in zip(self.starts, self.parts, strict=True):
            lo, hi = max(a, start), min(b, start + len(p))
            if lo < hi:
                pieces.append(p[lo - start:hi - start])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def crc32(self) -> int:
        crc = 0
        for p in self.parts:
            crc = zlib.crc32(p, crc)
        return crc


def _deflate_chunk(data: _Joined, start: int, end: int, level: int, last: bool) -> bytes:
    if start:
        c = zlib.compressobj(level, zlib.DEFLATED, -15,
                             zdict=bytes(data.span(max(0, start - _WINDOW), start)))
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(data.span(start, end))
    return out + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def gzip_bytes(*parts: bytes | memoryview, level: int = 6, threads: int | None = None,
               chunk: int = CHUNK) -> bytes:
    """One deterministic gzip member of ``parts`` (mtime 0, no name), deflated in threads.

    Examples
    --------
    >>> import gzip
    >>> data = bytes(range(256)) * 40_000
    >>> one = gzip_bytes(data[:1000], data[1000:], threads=1, chunk=1 << 16)
    >>> one == gzip_bytes(data, threads=4, chunk=1 << 16)
    True
    >>> gzip.decompress(one) == data
    True
    """
    data = _Joined(parts)
    n = data.size
    jobs = [(i, min(i + chunk, n)) for i in range(0, n, chunk)] or [(0, 0)]
    last = len(jobs) - 1
    workers = min(len(jobs), threads or os.cpu_count() or 1)
    if workers <= 1:
        blocks = [_deflate_chunk(data, a, b, level, k == last) for k, (a, b) in enumerate(jobs)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # zlib releases the GIL
            blocks = list(pool.map(
                lambda k: _deflate_chunk(data, jobs[k][0], jobs[k][1], level, k == last),
                range(len(jobs))))
    return b"".join([_GZIP_HEADER, *blocks, struct.pack("<II", data.crc32(), n & 0xFFFFFFFF)])


def sidecar_text(volume: NiftiVolume) -> str:
    """The sidecar as written: sorted keys, two-space indent, final newline."""
    return json.dumps(volume.sidecar, indent=2, sort_keys=True, allow_nan=False,
                      ensure_ascii=False) + "\n"


def write_nifti(volume: NiftiVolume, path_stem: Path, *, gzip: bool = True,
                compresslevel: int = 6, sidecar: bool = True) -> list[Path]:
    """Write ``volume`` as ``<path_stem><suffix>.nii[.gz]`` and its ``.json`` sidecar.

    Parameters
    ----------
    volume
        A volume from :func:`volumes_from_datasets` or :func:`series_to_nifti`.
    path_stem
        Folder and base name without extension. The volume's suffix (``""``,
        ``"_e2"``, ``"_ph"``...) is appended, as dcm2niix appends it, so the
        volumes of one series never overwrite each other.
    gzip
        Write ``.nii.gz`` (deterministic: gzip mtime 0, no file name) rather
        than ``.nii``.
    compresslevel
        zlib level 1 (fastest) to 9 (smallest); 6 is gzip's and pigz's default.
    sidecar
        Also write the JSON sidecar.

    Returns
    -------
    list[Path]
        The NIfTI file, then the sidecar when written.

    Examples
    --------
    >>> from mida.datasets.convert import volumes_from_datasets  # doctest: +SKIP
    >>> [vol] = volumes_from_datasets(datasets)                    # doctest: +SKIP
    >>> write_nifti(vol, Path("out/sub-01_T1w"))                  # doctest: +SKIP
    [PosixPath('out/sub-01_T1w.nii.gz'), PosixPath('out/sub-01_T1w.json')]
    """
    stem = Path(path_stem)
    base = stem.with_name(stem.name + volume.suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    target = base.with_name(base.name + (".nii.gz" if gzip else ".nii"))
    head, data = nifti_bytes(volume.image)
    partial = target.with_name(target.name + ".part")
    with open(partial, "wb") as raw:
        if gzip:
            raw.write(gzip_bytes(head, data, level=compresslevel))
        else:
            raw.write(head)
            raw.write(data)
    os.replace(partial, target)
    paths = [target]
    if sidecar:
        json_path = base.with_name(base.name + ".json")
        json_path.write_text(sidecar_text(volume), encoding="utf-8")
        paths.append(json_path)
    return paths
