"""The shared reader: one series of a release, decoded once, for every format.

:class:`SeriesItem` holds one manifest series entry and the pinned
annotations on it, and computes what the formats ask for on first use and
keeps it until the next series: the stored blobs (checked against the
manifest's sha256), the decoded datasets, the NIfTI volumes
(:mod:`mida.datasets.convert`, dcm2niix's geometry), their gzipped bytes,
label maps on each volume's grid, 8-bit PNG renderings of frames. The DICOM
copy reads only the blobs; a NIfTI plus nnU-Net export converts and gzips each
volume once.

Label maps are placed through patient space, never by array shape: a mask is
``[slice, row, column]`` on the grid its pinned revision recorded
(:class:`~mida.annotations.geometry.SeriesGeometry`), and each voxel of the
volume takes the mask voxel whose centre it shares. When the two grids are
one lattice (the usual case: dcm2niix only reorders and flips axes) this is an
exact permutation; otherwise nearest-neighbour sampling, and a note says so.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from mida.annotations.geometry import SeriesGeometry
from mida.annotations.store import decode_mask
from mida.datasets.export.base import STATUS_RANK, LabelSet
from mida.datasets.nifti_convert.writer import gzip_bytes
from mida.errors import DatasetError, IntegrityError
from mida.storage.blobstore import BlobStore

#: Modalities whose images are projections or photographs: one PNG per frame in COCO.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "XA", "RF", "US", "ES",
                                   "XC", "OP", "GM", "SC", "OT", "SM", "DOC"})
#: Offsets and axis cosines within this of a whole voxel / of 1 count as one lattice.
LATTICE_TOL = 1e-3


def nifti_gz(image: Any) -> bytes:
    """A NIfTI image as ``.nii.gz`` bytes, written as the converter writes its files."""
    from mida.datasets.convert import nifti_bytes

    head, data = nifti_bytes(image)
    return gzip_bytes(head, data)  # the converter's writer: the same bytes as write_nifti


def ranked(annotations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Annotations best first: status (adjudicated, reviewed, submitted, draft), then a
    person before a model, then reader name and annotation UID (for a stable order)."""
    return sorted(annotations, key=lambda a: (STATUS_RANK.get(a.get("status") or "", 9),
                                              a.get("reader_kind") != "person",
                                              a.get("reader") or "", a["uid"]))


def mask_on_grid(mask: np.ndarray, geometry: SeriesGeometry, affine: np.ndarray,
                 shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """A ``[slice, row, column]`` mask laid on a NIfTI grid ``shape`` with RAS ``affine``.

    Returns the boolean array indexed like the NIfTI data (``[i, j, k]``) and
    whether the grids were one lattice (an exact copy) rather than resampled.
    """
    crs = np.transpose(np.asarray(mask, dtype=bool), (2, 1, 0))  # [column, row, slice]
    m = np.linalg.inv(geometry.affine_ras()) @ np.asarray(affine, dtype=float)
    rot, off = m[:3, :3], m[:3, 3]
    perm = [int(np.argmax(np.abs(rot[:, a]))) for a in range(3)]  # mask axis of image axis a
    signs = [int(np.sign(rot[perm[a], a])) for a in range(3)]
    ideal = np.zeros((3, 3))
    for a in range(3):
        ideal[perm[a], a] = signs[a]
    if sorted(perm) == [0, 1, 2] and np.allclose(rot, ideal, atol=LATTICE_TOL) \
            and np.allclose(off, np.round(off), atol=LATTICE_TOL):
        idx = []
        valid = []
        for a in range(3):
            i = signs[a] * np.arange(shape[a]) + int(np.rint(off[perm[a]]))
            ok = (i >= 0) & (i < crs.shape[perm[a]])
            idx.append(np.clip(i, 0, crs.shape[perm[a]] - 1))
            valid.append(ok)
        moved = np.transpose(crs, perm)  # axis a of ``moved`` is mask axis perm[a]
        out = moved[np.ix_(*idx)] & valid[0][:, None, None] & valid[1][None, :, None] \
            & valid[2][None, None, :]
        return np.ascontiguousarray(out), True
    out = np.zeros(shape, dtype=bool)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k in range(shape[2]):
        pts = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        c, r, s = np.rint(m @ pts)[:3].astype(int)
        ok = (c >= 0) & (c < crs.shape[0]) & (r >= 0) & (r < crs.shape[1]) & (s >= 0) \
            & (s < crs.shape[2])
        plane = np.zeros(ii.size, dtype=bool)
        plane[ok] = crs[c[ok], r[ok], s[ok]]
        out[:, :, k] = plane.reshape(ii.shape)
    return out, False


@dataclass
class LabelMap:
    """A label map on one volume's grid: values, the annotations used, notes."""

    array: np.ndarray
    annotations: list[dict[str, Any]]
    notes: list[str]

    @property
    def empty(self) -> bool:
        return not bool(self.array.any())


class SeriesItem:
    """One series of the release and the pinned annotations on it (module docstring)."""

    def __init__(self, meta: dict[str, Any], annotations: list[dict[str, Any]],
                 study_annotations: list[dict[str, Any]], store: BlobStore,
                 labels: LabelSet) -> None:
        self.meta = meta
        self.annotations = annotations
        self.study_annotations = study_annotations
        self.store = store
        self.labels = labels
        self._masks: dict[str, np.ndarray] = {}
        self._maps: dict[tuple[int, tuple[str, ...]], LabelMap] = {}
        self._png: dict[tuple[str, int], bytes | None] = {}
        self._gz: dict[int, bytes] = {}
        self.bytes_read = 0
        self.conversion_error: str | None = None

    # ------------------------------------------------------------ identity
    @property
    def uid(self) -> str:
        return str(self.meta["SeriesInstanceUID"])

    @property
    def split(self) -> str:
        return str(self.meta["split"])

    @property
    def modality(self) -> str:
        return str(self.meta.get("Modality") or "OT")

    # ------------------------------------------------------------ files
    @cached_property
    def blobs(self) -> list[tuple[dict[str, Any], bytes]]:
        """Each instance's manifest entry and stored bytes, checked against its sha256."""
        out = []
        for inst in self.meta["instances"]:
            try:
                data = self.store.get(inst["sha256"], verify=True)
            except IntegrityError:
                raise IntegrityError(f"instance {inst['SOPInstanceUID']} of series {self.uid}: "
                                     "the stored file no longer matches the release manifest's "
                                     "sha256; run `mida fsck` and restore it") from None
            self.bytes_read += len(data)
            out.append((inst, data))
        return out

    @cached_property
    def datasets(self) -> dict[str, Dataset]:
        """SOP Instance UID -> the decoded dataset (pixel data read on demand)."""
        return {inst["SOPInstanceUID"]: pydicom.dcmread(io.BytesIO(data))
                for inst, data in self.blobs}

    @property
    def frames(self) -> list[tuple[str, int]]:
        """(SOP Instance UID, frame from 1) of every image frame, in manifest order."""
        out = []
        for inst in self.meta["instances"]:
            ds = self.datasets[inst["SOPInstanceUID"]]
            if "PixelData" not in ds and "FloatPixelData" not in ds:
                continue
            out += [(inst["SOPInstanceUID"], f) for f in range(1, int(ds.get("NumberOfFrames")
                                                                      or 1) + 1)]
        return out

    @cached_property
    def is_2d(self) -> bool:
        """Projection or photographic images (or one lone frame): not a volume."""
        if self.modality in PROJECTION_MODALITIES:
            return True
        if len(self.frames) <= 1:
            return True
        return all("ImageOrientationPatient" not in ds and
                   "SharedFunctionalGroupsSequence" not in ds for ds in self.datasets.values())

    # ------------------------------------------------------------ volumes
    @cached_property
    def volumes(self) -> list[Any]:
        """The series as NIfTI volumes, dcm2niix's way (:mod:`mida.datasets.convert`).

        Empty when the series cannot be converted; ``conversion_error`` then says why.
        """
        from mida.datasets import convert

        order = [self.datasets[i["SOPInstanceUID"]] for i in self.meta["instances"]]
        try:
            return list(convert.volumes_from_datasets(order))
        except Exception as exc:  # irregular slices, a pixel decoder this install lacks...
            why = str(exc).splitlines()[0][:200] if isinstance(exc, DatasetError) \
                else type(exc).__name__
            self.conversion_error = (f"series {self.uid} cannot be converted to NIfTI ({why}); "
                                     "it is left out of the nifti, nnunet and monai exports")
            return []

    def volume_gz(self, k: int) -> bytes:
        """Volume ``k`` as ``.nii.gz`` bytes (deterministic; compressed once per series)."""
        if k not in self._gz:
            self._gz[k] = nifti_gz(self.volumes[k].image)
        return self._gz[k]

    def volume_shape(self, k: int) -> tuple[int, int, int]:
        dims = [int(x) for x in self.volumes[k].image.shape[:3]] + [1, 1]
        return dims[0], dims[1], dims[2]

    # ------------------------------------------------------------ masks
    def masks(self) -> list[dict[str, Any]]:
        """The mask annotations on this series whose label is in the export's label set."""
        return [a for a in self.annotations if a["kind"] == "mask" and a.get("mask_sha256")
                and a.get("geometry") and self.labels.mask_value(a["label"]) is not None]

    def best_masks(self) -> list[dict[str, Any]]:
        """One mask annotation per label: the first by :func:`ranked`."""
        out: dict[str, dict[str, Any]] = {}
        for a in ranked(self.masks()):
            out.setdefault(a["label"], a)
        return sorted(out.values(), key=lambda a: self.labels.mask_value(a["label"]) or 0)

    def mask(self, ann: dict[str, Any]) -> np.ndarray:
        """The annotation's pinned mask, ``[slice, row, column]`` bool."""
        if ann["uid"] not in self._masks:
            data = self.store.get(ann["mask_sha256"], verify=True)
            self._masks[ann["uid"]] = decode_mask(data, tuple(ann["geometry"]["shape"]))
        return self._masks[ann["uid"]]

    def label_map(self, k: int, anns: list[dict[str, Any]]) -> LabelMap:
        """Masks ``anns`` as one label map on volume ``k``'s grid (values of the label set).

        Where two labels overlap, the label listed later keeps the voxel and a note
        counts the voxels lost.
        """
        key = (k, tuple(a["uid"] for a in anns))
        if key in self._maps:
            return self._maps[key]
        img = self.volumes[k].image
        shape = self.volume_shape(k)
        n = len(self.labels.masks)
        arr = np.zeros(shape, dtype=np.uint8 if n < 256 else np.uint16)
        used, notes = [], []
        for a in sorted(anns, key=lambda x: self.labels.mask_value(x["label"]) or 0):
            v = self.labels.mask_value(a["label"])
            assert v is not None
            geo = SeriesGeometry.from_json(a["geometry"])
            on, exact = mask_on_grid(self.mask(a), geo, img.affine, shape)
            if not on.any():
                continue
            if not exact:
                notes.append(f"series {self.uid}: annotation {a['uid']} was resampled "
                             "(nearest neighbour) onto the NIfTI grid")
            lost = int((on & (arr != 0) & (arr != v)).sum())
            if lost:
                notes.append(f"series {self.uid}: {lost} voxel(s) of other labels overlap "
                             f"{a['label']!r}; the label map keeps {a['label']!r} there")
            arr[on] = v
            used.append(a)
        out = LabelMap(arr, used, notes)
        self._maps[key] = out
        return out

    def label_map_gz(self, k: int, lm: LabelMap) -> bytes:
        """A label map as ``.nii.gz`` bytes on exactly volume ``k``'s affine and shape."""
        import nibabel as nib

        src = self.volumes[k].image
        img = nib.Nifti1Image(lm.array, src.affine)
        sform, scode = src.get_sform(coded=True)
        qform, qcode = src.get_qform(coded=True)
        img.set_sform(sform if sform is not None else src.affine, code=int(scode or 0))
        img.set_qform(qform if qform is not None else src.affine, code=int(qcode or 0))
        img.header.set_xyzt_units(*src.header.get_xyzt_units())
        img.header["descrip"] = b"mida label map"
        return nifti_gz(img)

    # ------------------------------------------------------------ images
    def png(self, sop: str, frame: int) -> bytes | None:
        """An 8-bit PNG of one frame (COCO's rendering: VOI window, else min..max).

        None when this install cannot decode the pixel data.
        """
        key = (sop, frame)
        if key not in self._png:
            from PIL import Image

            from mida.annotations.formats.coco import render_frame

            try:
                pixels = render_frame(self.datasets[sop], frame)
            except Exception:  # a transfer syntax this install cannot decode
                self._png[key] = None
            else:
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="PNG")
                self._png[key] = buf.getvalue()
        return self._png[key]

    def frame_size(self, sop: str) -> tuple[int, int]:
        """(rows, columns) of an instance."""
        ds = self.datasets[sop]
        return int(ds.Rows), int(ds.Columns)

    def slice_masks(self, ann: dict[str, Any]) -> dict[tuple[str, int], np.ndarray]:
        """A mask annotation per (SOP Instance UID, frame) it touches: 2D ``[row, column]``."""
        geo = SeriesGeometry.from_json(ann["geometry"])
        m = self.mask(ann)
        return {(geo.slices[k].sop_instance_uid, geo.slices[k].frame): m[k]
                for k in np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))}

    def classifications(self) -> dict[str, str]:
        """Classification label -> value on this series or its study (the first by rank)."""
        out: dict[str, str] = {}
        for a in ranked([*self.annotations, *self.study_annotations]):
            if a["kind"] == "classification" and isinstance(a.get("data"), dict) \
                    and "value" in a["data"]:
                out.setdefault(a["label"], str(a["data"]["value"]))
        return out


__all__ = ["PROJECTION_MODALITIES", "LabelMap", "SeriesItem", "gzip_bytes", "mask_on_grid",
           "nifti_gz", "ranked"]
