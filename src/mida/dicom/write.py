"""Encode a dataset as a DICOM Part 10 file, fast when most elements are untouched.

After de-identification most elements are still pydicom ``RawDataElement``
objects holding their original encoded bytes. pydicom's writer takes each
through its general path; here an untouched element of an Explicit VR Little
Endian dataset is written as its header plus its original value bytes, and
everything else (changed elements, sequences, pixel data, other encodings)
goes through pydicom's own ``write_data_element``. The output is byte for
byte what ``Dataset.save_as(..., enforce_file_format=True)`` writes; a test
checks that on the shared corpora.
"""

from __future__ import annotations

import copy
import io
import struct
import warnings
from collections.abc import Callable

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_LONG = {str(vr) for vr in EXPLICIT_VR_LENGTH_32}
_TAG = struct.Struct("<HH")
_SHORT_LEN = struct.Struct("<H")
_LONG_LEN = struct.Struct("<HI")


def _pydicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _fast_ok(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        return False
    ts = UID(str(ts))
    if not ts.is_transfer_syntax or ts.is_implicit_VR or not ts.is_little_endian:
        return False
    if ts == DeflatedExplicitVRLittleEndian:
        return False
    if ds.original_encoding != (False, True):
        return False
    return bool(ds.original_character_set == ds._character_set)


def encode(ds: Dataset) -> bytes:
    """The Part 10 bytes of ``ds``, equal to ``save_as(..., enforce_file_format=True)``.

    Examples
    --------
    >>> from pydicom.dataset import FileMetaDataset
    >>> from pydicom.uid import ExplicitVRLittleEndian
    >>> ds = Dataset()
    >>> ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    >>> ds.SOPInstanceUID = "2.25.1"
    >>> ds.file_meta = FileMetaDataset()
    >>> ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    >>> encode(ds)[128:132]
    b'DICM'
    """
    if not _fast_ok(ds):
        return _pydicom_bytes(ds)
    file_meta = copy.deepcopy(ds.file_meta)
    file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    validate_file_meta(file_meta, enforce_standard=True)
    ts = UID(str(file_meta.TransferSyntaxUID))
    fp = DicomBytesIO()
    fp.is_implicit_VR = False
    fp.is_little_endian = True
    fp.write(getattr(ds, "preamble", None) or b"\x00" * 128)
    fp.write(b"DICM")
    write_file_meta_info(fp, file_meta, enforce_standard=True)
    encodings = ds._character_set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in sorted(ds._dict):
            elem = ds.get_item(tag)
            if elem is None:
                continue
            if type(elem) is RawDataElement:
                if _write_raw(fp.write, elem):
                    continue
                # e.g. implicit VR elements of a dataset re-encoded as explicit
                # VR (after pixel cleaning): pydicom resolves the VR on conversion
                elem = ds[tag]
            if tag == 0x7FE00010:  # as pydicom does: undefined length exactly when compressed
                elem = ds[tag]
                elem.is_undefined_length = ts.is_compressed
            write_data_element(fp, elem, encodings)
    return fp.getvalue()


def _write_raw(write: Callable[[bytes], object], elem: RawDataElement) -> bool:
    """Write an untouched explicit VR LE element; False when pydicom must write it."""
    vr = elem.VR
    value = elem.value
    if (
        vr is None or vr == "SQ" or elem.tag == 0x7FE00010 or elem.is_implicit_VR
        or not elem.is_little_endian or elem.length == 0xFFFFFFFF or value is None
        or len(vr) != 2
    ):
        return False
    n = len(value)
    tag = elem.tag
    header = _TAG.pack(tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG:
        header += _LONG_LEN.pack(0, n)
    elif n > 0xFFFF:
        return False
    else:
        header += _SHORT_LEN.pack(n)
    write(header)
    write(value)
    return True


__all__ = ["encode"]
