"""Deterministic NIfTI files: the same volume always gives the same bytes.

A ``.nii.gz`` is a gzip stream with modification time 0 and no file name in
its header, so two exports of one release hash the same; the sidecar JSON
has sorted keys, two-space indentation and a final newline.
"""

from __future__ import annotations

import gzip as gz
import io
import json
import os
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
            # filename="" keeps the name out of the gzip header; mtime=0 fixes the time.
            with gz.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                             compresslevel=compresslevel) as stream:
                stream.write(head)
                stream.write(data)
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
