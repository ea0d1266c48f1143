"""Parse and validate one DICOM input, or say precisely why it is refused.

Every refusal is a :class:`~mida.errors.QuarantineError` with a stable reason
code. Messages name tags, VRs, sizes and SOP classes, never values read from
the file, so they are safe to store, log and show.
"""

from __future__ import annotations

import io
import warnings

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID, AllTransferSyntaxes

from mida.errors import QuarantineError, QuarantineReason

ENCAPSULATED_DOCUMENTS = {
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA",
    "1.2.840.10008.5.1.4.1.1.104.3": "Encapsulated STL",
    "1.2.840.10008.5.1.4.1.1.104.4": "Encapsulated OBJ",
    "1.2.840.10008.5.1.4.1.1.104.5": "Encapsulated MTL",
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
PIXEL_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))


def _q(reason: QuarantineReason, message: str) -> QuarantineError:
    return QuarantineError(reason, message)


def read_dataset(data: bytes) -> Dataset:
    """Parse ``data`` as a DICOM Part 10 file (or a bare dataset).

    Raises
    ------
    QuarantineError
        ``not_dicom`` when the bytes are not DICOM, ``truncated`` when they
        end early, ``malformed`` when the encoding is broken.
    """
    if len(data) < 132 and not data[:8].strip(b"\x00"):
        raise _q(QuarantineReason.NOT_DICOM, f"{len(data)} bytes: too short to be DICOM")
    forced = data[128:132] != b"DICM"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=forced)
        except InvalidDicomError as exc:
            raise _q(QuarantineReason.NOT_DICOM, "no DICOM preamble or file meta") from exc
        except (EOFError, OSError) as exc:
            msg = f"the file ends early ({len(data)} bytes)"
            raise _q(QuarantineReason.TRUNCATED, msg) from exc
        except Exception as exc:  # pydicom raises many types on broken encodings
            reason = QuarantineReason.NOT_DICOM if forced else QuarantineReason.MALFORMED
            name = type(exc).__name__
            raise _q(reason, f"the DICOM encoding could not be parsed ({name})") from exc
    if forced and not _plausible(ds):
        raise _q(QuarantineReason.NOT_DICOM, "no DICOM preamble and no recognisable data elements")
    return ds


def _plausible(ds: Dataset) -> bool:
    """A headerless dataset must start with plausible elements, in order."""
    try:
        tags = list(ds.keys())
    except Exception:
        return False
    if not tags or len(tags) < 3:
        return False
    return tags[0].group in (0x0002, 0x0008) and any(t.group == 0x0008 for t in tags)


def validate(ds: Dataset, *, quarantine_documents: bool = True) -> None:
    """Check what ingest needs before de-identification.

    Raises
    ------
    QuarantineError
        ``dicomdir``, ``encapsulated_document``, ``missing_uid`` or
        ``truncated`` (pixel data shorter than its declared size).
    """
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta
                                                   else ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise _q(QuarantineReason.DICOMDIR, "a DICOMDIR media directory, not an image instance")
    if quarantine_documents and sop_class in ENCAPSULATED_DOCUMENTS:
        raise _q(
            QuarantineReason.ENCAPSULATED_DOCUMENT,
            f"{ENCAPSULATED_DOCUMENTS[sop_class]} ({sop_class}): documents may hold free-text "
            "PHI that cannot be de-identified; kept in quarantine by default",
        )
    missing = [k for k in REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise _q(QuarantineReason.MISSING_UID, "required UID(s) missing: " + ", ".join(missing))
    for keyword in REQUIRED_UIDS:
        if not UID(str(ds[keyword].value)).is_valid:
            raise _q(QuarantineReason.BAD_VR, f"{keyword} is not a valid UID")
    ts = _transfer_syntax(ds)
    # AllTransferSyntaxes is pydicom's own static list; UID.is_transfer_syntax reads the UID
    # dictionary, which pynetdicom extends on import, so the answer would depend on import order.
    if ts is not None and ts not in AllTransferSyntaxes:
        shown = str(ts)[:64] if ts.is_valid else "a malformed UID"
        raise _q(
            QuarantineReason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"transfer syntax {shown} is not one pydicom {pydicom.__version__} can decode "
            "(e.g. Deflated Image Frame Compression); convert it with dcmconv or retry "
            "after an upgrade",
        )
    check_pixel_length(ds)


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)) if ts else None


def check_pixel_length(ds: Dataset) -> None:
    """Refuse native pixel data shorter than Rows x Columns x frames x samples."""
    if "PixelData" not in ds:
        return
    ts = _transfer_syntax(ds)
    if ts is not None and ts.is_compressed:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _q(
            QuarantineReason.MALFORMED, "Image Pixel module incomplete (Rows/Columns/BitsAllocated)"
        ) from exc
    expected_bits = rows * cols * spp * frames * bits
    expected = (expected_bits + 7) // 8
    actual = len(ds.PixelData or b"")
    if actual < expected:
        raise _q(
            QuarantineReason.TRUNCATED,
            f"Pixel Data holds {actual} bytes, {expected} expected for {frames} frame(s) of "
            f"{rows}x{cols}x{spp} at {bits} bits",
        )


def check_decodable(ds: Dataset, *, first_frame_only: bool = True) -> None:
    """Decode pixel data (the first frame by default) or refuse the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if first_frame_only and int(ds.get("NumberOfFrames", 1) or 1) > 1:
                from pydicom.pixels import pixel_array

                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=False)
                buf.seek(0)
                pixel_array(buf, index=0)
            else:
                _ = ds.pixel_array
        except Exception as exc:
            ts = _transfer_syntax(ds)
            name = ts.name if ts is not None else "unknown transfer syntax"
            raise _q(
                QuarantineReason.PIXEL_UNDECODABLE,
                f"pixel data in {name} could not be decoded ({type(exc).__name__})",
            ) from exc


__all__ = [
    "ENCAPSULATED_DOCUMENTS",
    "check_decodable",
    "check_pixel_length",
    "read_dataset",
    "validate",
]
