"""Normalised acquisition parameters of a series, from its stored headers (family ``acq``).

Read from the catalog's DICOM JSON of every instance of the series (classic
and enhanced multi-frame IODs alike, see :mod:`mida.features.headers`), so no
pixel data is read. Each name has one unit and one type (number or word); the
table in ``docs/features.md`` defines every one.

Rules that apply to all of them:

* **Missing means no row.** An attribute the headers do not carry gives no
  value (never a fake 0); only ``contrast`` is 0 when nothing says a contrast
  agent was used, because an absent Contrast/Bolus module is itself the
  record that none was.
* **Varying values.** When the instances (or frames) of a series disagree,
  a number is stored as the median, a word as the most common one (ties:
  alphabetical first), and ``<name>_varies`` = 1 is added (it is absent when
  the value is constant). Tube current under dose modulation is the usual
  case.
* **Units** are those of the standard (kV, mA, mAs, ms, mm), except the
  magnetic field, normalised to tesla (:func:`field_strength_tesla`).

Examples
--------
>>> body_part("abd_pelvis")
'ABDOMENPELVIS'
>>> field_strength_tesla(15000)
1.5
>>> mr_sequence(["GR", "IR"])
'GR+IR'
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mida.features import headers as h
from mida.features.models import FamilyResult, FeatureValue, num, text

# ----------------------------------------------------------------- normalisers

#: Non-standard spellings of Body Part Examined mapped to PS3.16 Annex L terms.
#: Keys and values have separators removed (``ABD_PELVIS`` -> ``ABDPELVIS``).
BODY_PART_SYNONYMS = {
    "ABD": "ABDOMEN", "ABDO": "ABDOMEN", "ABDOMINAL": "ABDOMEN", "BAUCH": "ABDOMEN",
    "THORAX": "CHEST", "TORAX": "CHEST", "THORACIC": "CHEST",
    "ABDPELVIS": "ABDOMENPELVIS", "ABDOMENANDPELVIS": "ABDOMENPELVIS", "ABDPEL": "ABDOMENPELVIS",
    "ABDOPELVIS": "ABDOMENPELVIS",
    "CHESTABD": "CHESTABDOMEN", "THORAXABDOMEN": "CHESTABDOMEN",
    "CHESTABDOMENPELVIS": "CHESTABDPELVIS", "THORAXABDOMENPELVIS": "CHESTABDPELVIS",
    "CAP": "CHESTABDPELVIS", "TAP": "CHESTABDPELVIS",
    "HEADANDNECK": "HEADNECK", "HN": "HEADNECK",
    "KOPF": "HEAD", "SCHAEDEL": "HEAD", "SCHADEL": "HEAD", "HALS": "NECK", "BECKEN": "PELVIS",
    "CERVICALSPINE": "CSPINE", "THORACICSPINE": "TSPINE", "LUMBARSPINE": "LSPINE",
    "WB": "WHOLEBODY", "TOTALBODY": "WHOLEBODY", "EXTREMITIES": "EXTREMITY",
    "BREASTS": "BREAST", "MAMMA": "BREAST",
}  # fmt: skip

#: Manufacturer strings mapped to one short vendor name (prefix match on the upper-cased value).
MANUFACTURERS = (
    ("SIEMENS", "SIEMENS"), ("GE ", "GE"), ("GE_", "GE"), ("GEMS", "GE"),
    ("GENERAL ELECTRIC", "GE"), ("G.E.", "GE"), ("PHILIPS", "PHILIPS"), ("TOSHIBA", "TOSHIBA"),
    ("CANON", "CANON"), ("HITACHI", "HITACHI"), ("FUJIFILM", "FUJIFILM"),
    ("UNITED IMAGING", "UIH"), ("UIH", "UIH"), ("AGFA", "AGFA"), ("CARESTREAM", "CARESTREAM"),
    ("HOLOGIC", "HOLOGIC"), ("ESAOTE", "ESAOTE"), ("SAMSUNG", "SAMSUNG"),
    ("NEUSOFT", "NEUSOFT"), ("KONICA", "KONICA MINOLTA"), ("BRUKER", "BRUKER"),
)  # fmt: skip

#: Scanning Sequence (0018,0020) Defined Terms, in the order codes are joined.
SEQUENCE_ORDER = ("SE", "GR", "IR", "EP", "RM")
#: Sequence Variant (0018,0021) Defined Terms, in the order codes are joined.
VARIANT_ORDER = ("SK", "MTC", "SS", "TRSS", "SP", "MP", "OSP", "NONE")


def _squash(value: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", value.upper())


def body_part(value: str | None) -> str | None:
    """Body Part Examined as a PS3.16 Annex L term: upper case, no separators, synonyms mapped.

    >>> body_part("Chest"), body_part("THORAX"), body_part("C-Spine"), body_part("  ")
    ('CHEST', 'CHEST', 'CSPINE', None)
    """
    if not value:
        return None
    key = _squash(str(value))
    return BODY_PART_SYNONYMS.get(key, key) or None


def manufacturer(value: str | None) -> str | None:
    """A short vendor name: ``SIEMENS``, ``GE``, ``PHILIPS``...; others upper-cased as given.

    >>> manufacturer("GE MEDICAL SYSTEMS"), manufacturer("Philips Medical Systems")
    ('GE', 'PHILIPS')
    """
    if not value or not str(value).strip():
        return None
    v = " ".join(str(value).upper().split())
    for prefix, name in MANUFACTURERS:
        if v.startswith(prefix) or v == prefix.strip():
            return name
    return v


def field_strength_tesla(value: float | None) -> float | None:
    """Magnetic Field Strength (0018,0087) in tesla, whatever unit the vendor wrote.

    The standard says tesla, but some scanners write gauss (``15000`` for
    1.5 T) or millitesla (``500`` for 0.5 T). No magnet in use exceeds 25 T and
    none in clinical use is below 0.01 T, so: values up to 25 are tesla,
    values from 1000 are gauss (divided by 10,000), values in between are
    millitesla (divided by 1,000). Zero or negative gives ``None``.

    >>> field_strength_tesla(3), field_strength_tesla(30000), field_strength_tesla(500)
    (3.0, 3.0, 0.5)
    """
    if value is None or not np.isfinite(value) or value <= 0:
        return None
    v = float(value)
    if v <= 25:
        return round(v, 4)
    if v >= 1000:
        return round(v / 10000, 4)
    return round(v / 1000, 4)


def _ordered(codes: Iterable[str], order: Sequence[str]) -> str | None:
    seen = {str(c).strip().upper() for c in codes if str(c).strip()}
    if not seen:
        return None
    known = [c for c in order if c in seen]
    return "+".join(known + sorted(seen - set(order)))


def mr_sequence(scanning_sequence: Sequence[str] | None = None, *,
                echo_pulse: str | None = None, inversion_recovery: str | None = None,
                echo_planar: str | None = None) -> str | None:
    """The MR sequence family as Scanning Sequence codes joined by ``+`` (``SE``, ``GR+IR``).

    Classic MR images carry Scanning Sequence (0018,0020) itself; enhanced MR
    images say it in three attributes, mapped as: Echo Pulse Sequence
    ``SPIN`` -> SE, ``GRADIENT`` -> GR, ``BOTH`` -> SE+GR; Inversion Recovery
    ``YES`` -> IR; Echo Planar Pulse Sequence ``YES`` -> EP.

    >>> mr_sequence(["IR", "SE"]), mr_sequence(echo_pulse="GRADIENT", echo_planar="YES")
    ('SE+IR', 'GR+EP')
    """
    codes = list(scanning_sequence or [])
    if not codes:
        codes += {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(
            str(echo_pulse or "").upper(), [])
        if str(inversion_recovery or "").upper() == "YES":
            codes.append("IR")
        if str(echo_planar or "").upper() == "YES":
            codes.append("EP")
    return _ordered(codes, SEQUENCE_ORDER)


# ----------------------------------------------------------------- per instance

def _nums(js: dict[str, Any], keyword: str, scale: float = 1.0) -> list[float]:
    """One number per frame occurrence (first value of each), scaled."""
    out = []
    for vals in h.lookup(js, keyword):
        f = h.floats(vals[:1])
        if f is not None and np.isfinite(f[0]):
            out.append(f[0] * scale)
    return out


def _words(js: dict[str, Any], keyword: str, join: str | None = None) -> list[str]:
    """One word per occurrence: the first value, or all values joined by ``join``."""
    out = []
    for vals in h.lookup(js, keyword):
        parts = [str(v).strip() for v in vals if v is not None and str(v).strip()]
        if parts:
            out.append(join.join(parts) if join is not None else parts[0])
    return out


def _first_of(*candidates: list[float]) -> list[float]:
    return next((c for c in candidates if c), [])


def _contrast(js: dict[str, Any]) -> tuple[int, str | None]:
    """(1/0, agent name) from the Contrast/Bolus module or Enhanced Contrast/Bolus module."""
    agent = next(iter(_words(js, "ContrastBolusAgent")), None)
    coded = next((str(h.first(it, "CodeMeaning")).strip()
                  for it in h.items(js, "ContrastBolusAgentSequence")
                  if h.first(it, "CodeMeaning")), None)
    usage = h.items(js, "ContrastBolusUsageSequence")
    administered = [str(h.first(it, "ContrastBolusAgentAdministered") or "").upper()
                    for it in usage]
    other = any(h.lookup(js, kw) for kw in ("ContrastBolusRoute", "ContrastBolusVolume",
                                              "ContrastBolusTotalDose",
                                              "ContrastBolusIngredient"))
    if usage and "YES" not in administered and not agent and not coded:
        return 0, None
    used = bool(agent or coded or other or "YES" in administered)
    return int(used), agent or coded


def _positive(vals: list[float]) -> list[float]:
    """Spacings and thicknesses: 0 or less is a placeholder (``0.000``), not a value."""
    return [v for v in vals if v > 0]


Values = dict[str, list[float] | list[str]]


def instance_values(js: dict[str, Any], *, image: bool = True) -> Values:
    """Every acquisition value of one instance (one entry per frame where per frame).

    ``image`` is false for instances without pixels on a grid (SR, SEG,
    RTSTRUCT, ...): they contribute only the modality and equipment names.
    """
    out: Values = {}

    def put(name: str, vals: list[float] | list[str]) -> None:
        if vals:
            out[name] = vals

    put("modality", [m.upper() for m in _words(js, "Modality")])
    bp = body_part(next(iter(_words(js, "BodyPartExamined")), None))
    put("body_part", [bp] if bp else [])
    mf = manufacturer(next(iter(_words(js, "Manufacturer")), None))
    put("manufacturer", [mf] if mf else [])
    put("model", _words(js, "ManufacturerModelName"))
    if not image:
        return out
    put("kvp", _nums(js, "KVP"))
    time_ms = _first_of(_nums(js, "ExposureTime"), _nums(js, "ExposureTimeInms"),
                        _nums(js, "ExposureTimeInuS", 1e-3))
    current = _first_of(_nums(js, "XRayTubeCurrent"), _nums(js, "XRayTubeCurrentInmA"),
                        _nums(js, "XRayTubeCurrentInuA", 1e-3))
    mas = _first_of(_nums(js, "Exposure"), _nums(js, "ExposureInmAs"),
                    _nums(js, "ExposureInuAs", 1e-3))
    # Each is derived from the other two only when its own attributes are absent:
    # mA = mAs / s, mAs = mA x s (ExposureTime is in ms).
    if not current and mas and time_ms and len(mas) == len(time_ms):
        current = [q * 1000.0 / t for q, t in zip(mas, time_ms, strict=True) if t > 0]
    if not mas and current and time_ms and len(current) == len(time_ms):
        mas = [c * t / 1000.0 for c, t in zip(current, time_ms, strict=True)]
    put("tube_current_ma", current)
    put("exposure_mas", mas)
    put("exposure_time_ms", time_ms)
    put("ctdi_vol_mgy", _nums(js, "CTDIvol"))
    put("slice_thickness_mm", _positive(_nums(js, "SliceThickness")))
    spacing = h.lookup(js, "PixelSpacing") or h.lookup(js, "ImagerPixelSpacing")
    pairs = [f for f in (h.floats(v[:2]) for v in spacing)
             if f is not None and len(f) == 2 and min(f) > 0]
    put("pixel_spacing_row_mm", [p[0] for p in pairs])
    put("pixel_spacing_col_mm", [p[1] for p in pairs])
    fs = [t for t in (field_strength_tesla(v) for v in _nums(js, "MagneticFieldStrength"))
          if t is not None]
    put("field_strength_t", fs)
    scanning = h.lookup(js, "ScanningSequence")
    if scanning:
        seqs = [s for s in (mr_sequence([str(v) for v in vals]) for vals in scanning) if s]
    else:
        enhanced = mr_sequence(
            echo_pulse=next(iter(_words(js, "EchoPulseSequence")), None),
            inversion_recovery=next(iter(_words(js, "InversionRecovery")), None),
            echo_planar=next(iter(_words(js, "EchoPlanarPulseSequence")), None))
        seqs = [enhanced] if enhanced else []
    put("sequence", seqs)
    put("sequence_variant", [v for v in (_ordered([str(x) for x in vals], VARIANT_ORDER)
                                         for vals in h.lookup(js, "SequenceVariant")) if v])
    put("sequence_name", _words(js, "SequenceName") or _words(js, "PulseSequenceName"))
    put("mr_acquisition_type", [w.upper() for w in _words(js, "MRAcquisitionType")])
    put("echo_time_ms", _first_of(_nums(js, "EchoTime"), _nums(js, "EffectiveEchoTime")))
    put("repetition_time_ms", _nums(js, "RepetitionTime"))
    put("inversion_time_ms", _nums(js, "InversionTime"))
    put("flip_angle_deg", _nums(js, "FlipAngle"))
    put("reconstruction_kernel", _words(js, "ConvolutionKernel", join="/"))
    used, agent = _contrast(js)
    put("contrast", [float(used)])
    put("contrast_agent", [agent] if agent else [])
    put("rows", _nums(js, "Rows"))
    put("columns", _nums(js, "Columns"))
    return out


#: Names whose values are words; every other name is a number.
TEXT_NAMES = frozenset({"modality", "body_part", "manufacturer", "model", "sequence",
                        "sequence_variant", "sequence_name", "mr_acquisition_type",
                        "reconstruction_kernel", "contrast_agent"})
#: Whole numbers (counts), stored without a fractional part.
COUNT_NAMES = frozenset({"rows", "columns", "slices"})


def _varies_num(vals: list[float]) -> bool:
    lo, hi = min(vals), max(vals)
    return hi - lo > 1e-6 * max(1.0, abs(hi), abs(lo))


def acquisition_features(datasets: Sequence[dict[str, Any]],
                         series_uid: str = "") -> FamilyResult:
    """The ``acq`` family of a series from its instances' DICOM JSON.

    Parameters
    ----------
    datasets
        ``Instance.dataset`` of every instance of the series (any order).
    series_uid
        Used only in messages.

    Returns
    -------
    FamilyResult
        Values, or ``skipped`` when the series has no instances.
    """
    if not datasets:
        return FamilyResult(skipped="the series has no instances")
    pooled: dict[str, list[Any]] = {}
    images = [js for js in datasets if h.is_image(js, str(h.first(js, "SOPClassUID") or ""))]
    image_ids = {id(js) for js in images}
    for js in datasets:
        for name, vals in instance_values(js, image=id(js) in image_ids).items():
            pooled.setdefault(name, []).extend(vals)
    out: list[FeatureValue] = []
    for name in sorted(pooled):
        vals = pooled[name]
        if name in TEXT_NAMES:
            counts = Counter(str(v) for v in vals)
            best = min(counts, key=lambda w: (-counts[w], w))
            out.append(text(name, best))
            varies = len(counts) > 1
        else:
            fl = [float(v) for v in vals]
            med = float(statistics.median(fl))
            if name == "contrast":  # any image with contrast makes a contrast series
                med = max(fl)
            out.append(num(name, round(med) if name in COUNT_NAMES else med))
            varies = _varies_num(fl) and name != "contrast"
        if varies:
            out.append(num(f"{name}_varies", 1))
    if images:
        out.append(num("slices", sum(h.frames(js) for js in images)))
        z, _ = h.slice_coordinates(images, series_uid)
        z = h.unique_positions(z)
        if len(z) > 1:
            out.append(num("spacing_between_slices_mm", round(float(np.median(np.diff(z))), 6)))
    return FamilyResult(values=sorted(out, key=lambda v: v.name))


__all__ = ["BODY_PART_SYNONYMS", "MANUFACTURERS", "TEXT_NAMES", "acquisition_features",
           "body_part", "field_strength_tesla", "instance_values", "manufacturer",
           "mr_sequence"]
