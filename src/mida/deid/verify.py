"""Verify de-identified output: no identifier of the originals is left anywhere.

The verifier is deliberately independent of the engine: it does not ask what
the profile meant to do, it looks for what the originals contained.

1. :func:`collect_identifiers` gathers identifying values from an *original*
   dataset, at every depth and in the file meta: every Person Name component
   (alphabetic, ideographic and phonetic), patient and study identifiers,
   full dates (``DA`` and the date part of ``DT``), addresses, telephone
   numbers, institution and device identity, every instance UID that is not
   under the DICOM root or a class-like UID, and private text values that do
   not merely repeat the file's own technical data. Values of private
   attributes that the safe-private dictionary (:mod:`mida.deid.safe_private`)
   lists count as technical data, as standard non-identifying values do: the
   dictionary is the knowledge that they identify no one, and Retain Safe
   Private keeps them. Names, IDs and dates written into them are still found.
2. :func:`find_leaks` searches an *output* for them, element by element at
   every depth (private attributes and file meta included) after decoding in
   the dataset's character set, and in the raw bytes of the whole file (the
   preamble included) in UTF-8, Latin-1, the file's own character sets and,
   for CJK values, Big5 and GB18030. Matching is on whole tokens: ``MARY``
   does not match inside ``PRIMARY`` and ``1.2.3`` does not match inside
   ``1.2.3.4``; values with CJK characters match as substrings (CJK text has
   no word separators). Pixel data is left out of the byte search (pixel
   values are not text and would give chance matches); pixels are checked by
   OCR instead, see below.
3. :func:`verify_pair` checks every output file against the union of the
   identifiers of all the originals. That needs no matching of outputs to
   originals (which de-identification makes impossible by design) and is
   stricter than a per-pair check; its one cost is that a shifted date of one
   patient may, by chance, equal an original date of another and be reported.

Burned-in text: for images at risk (modalities US, SC, DX, XA, or
BurnedInAnnotation ``YES``), the pixels are read by an OCR engine when
:mod:`mida.deid.pixels` provides one (``TesseractOCR``, see
:func:`ocr_engine`). Without one, the report lists the image under
``pixels_unchecked``: it never passes silently.

A :class:`Leak` never shows the value it found: its rendering (and its JSON
form) carries only a masked form, the first character and the length.

Examples
--------
>>> from pydicom.dataset import Dataset
>>> original = Dataset()
>>> original.PatientName = "DOE^JANE"
>>> ids = collect_identifiers(original)
>>> sorted(ids.values)
['DOE^JANE', 'JANE']
>>> out = Dataset()
>>> out.StudyDescription = "CT chest for Jane"
>>> [str(leak) for leak in find_leaks(out, ids)]
['<dataset> (0008,1030): name J… (4 chars) [decoded]']
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from mida.deid.allowlist import CLASS_UID_TAGS
from mida.deid.freetext import FreeTextCleaner
from mida.deid.safe_private import load_safe_private, sequence_component
from mida.errors import DeidError

MIN_LEN = 4
"""Shortest Latin-script value looked for.

Shorter name parts (``LEE``, ``NEW``) match clinical words by chance ("seizure,
new, acute"); they are still caught inside the longer values that hold them
(the whole name, ``LEE^ANNA``, is searched too).
"""
MIN_LEN_CJK = 2
"""Shortest value with CJK characters looked for (two-character names are common)."""

GENERIC = frozenset({
    "ANONYMOUS", "ANONYMIZED", "ANONYMISED", "REMOVED", "NONE", "UNKNOWN", "TEST", "YES", "NO",
    "MALE", "FEMALE", "OTHER", "DEFAULT", "19000101", "00000000", "19000101000000",
})
"""Values that identify no one (the engine's own dummies among them)."""

RISK_MODALITIES = frozenset({"US", "SC", "DX", "XA"})
"""Modalities whose pixels are OCRed for burned-in text."""

_ID_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID",
    "MedicalRecordLocator", "AdmissionID", "ServiceEpisodeID", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
})
_INSTITUTION_KEYWORDS = frozenset({
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
})
_DEVICE_KEYWORDS = frozenset({"StationName", "DeviceSerialNumber"})
_TECHNICAL_TEXT = frozenset({
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "RescaleType", "Modality",
    "ImageType", "BodyPartExamined", "PhotometricInterpretation",
})
_TECHNICAL_DATES = frozenset({
    "ContextGroupVersion", "ContextGroupLocalVersion", "CodingSchemeVersion",
})
# Class-like UIDs name a kind of object; the Implementation Class UID names the
# software that wrote the file. Neither identifies a patient or a study.
_NOT_INSTANCE_UIDS = CLASS_UID_TAGS | {0x00020012}
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "PN", "UT", "UC"})
_BYTES_VRS = frozenset({"OB", "OW", "UN", "OB or OW", "US or OW"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})")
# A token boundary: no letter or digit next to the value, and no "digit." before
# or ".digit" after, so that UID and decimal fragments do not count.
_BEFORE = r"(?<![A-Za-z0-9])(?<![0-9]\.)"
_AFTER = r"(?![A-Za-z0-9])(?!\.[0-9])"


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass
class Identifiers:
    """Identifying values, each with its kind (``name``, ``id``, ``date``, ``uid``...).

    Combine the identifiers of several originals with :meth:`update`.
    ``technical`` holds, upper-cased, the standard non-identifying values of
    the originals (``FLAT`` as a Filter Type, a Manufacturer...): a name word
    or private value equal to one of them is not searched for, since finding
    it in an output proves nothing (a patient called "flat glade" must not
    make every CT with a flat filter a leak; the whole name is still searched).
    """

    values: dict[str, str] = field(default_factory=dict)
    technical: set[str] = field(default_factory=set)
    ordinary: set[str] = field(default_factory=set)
    """Upper-cased words of the originals' non-identifying text (``SOFT`` of
    ``US CHEST WALL/SOFT TISSUE``) that are not a name word of the same
    original and that the free-text cleaner keeps. A one-word name part
    equal to one of them ("Dr. soft haze" in another file) is not searched
    alone: finding the clinical word proves nothing. The whole name and its
    other parts still are, and a name word written into its own file's
    description is never ordinary there."""

    def add(self, value: str, kind: str) -> None:
        """Add one value if it is long and specific enough to search for."""
        v = value.strip().strip("\x00").strip()
        if not v or v.upper() in GENERIC:
            return
        shortest = MIN_LEN_CJK if _CJK.search(v) else MIN_LEN
        if len(v) < shortest:
            return
        self.values.setdefault(v, kind)

    def update(self, other: Identifiers) -> None:
        """Add every value of ``other``."""
        for v, k in other.values.items():
            self.values.setdefault(v, k)
        self.technical |= other.technical
        self.ordinary |= other.ordinary

    def searchable(self) -> dict[str, str]:
        """The values to search for: :attr:`values` less technical and ordinary words."""
        return {v: k for v, k in self.values.items()
                if k not in ("name", "private")
                or not (v.upper() in self.technical
                        or (k == "name" and v.upper() in self.ordinary))}

    def counts(self) -> dict[str, int]:
        """How many values of each kind."""
        out: dict[str, int] = {}
        for k in self.values.values():
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, value: object) -> bool:
        return value in self.values


@dataclass(frozen=True)
class Leak:
    """One identifying value found in an output.

    ``value`` is kept for tests and programs; ``str()`` and :meth:`to_dict`
    show only :attr:`masked`.
    """

    location: str
    kind: str
    path: str
    charset: str
    value: str = field(repr=False)

    @property
    def masked(self) -> str:
        """The first character and the length, e.g. ``"J… (4 chars)"``."""
        return f"{self.value[:1]}… ({len(self.value)} chars)"

    def to_dict(self) -> dict[str, str]:
        """JSON-safe form, without the value."""
        return {"location": self.location, "kind": self.kind, "path": self.path,
                "charset": self.charset, "masked": self.masked}

    def __str__(self) -> str:
        return f"{self.location} {self.path}: {self.kind} {self.masked} [{self.charset}]"


@dataclass
class VerifyReport:
    """The result of :func:`verify_pair`."""

    originals: int = 0
    outputs: int = 0
    identifiers: dict[str, int] = field(default_factory=dict)
    leaks: list[Leak] = field(default_factory=list)
    pixels_checked: list[str] = field(default_factory=list)
    pixels_unchecked: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    ocr: str = "unavailable"

    @property
    def ok(self) -> bool:
        """No leak was found (see :attr:`pixels_unchecked` for what was not OCRed)."""
        return not self.leaks

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; leaks are masked."""
        return {
            "ok": self.ok, "originals": self.originals, "outputs": self.outputs,
            "identifiers": self.identifiers, "leaks": [lk.to_dict() for lk in self.leaks],
            "ocr": self.ocr, "pixels_checked": self.pixels_checked,
            "pixels_unchecked": self.pixels_unchecked, "unreadable": self.unreadable,
        }


# -- collecting ----------------------------------------------------------------
def _elements(ds: Dataset, path: str = "") -> Iterator[tuple[str, DataElement]]:
    """Every element at every depth, file meta first, skipping undecodable ones."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not path:
        yield from _elements(meta, "")
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # an undecodable value: the raw byte search still sees it
            continue
        here = f"{path}{_tag(int(tag))}"
        yield here, elem
        if elem.VR == "SQ" and elem.value is not None:
            for i, item in enumerate(elem.value):
                yield from _elements(item, f"{here}[{i}]>")


def safe_listed_elements(
    ds: Dataset, path: tuple[str, ...] = ()
) -> Iterator[tuple[DataElement, bool]]:
    """Every element at every depth, each with whether the safe-private dictionary lists it.

    A private element ``(gggg,xxee)`` is listed when ``(creator of block xx in
    the same dataset, gggg, ee)`` is in :mod:`mida.deid.safe_private` at the
    element's path of enclosing sequences, with the element's VR (or the file
    gives no VR).
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not path:
        yield from safe_listed_elements(meta, ("meta",))
    safe = load_safe_private()
    creators: dict[int, str] = {}
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # undecodable: the raw byte search still sees it
            continue
        t = int(tag)
        group, element = t >> 16, t & 0xFFFF
        listed = False
        creator: str | None = None
        if group % 2 and 0x10 <= element <= 0xFF:
            creators[group << 8 | element] = str(elem.value or "").strip()
        elif group % 2 and element >= 0x1000:
            creator = creators.get(group << 8 | element >> 8)
            if creator:
                vrs = safe.vrs(creator, group, element & 0xFF, path)
                listed = bool(vrs) and (elem.VR in vrs or elem.VR in ("UN", "OB"))
        yield elem, listed
        if elem.VR == "SQ" and elem.value is not None:
            component = (
                sequence_component(group, element & 0xFF, creator)
                if creator
                else sequence_component(group, element)
            )
            for item in elem.value:
                yield from safe_listed_elements(item, (*path, component))


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    vals = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v) for v in vals if v is not None and not isinstance(v, bytes)]


def _name_parts(value: Any) -> list[str]:
    out: list[str] = []
    for v in value if isinstance(value, MultiValue | list) else [value]:
        if v is None:
            continue
        pn = v if isinstance(v, PersonName) else PersonName(str(v))
        out.append(str(pn))
        for group in (pn.alphabetic, pn.ideographic, pn.phonetic):
            if group:
                out.append(group)
                out += [c for c in re.split(r"[\^=]", group) if c]
                out += [w for c in group.split("^") for w in c.split() if w]
                if _CJK.search(group):  # a CJK name is also written without separators
                    out.append("".join(group.replace("^", " ").split()))
    return out


@functools.cache
def _cleaner() -> FreeTextCleaner:
    return FreeTextCleaner()


def collect_identifiers(ds: Dataset) -> Identifiers:
    """Gather the identifying values of an original dataset.

    Parameters
    ----------
    ds
        An original (identified) dataset; it is not modified.

    Returns
    -------
    Identifiers
        The values to search outputs for, each with its kind.
    """
    ids = Identifiers()
    technical: set[str] = set()
    private: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for elem, listed in safe_listed_elements(ds):
            tag, vr, kw = int(elem.tag), elem.VR, elem.keyword
            try:
                if vr == "SQ" or tag in _PIXEL_TAGS:
                    continue
                if elem.tag.is_private:
                    if elem.tag.is_private_creator or vr not in _TEXT_VRS | {"UN", "CS"}:
                        continue
                    if listed:
                        # Safe by the safe-private dictionary (Retain Safe Private):
                        # technical, like a standard non-identifying value. Names,
                        # IDs and dates planted in it are still searched for.
                        technical.update(_private_strings(elem))
                    elif vr != "CS":
                        private += _private_strings(elem)
                    continue
                if vr == "PN":
                    for part in _name_parts(elem.value):
                        ids.add(part, "name")
                elif vr == "UI":
                    for uid in _strings(elem.value):
                        if tag in _NOT_INSTANCE_UIDS or uid.startswith("1.2.840.10008."):
                            technical.add(uid)
                        else:
                            ids.add(uid, "uid")
                elif vr in ("DA", "DT") and kw not in _TECHNICAL_DATES:
                    for v in _strings(elem.value):
                        m = _DATE.match(v.strip())
                        if m and 1 <= int(m[2]) <= 12 and 1 <= int(m[3]) <= 31:
                            ids.add(m[0], "date")
                            if vr == "DT" and len(v.strip()) > 8:
                                ids.add(v.strip(), "date")
                elif kw in _ID_KEYWORDS:
                    for v in _strings(elem.value):
                        ids.add(v, "id")
                elif "Address" in kw or kw in _INSTITUTION_KEYWORDS:
                    for v in _strings(elem.value):
                        ids.add(v, "institution" if kw.startswith("Institution") else "address")
                elif "Telephone" in kw:
                    for v in _strings(elem.value):
                        ids.add(v, "telephone")
                elif kw in _DEVICE_KEYWORDS:
                    for v in _strings(elem.value):
                        ids.add(v, "device")
                else:
                    # Standard non-identifying values: a private copy of one is
                    # a technical duplicate, not an identifier.
                    technical.update(_strings(elem.value))
            except Exception:  # one odd value must not hide the others
                continue
    ids.technical |= {t.strip().upper() for t in technical if t.strip()}
    own_words = {w.upper() for v, k in ids.values.items() if k == "name" for w in v.split()}
    cleaner = _cleaner()
    for t in technical:
        if re.search(r"[^\W\d_]{4,}", t):  # words the cleaner would keep are clinical words
            kept = cleaner.clean(t).text.upper()
            ids.ordinary |= {w for w in re.findall(r"[^\W\d_]{4,}", kept) if w not in own_words}
    for v in private:
        v = v.strip().strip("\x00").strip()
        if v in technical or not (re.search(r"[^\W\d_]", v) or len(v) >= 6):
            continue
        ids.add(v, "private")
    return ids


def _private_strings(elem: DataElement) -> list[str]:
    value = elem.value
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return []
        if not text.isprintable():
            text = text.strip("\x00 ")
            if not text.isprintable():
                return []
        return [t for t in text.split("\\") if t]
    return _strings(value)


# -- searching -----------------------------------------------------------------
class _Matcher:
    """Compiled patterns for one set of identifiers (text and bytes)."""

    def __init__(self, ids: Identifiers, extra_codecs: Iterable[str] = ()) -> None:
        values = ids.searchable()
        ascii_vals = sorted((v for v in values if v.isascii()), key=len, reverse=True)
        other_vals = sorted((v for v in values if not v.isascii()), key=len, reverse=True)
        self.lookup: dict[str, str] = {}
        for v in values:
            self.lookup.setdefault(v.lower(), v)
        parts = []
        if ascii_vals:
            parts.append(_BEFORE + "(?:" + "|".join(map(re.escape, ascii_vals)) + ")" + _AFTER)
        if other_vals:
            parts.append("(?:" + "|".join(map(re.escape, other_vals)) + ")")
        self.text = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        self.codecs = ["utf-8", "latin-1", *dict.fromkeys(extra_codecs)]
        self.raw: list[tuple[str, dict[bytes, str]]] = []
        for codec in dict.fromkeys([*self.codecs, "big5", "gb18030"]):
            enc: dict[bytes, str] = {}
            for v in values:
                if codec in ("big5", "gb18030") and not _CJK.search(v):
                    continue
                try:
                    b = v.encode(codec)
                except (UnicodeEncodeError, LookupError):
                    continue
                enc.setdefault(b.lower(), v)
            if enc:
                self.raw.append((codec, enc))

    def in_bytes(self, data: bytes) -> Iterator[tuple[str, int, str]]:
        """``(codec, offset, value)`` for each whole-token match in ``data``.

        A substring test (fast, in C) picks the candidates first, so the
        token pattern runs only for values that occur at all.
        """
        low = data.lower()
        for codec, enc in self.raw:
            found = sorted((b for b in enc if b in low), key=len, reverse=True)
            if not found:
                continue
            asc = [b for b in found if b.isascii()]
            non = [b for b in found if not b.isascii()]
            parts = []
            if asc:
                parts.append(_BEFORE.encode() + b"(?:" + b"|".join(map(re.escape, asc)) + b")"
                             + _AFTER.encode())
            if non:
                parts.append(b"(?:" + b"|".join(map(re.escape, non)) + b")")
            for m in re.finditer(b"|".join(parts), low):
                yield codec, m.start(), enc[m.group()]

    def in_text(self, text: str) -> list[str]:
        if self.text is None or not text:
            return []
        return [self.lookup.get(m.group().lower(), m.group()) for m in self.text.finditer(text)]


def _decoded(elem: DataElement, encodings: list[str]) -> str:
    value = elem.value
    if isinstance(value, bytes):
        from pydicom.charset import decode_bytes

        try:
            return decode_bytes(value, encodings, set()) + "\n" + value.decode("latin-1")
        except Exception:
            return value.decode("latin-1")
    return "\\".join(_strings(value))


def _encodings(ds: Dataset) -> list[str]:
    try:
        return list(convert_encodings(ds.get("SpecificCharacterSet", "ISO_IR 6") or "ISO_IR 6"))
    except Exception:
        return ["iso8859"]


def _segments(data: bytes, ds: Dataset | None) -> list[tuple[int, bytes]]:
    """``data`` less the top-level pixel data value, as ``(offset, bytes)`` pieces.

    Pixel values are not text (OCR checks them) and would give chance matches.
    """
    cuts: list[tuple[int, int]] = []
    if ds is not None:
        for tag in _PIXEL_TAGS:
            raw = ds._dict.get(BaseTag(tag))
            if isinstance(raw, RawDataElement) and raw.value is not None:
                start, n = raw.value_tell, len(raw.value)
                if start and 0 < start < len(data):
                    cuts.append((start, start + n))
    out: list[tuple[int, bytes]] = []
    pos = 0
    for a, b in sorted(cuts):
        if a > pos:
            out.append((pos, data[pos:a]))
        pos = max(pos, b)
    out.append((pos, data[pos:]))
    return out


def find_leaks(output: bytes | Dataset, identifiers: Identifiers, *,
               location: str = "<dataset>") -> list[Leak]:
    """Search one de-identified output for the given identifiers.

    Parameters
    ----------
    output
        The output file's bytes (searched decoded and raw) or a dataset
        (searched decoded only).
    identifiers
        From :func:`collect_identifiers` on the originals.
    location
        How to name the output in each :class:`Leak` (e.g. its path).

    Returns
    -------
    list of Leak
        One per value and element (decoded), plus one per value and encoding
        for a value found only in the raw bytes.
    """
    if not identifiers.values:
        return []
    ds: Dataset | None
    data: bytes | None = None
    if isinstance(output, Dataset):
        ds = output
    else:
        data = output
        ds = _parse(data)
    encodings = _encodings(ds) if ds is not None else []
    # Before the element walk, which converts the raw elements that locate pixel data.
    segments = _segments(data, ds) if data is not None else []
    matcher = _Matcher(identifiers, encodings)
    leaks: list[Leak] = []
    seen: set[tuple[str, str]] = set()
    if ds is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for path, elem in _elements(ds):
                if elem.VR == "SQ" or int(elem.tag) in _PIXEL_TAGS:
                    continue
                try:
                    text = _decoded(elem, encodings)
                except Exception:
                    continue
                for v in matcher.in_text(text):
                    if (v, path) not in seen:
                        seen.add((v, path))
                        leaks.append(Leak(location, identifiers.values.get(v, "value"), path,
                                          "decoded", v))
    if data is not None:
        found = {v for v, _ in seen}
        raw_seen: set[str] = set()
        for offset, piece in segments:
            for codec, at, v in matcher.in_bytes(piece):
                if v in found or v in raw_seen:
                    continue
                raw_seen.add(v)
                leaks.append(Leak(location, identifiers.values.get(v, "value"),
                                  f"raw bytes @ {offset + at}", codec, v))
    return leaks


def _parse(data: bytes) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception:
            return None


# -- pixels --------------------------------------------------------------------
def pixel_risk(ds: Dataset) -> bool:
    """Whether the pixels of ``ds`` may carry burned-in text and should be OCRed."""
    if "PixelData" not in ds:
        return False
    if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
        return True
    return str(ds.get("Modality", "") or "").upper() in RISK_MODALITIES


def ocr_engine() -> Any | None:
    """The OCR engine of :mod:`mida.deid.pixels` if it is installed and usable, else None.

    An engine either reads text (``words(frame) -> list[str]``: the words
    are matched against the identifiers) or only locates it (``detect(frame)
    -> list[WordBox]``, as :class:`mida.deid.pixels.TesseractOCR`, which
    keeps no text: then any plausible word of :data:`OCR_MIN_CHARS` or more
    characters left in a burned-in-risk output counts as a ``pixel_text``
    leak, since the pixel cleaner blanks all text it detects).
    """
    try:
        pixels = importlib.import_module("mida.deid.pixels")
    except ImportError:
        return None
    cls = getattr(pixels, "TesseractOCR", None)
    if cls is None:
        return None
    try:
        engine = cls()
        available = getattr(engine, "is_available", None)
        if callable(available) and not available():
            return None
    except Exception:
        return None
    if callable(getattr(engine, "words", None)) or callable(getattr(engine, "detect", None)):
        return engine
    return None


OCR_MIN_CHARS = 3
"""Shortest word located by a text-less OCR engine that counts as left-over text."""
OCR_MIN_CONFIDENCE = 50.0
"""Lowest OCR confidence (0-100) of such a word."""


def _grey(frame: Any, photometric: str) -> Any:
    try:
        to_grey8 = importlib.import_module("mida.deid.pixels").to_grey8
    except (ImportError, AttributeError):
        import numpy as np

        arr = np.asarray(frame, dtype=np.float64)
        if arr.ndim == 3:
            arr = arr.mean(axis=2)
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) * (255.0 / (hi - lo or 1.0))).astype(np.uint8)
    return to_grey8(frame, photometric)


def _ocr_leaks(ds: Dataset, engine: Any, matcher: _Matcher, ids: Identifiers,
               location: str) -> list[Leak]:
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = np.asarray(ds.pixel_array)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    reads_text = callable(getattr(engine, "words", None))
    leaks: list[Leak] = []
    for i, frame in enumerate(arr):
        if reads_text:
            text = " ".join(str(w) for w in engine.words(frame))
            for v in dict.fromkeys(matcher.in_text(text)):
                leaks.append(Leak(location, ids.values.get(v, "value"), f"PixelData frame {i}",
                                  "ocr", v))
            continue
        for w in engine.detect(_grey(frame, photometric)):
            plausible = getattr(w, "plausible", lambda: True)()
            if w.chars >= OCR_MIN_CHARS and w.confidence >= OCR_MIN_CONFIDENCE and plausible:
                # The engine keeps no text: the "value" is a placeholder of the word's length.
                leaks.append(Leak(location, "pixel_text",
                                  f"PixelData frame {i} box {tuple(w.box)}", "ocr",
                                  "?" * w.chars))
    return leaks


# -- files ---------------------------------------------------------------------
def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for root in paths:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    yield p


def _looks_dicom(data: bytes) -> bool:
    return data[128:132] == b"DICM" or (len(data) > 8 and data[:2] in (b"\x08\x00", b"\x02\x00"))


def verify_pair(original_paths: Iterable[Path], deidentified_paths: Iterable[Path]) -> VerifyReport:
    """Check every de-identified file against the identifiers of all originals.

    Parameters
    ----------
    original_paths
        Files or folders holding the originals (non-DICOM files are skipped).
    deidentified_paths
        Files or folders holding the outputs to check.

    Returns
    -------
    VerifyReport
        Leaks (masked), counts, and which burned-in-risk images were or were
        not OCRed. Outputs that are not DICOM are listed as unreadable and
        still searched byte by byte.

    Raises
    ------
    DeidError
        If no original is a DICOM file (nothing to search for).
    FileNotFoundError
        If a path does not exist.
    """
    report = VerifyReport()
    ids = Identifiers()
    for p in _files(original_paths):
        data = p.read_bytes()
        ds = _parse(data) if _looks_dicom(data) else None
        if ds is None or not len(ds):
            continue
        report.originals += 1
        ids.update(collect_identifiers(ds))
    if not report.originals:
        # Zero identifiers would make every output pass: refuse instead.
        raise DeidError("no DICOM file found among the originals; point the verifier at the "
                        "files that were de-identified")
    report.identifiers = ids.counts()
    engine = ocr_engine()
    report.ocr = type(engine).__name__ if engine is not None else "unavailable"
    matcher = _Matcher(ids)
    for p in _files(deidentified_paths):
        data = p.read_bytes()
        ds = _parse(data) if _looks_dicom(data) else None
        if ds is None:
            report.unreadable.append(str(p))
            report.leaks += find_leaks(data, ids, location=str(p))
            continue
        report.outputs += 1
        report.leaks += find_leaks(data, ids, location=str(p))
        if pixel_risk(ds):
            if engine is None:
                report.pixels_unchecked.append(str(p))
                continue
            try:
                report.leaks += _ocr_leaks(ds, engine, matcher, ids, str(p))
                report.pixels_checked.append(str(p))
            except Exception:
                report.pixels_unchecked.append(str(p))
    return report


__all__ = [
    "GENERIC",
    "MIN_LEN",
    "MIN_LEN_CJK",
    "OCR_MIN_CHARS",
    "OCR_MIN_CONFIDENCE",
    "RISK_MODALITIES",
    "Identifiers",
    "Leak",
    "VerifyReport",
    "collect_identifiers",
    "find_leaks",
    "ocr_engine",
    "pixel_risk",
    "verify_pair",
]
