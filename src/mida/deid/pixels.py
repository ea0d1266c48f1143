"""Burned-in pixel PHI: region rules, OCR detection and blanking.

Ultrasound, secondary capture and some radiographs carry patient names, IDs
and dates drawn into the pixels, where no header de-identifier reaches them.
This module removes them in two steps, as item *Clean Pixel Data* of `PS3.15
Annex E <https://dicom.nema.org/medical/dicom/current/output/chtml/part15/chapter_E.html>`_
asks:

1. **Region rules** (:class:`PixelRule`, shipped in
   ``mida/deid/data/pixel_rules.yaml``), in the manner of CTP's
   DicomPixelAnonymizer script: a device known to write text at fixed places
   gets those rectangles blanked. Rules match on the *original* header, which
   the caller captures with :func:`header_facts` before de-identification
   removes Manufacturer and the like.
2. **OCR** (:class:`TesseractOCR`, the Debian ``tesseract-ocr`` CLI with
   ``eng`` and ``chi_tra``) on every frame; every word box with real text is
   blanked, and OCR runs again until a pass finds nothing.

:class:`PixelCleaner` decodes every frame (multi-frame and compressed
included), blanks, and writes the pixels back. Native (uncompressed) pixel
data is edited in place in its own byte layout, so every pixel outside a
blanked rectangle stays bit-identical. Compressed pixel data is decoded,
blanked and re-encoded with the same lossless transfer syntax when pydicom can
(verified by decoding it again), otherwise stored as Explicit VR Little
Endian, which :attr:`PixelReport.transfer_syntax_changed` records. Anything
that cannot be processed raises :class:`~mida.errors.QuarantineError`: an
image never passes through uncleaned.

Recognised text is never logged, stored or put in a message: OCR results
keep only boxes, confidences and character counts.

Examples
--------
Rules alone (no OCR) on a small synthetic image:

>>> import numpy as np
>>> from pydicom.dataset import Dataset, FileMetaDataset
>>> from pydicom.uid import ExplicitVRLittleEndian
>>> ds = Dataset()
>>> ds.file_meta = FileMetaDataset()
>>> ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
>>> ds.Modality, ds.Manufacturer = "US", "ACME"
>>> ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 4, 1
>>> ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
>>> ds.PhotometricInterpretation = "MONOCHROME2"
>>> ds.PixelData = bytes(range(1, 17))
>>> rules = PixelRuleSet(1, "doc", (PixelRule("top", blank=((0, 0, 1, 4),),
...                                 Manufacturer="^ACME$"),))
>>> report = PixelCleaner(rules, ocr=None).clean(ds, header_facts(ds))
>>> report.rules_applied, report.regions_blanked
(('top',), 1)
>>> list(ds.PixelData[:6])
[0, 0, 0, 0, 5, 6]
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypedDict

import numpy as np
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from mida.errors import ConfigError, QuarantineError, QuarantineReason

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""A rectangle ``(row0, col0, row1, col1)`` in pixels; ``row1``/``col1`` exclusive."""

OCR_MODALITIES = frozenset({"US", "SC", "DX", "XA", "OT", "XC", "ES", "GM"})
"""Modalities whose every frame is OCRed (Defined Terms of PS3.3 C.7.3.1.1.1)."""

RULES_FILE = "pixel_rules.yaml"

# Lossless syntaxes pydicom 3 can encode; the result is verified by decoding.
_REENCODABLE = frozenset({RLELossless, JPEG2000Lossless, JPEGLSLossless})
_LOSSY_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)
_TEXT_CHAR = re.compile(r"[0-9A-Za-z\u3400-\u9fff\uf900-\ufaff]")


# --------------------------------------------------------------------------- header facts


class HeaderFacts(TypedDict, total=False):
    """Attributes of the original header that rules match on.

    Device and geometry attributes only: nothing here identifies a patient.
    """

    Modality: str
    Manufacturer: str
    ManufacturerModelName: str
    Rows: int
    Columns: int
    ImageType: list[str]
    BurnedInAnnotation: str


def header_facts(ds: Dataset) -> HeaderFacts:
    """Capture what pixel rules match on, before the header is de-identified.

    Parameters
    ----------
    ds
        The original dataset, as received.

    Returns
    -------
    HeaderFacts
        ``Modality``, ``Manufacturer``, ``ManufacturerModelName``, ``Rows``,
        ``Columns``, ``ImageType`` and ``BurnedInAnnotation`` where present.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.Modality, ds.Rows, ds.ImageType = "US", 480, ["ORIGINAL", "PRIMARY"]
    >>> header_facts(ds)
    {'Modality': 'US', 'Rows': 480, 'ImageType': ['ORIGINAL', 'PRIMARY']}
    """
    facts: HeaderFacts = {}
    for key in ("Modality", "Manufacturer", "ManufacturerModelName", "BurnedInAnnotation"):
        value = ds.get(key)
        if value not in (None, ""):
            facts[key] = str(value).strip()
    for key in ("Rows", "Columns"):
        value = ds.get(key)
        if value is not None:
            facts[key] = int(value)  # type: ignore[literal-required]
    image_type = ds.get("ImageType")
    if image_type:
        values = [image_type] if isinstance(image_type, str) else list(image_type)
        facts["ImageType"] = [str(v).strip() for v in values]
    return facts


def requires_ocr(facts: Mapping[str, Any]) -> bool:
    """Whether an image's pixels may carry text: OCR every frame if so.

    True for ``BurnedInAnnotation`` YES and for :data:`OCR_MODALITIES`.

    Examples
    --------
    >>> requires_ocr({"Modality": "US"}), requires_ocr({"Modality": "CT"})
    (True, False)
    """
    if str(facts.get("BurnedInAnnotation", "")).upper() == "YES":
        return True
    return str(facts.get("Modality", "")).upper() in OCR_MODALITIES


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class PixelRule:
    """Rectangles to blank on images from one kind of device.

    Attributes
    ----------
    name
        Stable identifier, recorded in :attr:`PixelReport.rules_applied`.
    blank
        Rectangles ``(row0, col0, row1, col1)``, clipped to the image.
    Modality
        Exact Defined Term, or None for any.
    Manufacturer, ManufacturerModelName
        Regular expressions (``re.search``), or None for any.
    Rows, Columns
        Exact sizes, or None for any.
    ImageType
        Values that must all appear in ImageType.
    description
        Free text for people.
    """

    name: str
    blank: tuple[Box, ...]
    Modality: str | None = None
    Manufacturer: str | None = None
    ManufacturerModelName: str | None = None
    Rows: int | None = None
    Columns: int | None = None
    ImageType: tuple[str, ...] = ()
    description: str = ""

    def matches(self, facts: Mapping[str, Any]) -> bool:
        """Whether the rule applies to an image with these original header facts."""
        if self.Modality is not None and facts.get("Modality") != self.Modality:
            return False
        for key, pattern in (
            ("Manufacturer", self.Manufacturer),
            ("ManufacturerModelName", self.ManufacturerModelName),
        ):
            if pattern is not None and not re.search(pattern, str(facts.get(key, ""))):
                return False
        if self.Rows is not None and facts.get("Rows") != self.Rows:
            return False
        if self.Columns is not None and facts.get("Columns") != self.Columns:
            return False
        present = set(facts.get("ImageType") or ())
        return all(value in present for value in self.ImageType)


@dataclass(frozen=True)
class PixelRuleSet:
    """A versioned list of :class:`PixelRule`."""

    version: int
    name: str
    rules: tuple[PixelRule, ...]

    def matching(self, facts: Mapping[str, Any]) -> tuple[PixelRule, ...]:
        """Return the rules that apply to these original header facts, in file order."""
        return tuple(rule for rule in self.rules if rule.matches(facts))


_MATCH_KEYS = {"Modality", "Manufacturer", "ManufacturerModelName", "Rows", "Columns", "ImageType"}


def _rule_from(doc: Any, where: str) -> PixelRule:
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ConfigError(f"{where}: each rule needs a 'name' string")
    name = doc["name"]
    match = doc.get("match") or {}
    if not isinstance(match, dict) or set(match) - _MATCH_KEYS:
        raise ConfigError(
            f"{where}: rule {name!r}: 'match' keys must be among {sorted(_MATCH_KEYS)}"
        )
    boxes: list[Box] = []
    for box in doc.get("blank") or []:
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int) and v >= 0 for v in box)
            or box[0] >= box[2]
            or box[1] >= box[3]
        ):
            raise ConfigError(
                f"{where}: rule {name!r}: each 'blank' entry must be [row0, col0, row1, col1] "
                "with 0 <= row0 < row1 and 0 <= col0 < col1"
            )
        boxes.append((box[0], box[1], box[2], box[3]))
    if not boxes:
        raise ConfigError(f"{where}: rule {name!r} has no 'blank' rectangles")
    for key in ("Manufacturer", "ManufacturerModelName"):
        if key in match:
            try:
                re.compile(str(match[key]))
            except re.error as exc:
                raise ConfigError(f"{where}: rule {name!r}: bad {key} pattern: {exc}") from exc
    image_type = match.get("ImageType") or []
    return PixelRule(
        name=name,
        blank=tuple(boxes),
        Modality=str(match["Modality"]) if "Modality" in match else None,
        Manufacturer=str(match["Manufacturer"]) if "Manufacturer" in match else None,
        ManufacturerModelName=(
            str(match["ManufacturerModelName"]) if "ManufacturerModelName" in match else None
        ),
        Rows=int(match["Rows"]) if "Rows" in match else None,
        Columns=int(match["Columns"]) if "Columns" in match else None,
        ImageType=tuple(
            str(v) for v in ([image_type] if isinstance(image_type, str) else image_type)
        ),
        description=str(doc.get("description", "")),
    )


def load_pixel_rules(path: Path | str | None = None) -> PixelRuleSet:
    """Load pixel rules from YAML: the shipped file when `path` is None.

    Parameters
    ----------
    path
        A rules file in the format documented in ``mida/deid/data/pixel_rules.yaml``.

    Returns
    -------
    PixelRuleSet

    Raises
    ------
    ConfigError
        If the file is not valid YAML or a rule is malformed; the message
        names the file and the rule.

    Examples
    --------
    >>> rules = load_pixel_rules()
    >>> [r.name for r in rules.matching({"Modality": "US", "Manufacturer": "MIDA Synthetic",
    ...  "ManufacturerModelName": "Sample US", "Rows": 480, "Columns": 640})]
    ['mida-sample-us']
    """
    if path is None:
        where = f"mida/deid/data/{RULES_FILE}"
        text = resources.files("mida.deid").joinpath("data", RULES_FILE).read_text("utf-8")
    else:
        where = str(path)
        text = Path(path).read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
        raise ConfigError(f"{where}: needs an integer 'version' and a 'rules' list")
    rules = tuple(_rule_from(r, where) for r in doc.get("rules") or [])
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: rule names must be unique")
    return PixelRuleSet(doc["version"], str(doc.get("name", where)), rules)


# --------------------------------------------------------------------------- OCR


@dataclass(frozen=True)
class WordBox:
    """One word found by OCR. The text itself is deliberately not kept.

    Attributes
    ----------
    box
        ``(row0, col0, row1, col1)`` in frame pixels.
    confidence
        The engine's confidence, 0-100.
    chars
        Number of letters, digits and CJK ideographs in the word.
    line
        Identifier of the text line the engine put the word on (words of
        one line share it), or -1 when unknown.
    """

    box: Box
    confidence: float
    chars: int
    line: int = -1

    def plausible(self) -> bool:
        """Whether the box has the shape of text rather than of an edge or speckle.

        Speckle and long straight edges are read as short "words" whose boxes
        are only a few pixels high or many characters wide.
        """
        height, width = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return 5 <= height <= 64 and width <= height * (1.2 * self.chars + 2)


class OCREngine(Protocol):
    """What :class:`PixelCleaner` needs from an OCR engine."""

    name: str

    def is_available(self) -> bool:
        """Whether the engine can run here."""
        ...

    def missing_dependencies(self) -> list[str]:
        """What is missing, with how to install it; empty when available."""
        ...

    def detect(self, image: np.ndarray) -> list[WordBox]:
        """Return the words in a 2-D ``uint8`` grey image."""
        ...


class TesseractOCR:
    """OCR with the ``tesseract`` command-line program (Debian ``tesseract-ocr``).

    Each frame is piped to ``tesseract stdin - -l eng+chi_tra --psm 11 tsv``
    as a binary PGM, so no pixels are written to disk. ``--psm 11`` (sparse
    text) suits annotation scattered over an image.

    Parameters
    ----------
    binary
        Program name or path.
    languages
        Tesseract language packs (Debian ``tesseract-ocr-<lang>``).
    timeout
        Seconds allowed per frame.
    upscale_below
        Images whose larger side is below this are enlarged 2x first:
        annotation fonts of 10-13 pixels are read far better at twice the size.
    """

    name: str = "tesseract"

    def __init__(
        self,
        binary: str = "tesseract",
        languages: Sequence[str] = ("eng", "chi_tra"),
        *,
        timeout: float = 120.0,
        upscale_below: int = 1200,
    ) -> None:
        self.binary = binary
        self.languages = tuple(languages)
        self.timeout = timeout
        self.upscale_below = upscale_below
        self._missing: list[str] | None = None

    def missing_dependencies(self) -> list[str]:
        """What is missing, with the Debian package that provides it.

        Examples
        --------
        >>> TesseractOCR(binary="/nonexistent/tesseract").missing_dependencies()
        ["program '/nonexistent/tesseract' (apt-get install tesseract-ocr)"]
        """
        if self._missing is None:
            path = shutil.which(self.binary)
            if path is None:
                self._missing = [f"program {self.binary!r} (apt-get install tesseract-ocr)"]
            else:
                try:
                    out = subprocess.run(
                        [path, "--list-langs"], capture_output=True, text=True, timeout=30
                    )
                    have = set(out.stdout.split()) | set(out.stderr.split())
                except (OSError, subprocess.SubprocessError):
                    have = set()
                self._missing = [
                    f"language {lang!r} (apt-get install tesseract-ocr-{lang.replace('_', '-')})"
                    for lang in self.languages
                    if lang not in have
                ]
        return list(self._missing)

    def is_available(self) -> bool:
        """Whether the program and every language pack are installed."""
        return not self.missing_dependencies()

    def detect(self, image: np.ndarray) -> list[WordBox]:
        """Return the word boxes in a 2-D ``uint8`` image.

        Raises
        ------
        QuarantineError
            ``burned_in_text`` if tesseract is missing or fails.
        """
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError("detect() takes a 2-D uint8 image; see to_grey8()")
        scale = 2 if max(image.shape) < self.upscale_below else 1
        if scale > 1:
            image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
        rows, cols = image.shape
        pgm = f"P5 {cols} {rows} 255\n".encode("ascii") + np.ascontiguousarray(image).tobytes()
        cmd = [self.binary, "stdin", "-", "-l", "+".join(self.languages), "--psm", "11", "tsv"]
        # One thread per process: frames are already run in parallel.
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            done = subprocess.run(
                cmd, input=pgm, capture_output=True, timeout=self.timeout, env=env, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise QuarantineError(
                QuarantineReason.BURNED_IN_TEXT,
                f"OCR could not run ({type(exc).__name__}); install tesseract-ocr",
            ) from None
        if done.returncode != 0:
            raise QuarantineError(
                QuarantineReason.BURNED_IN_TEXT, f"OCR failed with exit status {done.returncode}"
            )
        return _parse_tsv(done.stdout.decode("utf-8", "replace"), scale)


OCR_ENGINES: dict[str, Callable[[], OCREngine]] = {TesseractOCR.name: TesseractOCR}
"""OCR engines by name; a new engine registers its factory here."""


def get_ocr_engine(name: str = "tesseract") -> OCREngine:
    """Return a new OCR engine by name (see :data:`OCR_ENGINES`).

    Check :meth:`OCREngine.is_available` before relying on it; a
    :class:`PixelCleaner` given an unavailable engine quarantines every image.

    Raises
    ------
    ConfigError
        If no engine has that name.

    Examples
    --------
    >>> get_ocr_engine().name
    'tesseract'
    """
    try:
        return OCR_ENGINES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown OCR engine {name!r}: choose one of {sorted(OCR_ENGINES)}"
        ) from None


def _parse_tsv(tsv: str, scale: int) -> list[WordBox]:
    words = []
    for line in tsv.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 12 or parts[0] != "5":
            continue
        left, top, width, height = (int(v) for v in parts[6:10])
        chars = len(_TEXT_CHAR.findall(parts[11]))
        if chars == 0:
            continue
        box = (
            top // scale,
            left // scale,
            -(-(top + height) // scale),
            -(-(left + width) // scale),
        )
        line_id = int(parts[2]) * 1_000_000 + int(parts[3]) * 1_000 + int(parts[4])
        words.append(WordBox(box, float(parts[10]), chars, line_id))
    return words


def to_grey8(frame: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    """Turn a decoded frame into the 2-D ``uint8`` image OCR reads.

    Colour is reduced to luma (YBR frames keep their Y channel); other depths
    are stretched linearly from the frame's minimum to its maximum.

    Examples
    --------
    >>> import numpy as np
    >>> to_grey8(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)).tolist()
    [[0, 64], [128, 255]]
    """
    arr = frame
    if arr.ndim == 3:
        if photometric.startswith("YBR"):
            arr = arr[..., 0]
        else:
            arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# --------------------------------------------------------------------------- cleaning


@dataclass(frozen=True)
class PixelReport:
    """What :meth:`PixelCleaner.clean` did to one image.

    Attributes
    ----------
    frames
        Frames decoded and cleaned.
    regions_blanked
        Rectangles blanked, over all frames (rule and OCR).
    ocr_boxes
        Word boxes OCR found and blanked, over all frames and passes.
    transfer_syntax_changed
        True when compressed pixels could not be re-encoded in their own
        syntax and were stored as Explicit VR Little Endian.
    rules_applied
        Names of the matching :class:`PixelRule`.
    rules_version
        Version of the rule set.
    ocr_passes
        OCR passes over every frame (0 when OCR did not run).
    ocr_verified
        True when the last OCR pass over every frame found no text; the
        cleaner then set BurnedInAnnotation to ``NO``.
    TransferSyntaxUID
        The transfer syntax of the pixels written back.
    """

    frames: int
    regions_blanked: int
    ocr_boxes: int
    transfer_syntax_changed: bool
    rules_applied: tuple[str, ...] = ()
    rules_version: int = 0
    ocr_passes: int = 0
    ocr_verified: bool = False
    TransferSyntaxUID: str = ""


@dataclass
class _Pixels:
    """A writable view of native pixel data: shape (frames, rows, cols, samples)."""

    buffer: bytearray
    frames: np.ndarray
    photometric: str
    blank_value: tuple[int, ...]
    to_rgb: Callable[[np.ndarray], np.ndarray] | None = None
    swapped_pairs: bool = False

    def output(self) -> bytes:
        """The pixel bytes to write back, in the element's own layout."""
        return bytes(_swap_pairs(self.buffer) if self.swapped_pairs else self.buffer)


def _quarantine(reason: QuarantineReason, message: str) -> QuarantineError:
    return QuarantineError(reason, message)


def _native_view(ds: Dataset, *, little_endian: bool = True) -> _Pixels:
    """View native PixelData as (frames, rows, cols, samples), writable.

    Big endian data is viewed in its own byte order; 8-bit pixels in an OW
    element of a big endian file are stored swapped in pairs (PS3.5 8.1.1),
    so they are swapped for the view and back by :meth:`_Pixels.output`.
    """
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1))
        bits = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored", bits))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        photometric = str(ds.PhotometricInterpretation).strip()
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise _quarantine(
            QuarantineReason.PIXEL_UNDECODABLE, "the Image Pixel module is incomplete"
        ) from None
    if bits not in (8, 16, 32) or photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        raise _quarantine(
            QuarantineReason.PIXEL_UNDECODABLE,
            f"pixel layout not supported for cleaning (BitsAllocated {bits}, {photometric})",
        )
    dtype = np.dtype(f"{'<' if little_endian else '>'}{'i' if signed else 'u'}{bits // 8}")
    need = frames * rows * cols * spp * dtype.itemsize
    buffer = bytearray(ds.PixelData)
    swapped = not little_endian and bits == 8 and ds["PixelData"].VR == "OW"
    if swapped:
        if len(buffer) % 2:
            raise _quarantine(QuarantineReason.PIXEL_UNDECODABLE, "odd-length OW pixel data")
        buffer = _swap_pairs(buffer)
    if len(buffer) < need or rows < 1 or cols < 1:
        raise _quarantine(QuarantineReason.PIXEL_UNDECODABLE, "pixel data is shorter than declared")
    flat = np.frombuffer(buffer, dtype=dtype, count=need // dtype.itemsize)
    if spp > 1 and int(ds.get("PlanarConfiguration", 0)) == 1:
        view = flat.reshape(frames, spp, rows, cols).transpose(0, 2, 3, 1)
    else:
        view = flat.reshape(frames, rows, cols, spp)
    if photometric == "MONOCHROME1":
        blank: tuple[int, ...] = ((1 << stored) - 1 if not signed else (1 << (stored - 1)) - 1,)
    elif photometric == "MONOCHROME2" and signed:
        blank = (-(1 << (stored - 1)),)
    elif photometric == "YBR_FULL" and spp == 3:
        blank = (0, 1 << (stored - 1), 1 << (stored - 1))
    else:
        blank = (0,) * spp
    to_rgb = None
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        def to_rgb(indices: np.ndarray) -> np.ndarray:
            return np.asarray(apply_color_lut(indices, ds))

        try:
            to_rgb(view[0, :1, :1, 0])
        except Exception:  # pydicom raises many types for a bad LUT
            raise _quarantine(
                QuarantineReason.PIXEL_UNDECODABLE, "the palette colour lookup table is unusable"
            ) from None
    return _Pixels(buffer, view, photometric, blank, to_rgb, swapped)


def _swap_pairs(data: bytearray) -> bytearray:
    return bytearray(np.frombuffer(bytes(data), np.uint8).reshape(-1, 2)[:, ::-1].tobytes())


CLEAN_PIXEL_DATA_CODE = ("113101", "DCM", "Clean Pixel Data Option")
"""CID 7050 code recorded in De-identification Method Code Sequence once pixels are cleaned."""


def record_clean_pixel_data(ds: Dataset) -> None:
    """Add the Clean Pixel Data code to (0012,0064) of `ds`, once.

    Examples
    --------
    >>> ds = Dataset()
    >>> record_clean_pixel_data(ds); record_clean_pixel_data(ds)
    >>> [(i.CodeValue, i.CodeMeaning) for i in ds.DeidentificationMethodCodeSequence]
    [('113101', 'Clean Pixel Data Option')]
    """
    value, scheme, meaning = CLEAN_PIXEL_DATA_CODE
    items = ds.get("DeidentificationMethodCodeSequence")
    if items is None:
        ds.DeidentificationMethodCodeSequence = []
        items = ds.DeidentificationMethodCodeSequence
    if any(getattr(i, "CodeValue", None) == value for i in items):
        return
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    items.append(item)


class PixelCleaner:
    """Blank burned-in text: region rules first, then OCR on every frame.

    Parameters
    ----------
    rules
        Region rules, e.g. :func:`load_pixel_rules`.
    ocr
        The OCR engine, or None to apply rules only (BurnedInAnnotation is
        then left as it is). An engine that is not available makes
        :meth:`clean` raise, so a missing tesseract never lets text through.
    min_confidence
        OCR words below this confidence (0-100) are not text on their own.
    min_chars
        OCR words with fewer letters, digits or CJK ideographs are not text
        on their own.
    context_confidence
        Confidence from which a word on the same line as text is text too.
        0 by default: next to a name, a low-confidence word is most often
        an ID or a date in a font tesseract reads badly, and blanking a
        false one costs little.
    long_word
        Words of at least this many characters are text whatever their
        confidence: tesseract reads IDs, dates and phone numbers in small
        bitmap fonts with confidences near 0, yet finds their boxes.
    pad
        Pixels added around each OCR word box.
    max_passes
        OCR passes before giving up; the last must find nothing.
    workers
        Frames OCRed in parallel (one tesseract process each).
    """

    def __init__(
        self,
        rules: PixelRuleSet,
        ocr: OCREngine | None,
        *,
        min_confidence: float = 60.0,
        min_chars: int = 2,
        context_confidence: float = 0.0,
        long_word: int = 6,
        pad: int = 3,
        max_passes: int = 4,
        workers: int | None = None,
    ) -> None:
        self.rules = rules
        self.ocr = ocr
        self.min_confidence = min_confidence
        self.min_chars = min_chars
        self.context_confidence = context_confidence
        self.long_word = long_word
        self.pad = pad
        self.max_passes = max_passes
        self.workers = workers or min(4, os.cpu_count() or 1)

    def clean(self, ds: Dataset, facts: Mapping[str, Any]) -> PixelReport:
        """Blank burned-in text in `ds` in place.

        Parameters
        ----------
        ds
            The dataset; its header may already be de-identified.
        facts
            :func:`header_facts` of the original header.

        Returns
        -------
        PixelReport

        Raises
        ------
        QuarantineError
            ``pixel_undecodable`` if the pixels cannot be decoded or written
            back; ``burned_in_text`` if OCR is unavailable or fails, or text
            is still found after `max_passes` passes. `ds` may then hold
            decompressed pixels: quarantine the original file, not `ds`.

        Notes
        -----
        Only the *Pixel Data* element is cleaned. Overlays (60xx) are removed
        by the header profile (Clean Graphics); *Float Pixel Data* and
        *Double Float Pixel Data* are not handled: a dataset without *Pixel
        Data* is reported with ``frames == 0``.
        """
        if self.ocr is not None and not self.ocr.is_available():
            raise _quarantine(
                QuarantineReason.BURNED_IN_TEXT,
                f"OCR engine {self.ocr.name!r} is unavailable: "
                + "; ".join(self.ocr.missing_dependencies()),
            )
        matched = self.rules.matching(facts)
        if "PixelData" not in ds:
            return PixelReport(0, 0, 0, False, tuple(r.name for r in matched), self.rules.version)
        meta = getattr(ds, "file_meta", None)
        original_ts = UID(
            meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
            if meta
            else ExplicitVRLittleEndian
        )
        # Native data (deflated included: pydicom inflated it on reading) is
        # edited in its own byte order; encapsulated data is decoded first.
        compressed = original_ts.is_compressed
        if compressed:
            try:
                ds.decompress(generate_instance_uid=False)
            except Exception:  # codec errors come in many types
                raise _quarantine(
                    QuarantineReason.PIXEL_UNDECODABLE,
                    "the compressed pixel data cannot be decoded",
                ) from None
        px = _native_view(ds, little_endian=compressed or original_ts.is_little_endian)
        n_frames = px.frames.shape[0]
        regions = 0
        for rule in matched:
            for box in rule.blank:
                regions += n_frames * self._blank(px, range(n_frames), box)
        ocr_boxes, passes, verified = 0, 0, False
        if self.ocr is not None:
            todo = list(range(n_frames))
            while passes < self.max_passes:
                passes += 1
                found = self._ocr_pass(px, todo)
                if not any(found.values()):
                    verified = True
                    break
                for index, boxes in found.items():
                    for word in boxes:
                        regions += self._blank(px, (index,), self._padded(word.box))
                        ocr_boxes += 1
                # Only frames that had confident text can have text left: a pass
                # that found only uncertain words (blanked all the same) ends it.
                todo = [i for i, boxes in found.items() if any(map(self.confident, boxes))]
                if not todo:
                    verified = True
                    break
            logger.info(
                "pixel OCR: %d frames, %d passes, %d word boxes blanked",
                n_frames,
                passes,
                ocr_boxes,
            )
            if not verified:
                raise _quarantine(
                    QuarantineReason.BURNED_IN_TEXT,
                    f"text was still detected after {passes} OCR passes",
                )
        ds.PixelData = px.output()
        changed = self._write_back(ds, original_ts) if compressed else False
        if verified:
            ds.BurnedInAnnotation = "NO"
        record_clean_pixel_data(ds)
        return PixelReport(
            frames=n_frames,
            regions_blanked=regions,
            ocr_boxes=ocr_boxes,
            transfer_syntax_changed=changed,
            rules_applied=tuple(r.name for r in matched),
            rules_version=self.rules.version,
            ocr_passes=passes,
            ocr_verified=verified,
            TransferSyntaxUID=str(ds.file_meta.TransferSyntaxUID if compressed else original_ts),
        )

    def confident(self, word: WordBox) -> bool:
        """Whether OCR is sure of a word: enough characters, confidence and text shape."""
        return (
            word.chars >= self.min_chars
            and word.confidence >= self.min_confidence
            and word.plausible()
        )

    def text_words(self, words: Sequence[WordBox]) -> list[WordBox]:
        """Select the words to blank from one frame's OCR result.

        A word is text when it has at least `min_chars` characters, a
        confidence of at least `min_confidence` and the shape of text
        (:meth:`WordBox.plausible`), or at least `long_word` characters at any
        confidence. Words on the same line as text are text
        too when their confidence reaches `context_confidence`: names in
        unusual fonts are often read with low confidence next to a confident
        ID. Isolated low-confidence words are speckle read as letters, and
        are left alone.
        """
        sure = [
            w
            for w in words
            if w.plausible()
            and (
                (w.chars >= self.min_chars and w.confidence >= self.min_confidence)
                or w.chars >= self.long_word
            )
        ]
        lines = {w.line for w in sure if w.line >= 0}
        context = [
            w
            for w in words
            if w not in sure
            and w.line in lines
            and w.confidence >= self.context_confidence
            and w.plausible()
        ]
        return sure + context

    def _padded(self, box: Box) -> Box:
        p = self.pad
        return (max(box[0] - p, 0), max(box[1] - p, 0), box[2] + p, box[3] + p)

    @staticmethod
    def _blank(px: _Pixels, frames: Sequence[int] | range, box: Box) -> int:
        """Blank `box` (clipped) on `frames`; return 1 if anything was inside the image."""
        _, rows, cols, _ = px.frames.shape
        r0, c0, r1, c1 = max(box[0], 0), max(box[1], 0), min(box[2], rows), min(box[3], cols)
        if r0 >= r1 or c0 >= c1:
            return 0
        for index in frames:
            px.frames[index, r0:r1, c0:c1, :] = np.asarray(px.blank_value, dtype=px.frames.dtype)
        return 1

    def _grey(self, px: _Pixels, index: int) -> np.ndarray:
        frame = px.frames[index]
        if px.to_rgb is not None:
            return to_grey8(px.to_rgb(frame[..., 0]), "RGB")
        return to_grey8(frame[..., 0] if frame.shape[-1] == 1 else frame, px.photometric)

    def _ocr_pass(self, px: _Pixels, frames: list[int]) -> dict[int, list[WordBox]]:
        assert self.ocr is not None
        ocr = self.ocr

        def run(index: int) -> list[WordBox]:
            return self.text_words(ocr.detect(self._grey(px, index)))

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return dict(zip(frames, pool.map(run, frames), strict=True))

    @staticmethod
    def _write_back(ds: Dataset, original_ts: UID) -> bool:
        """Re-encode decompressed pixels in `original_ts` if lossless and verified.

        Returns True when the transfer syntax had to change.
        """
        if original_ts in _LOSSY_SYNTAXES:
            ds.LossyImageCompression = "01"
        if original_ts not in _REENCODABLE:
            return True
        native = np.copy(ds.pixel_array)
        keep = {
            key: ds[key]
            for key in ("PixelData", "PhotometricInterpretation", "PlanarConfiguration")
            if key in ds
        }
        try:
            ds.compress(original_ts, generate_instance_uid=False)
            ok = bool(np.array_equal(ds.pixel_array, native))
        except Exception:  # encoder errors come in many types
            ok = False
        if ok:
            return False
        for key, elem in keep.items():
            ds[key] = elem
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return True


__all__ = [
    "CLEAN_PIXEL_DATA_CODE",
    "OCR_ENGINES",
    "OCR_MODALITIES",
    "Box",
    "HeaderFacts",
    "OCREngine",
    "PixelCleaner",
    "PixelReport",
    "PixelRule",
    "PixelRuleSet",
    "TesseractOCR",
    "WordBox",
    "get_ocr_engine",
    "header_facts",
    "load_pixel_rules",
    "record_clean_pixel_data",
    "requires_ocr",
    "to_grey8",
]
