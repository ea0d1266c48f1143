"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data of stored instances.

Everything served is already de-identified: instances are the stored blobs,
metadata is the catalog's copy of each instance's DICOM JSON
(``Instance.dataset``, never re-read from files) with its relative
``BulkDataURI`` values made absolute. Access is checked before the first byte
is sent: a UID the caller may not read answers as one that does not exist.

Transfer syntaxes: ``transfer-syntax=*`` (or ``*/*``) serves what is stored;
no transfer-syntax parameter means Explicit VR Little Endian (PS3.18 8.7.3.5),
given by decompressing when needed; Implicit VR Little Endian the same way;
anything else that is not the stored syntax is refused with 406 (no
re-compression).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from mida.catalog import Catalog
from mida.catalog.dicomquery import Located, locate
from mida.catalog.models import Instance, Series, Study
from mida.dicomweb.multipart import (
    DicomWebError,
    MediaRange,
    NotAcceptableError,
    multipart_body,
    multipart_content_type,
    new_boundary,
    part_head,
    type_matches,
)
from mida.errors import BlobNotFoundError, NotFoundError
from mida.sharing.identity import Principal
from mida.storage import BlobStore

log = logging.getLogger(__name__)

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
NATIVE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian),
          str(DeflatedExplicitVRLittleEndian), str(ExplicitVRBigEndian)}
#: media type of a frame in each compressed transfer syntax (PS3.18 Table 8.7.3-2)
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl", "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
OCTET = "application/octet-stream"
DICOM = "application/dicom"
_CHUNK = 1 << 20


def check_uid(uid: str, what: str = "") -> str:
    """``uid`` when it is a valid UID (digits and dots, at most 64); else 400."""
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise DicomWebError(f"not a valid {what + ' ' if what else ''}UID: a UID is digits "
                            "separated by dots, at most 64 characters")
    return uid


def check_tag(tag: str) -> int:
    if not _TAG.fullmatch(tag):
        raise DicomWebError("a bulk data tag is 8 hexadecimal digits, e.g. 7FE00010")
    return int(tag, 16)


def parse_frames(text: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]`` (frame numbers start at 1)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1 or len(part) > 9:
            raise DicomWebError("frame numbers are whole numbers from 1, separated by commas")
        out.append(int(part))
    if len(out) > 10_000:
        raise DicomWebError("at most 10000 frames per request")
    return out


# -- access ------------------------------------------------------------------
def find_instances(
    s: Session, principal: Principal, study: str, series: str | None = None,
    sop: str | None = None,
) -> list[Located]:
    """The stored instances under the UIDs, after checking the caller may read them.

    Raises :class:`NotFoundError` when nothing matches and
    :class:`~mida.errors.AccessDeniedError` when the caller may not read it;
    the API answers both alike to a caller without a node-wide grant.
    """
    check_uid(study, "study")
    if series is not None:
        check_uid(series, "series")
    if sop is not None:
        check_uid(sop, "instance")
    found = locate(s, study_uid=study, series_uid=series, sop_uid=sop, collection_ids=None)
    if not found:
        raise NotFoundError("no such " + ("instance" if sop else "series" if series else "study")
                            + " in this node")
    for cid in {f.collection_id for f in found}:
        principal.require("read", cid)
    return found


# -- retrieve instances ---------------------------------------------------------
def _dicom_syntaxes(ranges: list[MediaRange]) -> list[str]:
    """Transfer syntaxes acceptable for application/dicom parts, best first ('*': any)."""
    wanted: list[str] = []
    for r in ranges:
        if r.media_type in ("*/*", "*"):
            wanted.append("*")
            continue
        if r.multipart:
            pt = r.part_type
            if pt is not None and not type_matches(pt, DICOM):
                continue
            ts = r.transfer_syntax
            any_type = pt is None or pt in ("*/*", "*")
            wanted.append(ts if ts else ("*" if any_type else str(ExplicitVRLittleEndian)))
        elif r.media_type == DICOM:  # answered as multipart all the same
            wanted.append(r.transfer_syntax or str(ExplicitVRLittleEndian))
    return wanted


def plan_retrieve(found: list[Located], ranges: list[MediaRange]) -> list[tuple[Located, str]]:
    """Each instance with the transfer syntax it will be sent in (406 when one cannot be)."""
    wanted = _dicom_syntaxes(ranges)
    if not wanted:
        raise NotAcceptableError(
            'instances are served as multipart/related; type="application/dicom" '
            "(add transfer-syntax=* to receive them as stored)")
    plan = []
    for loc in found:
        stored = loc.transfer_syntax_uid
        if "*" in wanted or stored in wanted:
            plan.append((loc, stored))
        elif str(ExplicitVRLittleEndian) in wanted:
            plan.append((loc, str(ExplicitVRLittleEndian)))
        elif str(ImplicitVRLittleEndian) in wanted:
            plan.append((loc, str(ImplicitVRLittleEndian)))
        else:
            raise NotAcceptableError(
                f"an instance is stored in transfer syntax {stored}, which cannot be converted "
                "to the one asked for; ask for transfer-syntax=* (as stored) or "
                f"{ExplicitVRLittleEndian} (uncompressed)")
    return plan


def blob_chunks(store: BlobStore, digest: str) -> Iterator[bytes]:
    """A stored blob, read a chunk at a time."""
    try:
        fh = store.fs.open(store.path(digest), "rb")
    except FileNotFoundError as exc:
        raise BlobNotFoundError(f"blob {digest[:12]} is missing from the store") from exc
    with fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def transcode(data: bytes, ts: str) -> bytes:
    """A Part 10 file re-encoded in an uncompressed little endian transfer syntax."""
    ds: Dataset = dcmread(io.BytesIO(data))
    stored = UID(str(ds.file_meta.TransferSyntaxUID))
    if stored == ts:
        return data
    if stored.is_compressed:
        ds.decompress(generate_instance_uid=False)
    elif stored == ExplicitVRBigEndian:
        ds = _to_little_endian(ds)
    ds.file_meta.TransferSyntaxUID = UID(ts)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian,
               little_endian=True)
    return buf.getvalue()


def _to_little_endian(ds: Dataset) -> Dataset:
    """A big endian dataset rebuilt as little endian (pixel data swapped; pydicom will not)."""
    arr = pixel_array(ds) if "PixelData" in ds else None
    new = Dataset()
    for elem in ds:
        new.add(elem)
    new.file_meta = ds.file_meta
    if arr is not None:
        if int(ds.BitsAllocated) == 1:
            from pydicom.pixels import pack_bits

            new.PixelData = pack_bits(arr)
        else:
            new.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            new["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    return new


def iter_retrieve(store: BlobStore, plan: list[tuple[Located, str]],
                  boundary: str) -> Iterator[bytes]:
    """The multipart body of a retrieve, one instance in memory at most."""
    for loc, ts in plan:
        yield part_head(f"{DICOM}; transfer-syntax={ts}", boundary)
        if ts == loc.transfer_syntax_uid:
            yield from blob_chunks(store, loc.blob_sha256)
        else:
            yield transcode(store.get(loc.blob_sha256), ts)
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


# -- metadata -------------------------------------------------------------------
@dataclass(frozen=True)
class MetadataScope:
    """What a metadata request covers, resolved and access-checked."""

    study_uid: str
    study_id: int
    series_uid: str | None = None
    series_id: int | None = None
    sop_uid: str | None = None


def metadata_scope(s: Session, principal: Principal, study: str, series: str | None = None,
                   sop: str | None = None) -> MetadataScope:
    """Resolve the UIDs of a metadata request (two indexed look-ups) and check access."""
    check_uid(study, "study")
    row = s.execute(select(Study.id, Study.collection_id)
                    .where(Study.StudyInstanceUID == study)).first()
    if row is None:
        raise NotFoundError("no such study in this node")
    principal.require("read", int(row[1]))
    series_id = None
    if series is not None:
        check_uid(series, "series")
        series_id = s.scalar(select(Series.id).where(Series.SeriesInstanceUID == series,
                                                     Series.study_id == row[0]))
        if series_id is None:
            raise NotFoundError("no such series in this study")
    if sop is not None:
        check_uid(sop, "instance")
        hit = s.scalar(select(Instance.id).where(Instance.SOPInstanceUID == sop,
                                                 Instance.series_id == series_id))
        if hit is None:
            raise NotFoundError("no such instance in this series")
    return MetadataScope(study, int(row[0]), series, series_id, sop)


_BULK = re.compile(r'("BulkDataURI"\s*:\s*")bulkdata/')


def absolute_bulkdata(text: str, prefix: str) -> str:
    """Rewrite the relative ``bulkdata/TAG`` URIs of one instance's JSON text under ``prefix``.

    >>> absolute_bulkdata('{"7FE00010": {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}}',
    ...                   "http://h/dicomweb/studies/1/series/2/instances/3/")
    '{"7FE00010": {"vr": "OW", "BulkDataURI": "http://h/dicomweb/studies/1/series/2/instances/3/bulkdata/7FE00010"}}'
    """
    if '"BulkDataURI"' not in text:
        return text
    return _BULK.sub(lambda m: m.group(1) + prefix + "bulkdata/", text)


def iter_metadata(catalog: Catalog, scope: MetadataScope, base_url: str,
                  chunk_bytes: int = 1 << 18) -> Iterator[bytes]:
    """The DICOM JSON array of every instance in scope, straight from the catalog.

    One query selects the stored JSON text (no decoding and re-encoding of
    each dataset); rows are fetched in batches and the output is yielded in
    chunks of about ``chunk_bytes``.
    """
    root = json.dumps(f"{base_url}/dicomweb/studies/{scope.study_uid}/series/")[1:-1]
    text_col = cast(Instance.dataset, Text)
    if scope.series_id is not None:
        q: Any = (select(Instance.SOPInstanceUID, text_col)
                  .where(Instance.series_id == scope.series_id))
        if scope.sop_uid is not None:
            q = q.where(Instance.SOPInstanceUID == scope.sop_uid)
        q = q.order_by(Instance.InstanceNumber, Instance.id)
    else:
        q = (select(Instance.SOPInstanceUID, text_col, Series.SeriesInstanceUID)
             .join(Series, Series.id == Instance.series_id)
             .where(Series.study_id == scope.study_id)
             .order_by(Series.id, Instance.InstanceNumber, Instance.id))
    parts: list[str] = ["["]
    size = 1
    first = True
    with catalog.session() as s:
        for row in s.execute(q).yield_per(500):
            sop, text = row[0], row[1]
            series_uid = scope.series_uid if scope.series_id is not None else row[2]
            if not isinstance(text, str):  # a driver that decodes JSON itself
                text = json.dumps(text)
            text = absolute_bulkdata(text, f"{root}{series_uid}/instances/{sop}/")
            if not first:
                parts.append(",")
            first = False
            parts.append(text)
            size += len(text) + 1
            if size >= chunk_bytes:
                yield "".join(parts).encode("utf-8")
                parts, size = [], 0
    parts.append("]")
    yield "".join(parts).encode("utf-8")


# -- pixel data ----------------------------------------------------------------
def read_dataset(store: BlobStore, loc: Located) -> Dataset:
    ds = dcmread(io.BytesIO(store.get(loc.blob_sha256)))
    if "PixelData" not in ds:
        raise DicomWebError("this instance has no pixel data", 404)
    return ds


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _frame_bits(ds: Dataset) -> int:
    return (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
            * int(ds.BitsAllocated))


def native_frame(ds: Dataset, index: int) -> bytes:
    """Frame ``index`` (0-based) of uncompressed pixel data, little endian."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts == ExplicitVRBigEndian:
        return decoded_frame(ds, index)
    raw: bytes = ds.PixelData
    bits = _frame_bits(ds)
    if bits % 8 == 0:
        n = bits // 8
        return raw[index * n:(index + 1) * n]
    all_bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    return np.packbits(all_bits[index * bits:(index + 1) * bits], bitorder="little").tobytes()


def compressed_frame(ds: Dataset, index: int) -> bytes:
    """Frame ``index`` (0-based) of encapsulated pixel data, as stored."""
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return bytes(get_frame(ds.PixelData, index, number_of_frames=frame_count(ds),
                           extended_offsets=offsets))


def decoded_frame(ds: Dataset, index: int) -> bytes:
    """Frame ``index`` decoded to native little endian bytes (colour as RGB)."""
    arr = pixel_array(ds, index=index)
    if int(ds.BitsAllocated) == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


@dataclass(frozen=True)
class FrameFormat:
    """How frames go out: ``mode`` native | passthrough | decode, as ``media_type``."""

    mode: str
    media_type: str
    transfer_syntax: str
    single: bool = False

    @property
    def part_content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def _frame_choice(part_type: str | None, ts: str | None, stored: str) -> FrameFormat | None:
    any_type = part_type in (None, "*/*", "*")
    explicit = str(ExplicitVRLittleEndian)
    if stored in NATIVE:
        if (any_type or part_type == OCTET) and ts in (None, "*", explicit):
            return FrameFormat("native", OCTET, explicit)
        return None
    media = FRAME_MEDIA.get(stored)
    if media is None:  # video and other syntaxes without frames
        return None
    if any_type:
        if ts in (None, "*", stored):
            return FrameFormat("passthrough", media, stored)
        return FrameFormat("decode", OCTET, explicit) if ts == explicit else None
    if part_type == OCTET:
        if ts in ("*", stored):
            return FrameFormat("passthrough", OCTET, stored)
        return FrameFormat("decode", OCTET, explicit) if ts in (None, explicit) else None
    if part_type is not None and type_matches(part_type, media) and ts in (None, "*", stored):
        return FrameFormat("passthrough", media, stored)
    return None


def frame_format(stored: str, ranges: list[MediaRange], count: int) -> FrameFormat:
    """The first acceptable way to send frames of an instance in ``stored`` syntax (else 406)."""
    for r in ranges:
        if r.multipart:
            choice = _frame_choice(r.part_type, r.transfer_syntax, stored)
        elif r.media_type in ("*/*", "*"):
            choice = _frame_choice(None, r.transfer_syntax, stored)
        elif count == 1:
            choice = _frame_choice(r.media_type, r.transfer_syntax, stored)
            if choice is not None:
                choice = FrameFormat(choice.mode, choice.media_type, choice.transfer_syntax,
                                     single=True)
        else:
            choice = None
        if choice is not None:
            return choice
    media = FRAME_MEDIA.get(stored, OCTET if stored in NATIVE else None)
    raise NotAcceptableError(
        f"frames of this instance (transfer syntax {stored}) are available as "
        'multipart/related; type="application/octet-stream"'
        + (f' or type="{media}"' if media and media != OCTET else "")
        + "; add transfer-syntax=* to receive them as stored")


def frame_bytes(ds: Dataset, index: int, fmt: FrameFormat) -> bytes:
    if fmt.mode == "native":
        return native_frame(ds, index)
    if fmt.mode == "passthrough":
        return compressed_frame(ds, index)
    return decoded_frame(ds, index)


def check_frames(ds: Dataset, frames: list[int]) -> None:
    n = frame_count(ds)
    bad = [f for f in frames if f > n]
    if bad:
        raise DicomWebError(f"frame {bad[0]} is out of range: this instance has {n} frame(s)", 404)


# -- bulk data --------------------------------------------------------------------
_SWAP = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_NUMERIC = {"US": "<u2", "SS": "<i2", "UL": "<u4", "SL": "<i4", "FL": "<f4", "FD": "<f8",
            "UV": "<u8", "SV": "<i8", "AT": "<u4"}


def find_element(ds: Dataset, tag: int) -> DataElement | None:
    """The element ``tag`` at the top level, else the first one found in a sequence."""
    if tag in ds:
        return ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                hit = find_element(item, tag)
                if hit is not None:
                    return hit
    return None


def element_bytes(ds: Dataset, elem: DataElement) -> bytes:
    """The value of a bulk data element as little endian bytes."""
    value = elem.value
    vr = str(elem.VR)
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        width = _SWAP.get(vr)
        if width and str(ds.file_meta.TransferSyntaxUID) == ExplicitVRBigEndian:
            return np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
        return bytes(value)
    if vr in _NUMERIC:
        values = value if isinstance(value, list | tuple) or hasattr(value, "__len__") else [value]
        return np.asarray(list(values), dtype=_NUMERIC[vr]).tobytes()
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


def frames_body(ds: Dataset, frames: list[int], ranges: list[MediaRange]) -> tuple[str, bytes]:
    """The content type and body answering a request for ``frames`` (1-based) of ``ds``."""
    check_frames(ds, frames)
    fmt = frame_format(str(ds.file_meta.TransferSyntaxUID), ranges, len(frames))
    try:
        data = [frame_bytes(ds, n - 1, fmt) for n in frames]
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        raise DicomWebError(f"the pixel data cannot be decoded ({type(exc).__name__})",
                            500) from exc
    if fmt.single:
        return fmt.part_content_type, data[0]
    boundary = new_boundary()
    body = b"".join(multipart_body(((fmt.part_content_type, [d]) for d in data), boundary))
    return multipart_content_type(fmt.media_type, boundary), body


def retrieve_frames(store: BlobStore, loc: Located, frames: list[int],
                    ranges: list[MediaRange]) -> tuple[str, bytes]:
    """Frames of one stored instance (PS3.18 10.4.1.1.4)."""
    return frames_body(read_dataset(store, loc), frames, ranges)


def retrieve_bulkdata(store: BlobStore, loc: Located, tag: int,
                      ranges: list[MediaRange]) -> tuple[str, bytes]:
    """One bulk data element of a stored instance (PS3.18 10.4.1.1.5).

    Pixel data comes whole when uncompressed and frame by frame (as the
    frames resource would send them) when encapsulated. Other elements are
    found at the top level first, then in sequences (relative URIs name the
    tag only).
    """
    ds = dcmread(io.BytesIO(store.get(loc.blob_sha256)))
    ts = str(ds.file_meta.TransferSyntaxUID)
    if tag == 0x7FE00010 and "PixelData" in ds:
        if ts not in NATIVE:
            return frames_body(ds, list(range(1, frame_count(ds) + 1)), ranges)
        if ts == ExplicitVRBigEndian:
            value = b"".join(decoded_frame(ds, i) for i in range(frame_count(ds)))
        else:
            value = bytes(ds.PixelData)
        content_type = f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
    else:
        elem = find_element(ds, tag)
        if elem is None or elem.VR == "SQ":
            raise DicomWebError("this instance has no bulk data element with that tag", 404)
        value = element_bytes(ds, elem)
        content_type = OCTET
    ok, single = bulk_ranges_ok(ranges)
    if not ok:
        raise NotAcceptableError('bulk data is available as multipart/related; '
                                 'type="application/octet-stream" or application/octet-stream')
    if single:
        return content_type, value
    boundary = new_boundary()
    return (multipart_content_type(OCTET, boundary),
            b"".join(multipart_body([(content_type, [value])], boundary)))


def pick_thumbnail(found: list[Located]) -> Located:
    """The instance a study's or series' thumbnail shows: the middle image of its first series."""
    images = [f for f in found if f.rows]
    if not images:
        raise NotAcceptableError("nothing here has pixel data to show as a thumbnail")
    series = images[0].series_uid
    in_series = [f for f in images if f.series_uid == series]
    return in_series[len(in_series) // 2]


def bulk_ranges_ok(ranges: list[MediaRange]) -> tuple[bool, bool]:
    """Whether octet-stream bulk data is acceptable, and whether as a single part."""
    for r in ranges:
        if r.multipart and (r.part_type is None or type_matches(r.part_type, OCTET)):
            return True, False
        if r.media_type in ("*/*", "*"):
            return True, False
        if r.media_type == OCTET:
            return True, True
    return False, False


__all__ = [
    "DICOM",
    "FRAME_MEDIA",
    "OCTET",
    "FrameFormat",
    "MetadataScope",
    "absolute_bulkdata",
    "blob_chunks",
    "bulk_ranges_ok",
    "check_frames",
    "check_tag",
    "check_uid",
    "compressed_frame",
    "decoded_frame",
    "element_bytes",
    "find_element",
    "find_instances",
    "frame_bytes",
    "frame_count",
    "frame_format",
    "frames_body",
    "iter_metadata",
    "iter_retrieve",
    "metadata_scope",
    "native_frame",
    "parse_frames",
    "pick_thumbnail",
    "plan_retrieve",
    "read_dataset",
    "retrieve_bulkdata",
    "retrieve_frames",
    "transcode",
]
