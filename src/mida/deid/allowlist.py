"""What survives de-identification although Table E.1-1 does not list it.

Table E.1-1 names the attributes known to carry identity; everything else is
not thereby safe (vendors put names in odd places, and new attributes appear
in every edition). mida therefore treats an attribute that is *not* in the
table by its VR:

* values that cannot spell a name or a free-text note are kept: binary
  numbers (``US``, ``SS``, ``UL``, ``SL``, ``FL``, ``FD``, ``SV``, ``UV``,
  ``AT``), decimal and integer strings (``DS``, ``IS``) and code strings
  (``CS``: short upper-case codes); a malformed ``DS``/``IS``/``CS`` value
  stops de-identification (quarantine) rather than being kept;
* ``UI`` values are replaced by their pseudonym, except the class-like UIDs
  of :data:`CLASS_UID_TAGS` (they name an object type, not an instance);
* sequences are entered and their items filtered by the same rules;
* everything else (``PN``, ``LO``, ``SH``, ``LT``, ``ST``, ``UT``, ``UC``,
  ``UR``, ``AE``, ``AS``, ``DA``, ``DT``, ``TM``, ``OB``, ``OW``, ``OD``,
  ``OF``, ``OL``, ``OV``, ``UN``) is removed unless listed here: the
  technical text of :data:`TEXT_TAGS` (or group 0028, the image pixel
  description), the bulk data of :data:`BULK_TAGS`, and the code text of
  :data:`CODE_TAGS` in items of a :data:`STANDARD_CODING_SCHEMES` scheme.
  Under a Retain Longitudinal option, unlisted ``DA`` and ``DT`` values are
  shifted (or kept) and ``TM`` values kept, like the dates the table lists.

Inside a sequence that the table asks to replace with a dummy (``D``, e.g.
Content Sequence, Person Identification Code Sequence) the text allow-list is
not applied: code values there may identify a person.

Examples
--------
>>> keep_unlisted(0x00080070, "LO")  # Manufacturer
True
>>> keep_unlisted(0x00180024, "SH", strict=True)  # Sequence Name, inside a D sequence
False
>>> keep_unlisted(0x00281055, "LO")  # Window Center & Width Explanation (group 0028)
True
>>> keep_unlisted(0x00287FE0, "UR")  # Pixel Data Provider URL
False
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for kw in keywords:
        tag = tag_for_keyword(kw)
        if tag is None:  # pragma: no cover - guards against typos
            raise ValueError(f"unknown DICOM keyword {kw!r}")
        tags.add(tag)
    return frozenset(tags)


NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
"""Binary numeric VRs: kept when not in the table."""

STRING_NUMERIC_VRS = frozenset({"DS", "IS", "CS"})
"""Text VRs whose syntax excludes names and notes: kept (after a syntax check)."""

TEXT_TAGS: frozenset[int] = _tags(
    # Equipment type (identity of the device is in the table: serial, station);
    # the software version is a covariate of quantitative imaging studies
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    # Geometry: the anatomical landmark of the Frame of Reference (Type 2)
    "PositionReferenceIndicator",
    # Acquisition and reconstruction parameters stored as short text
    "ConvolutionKernel",
    "FilterType",
    "ReceiveCoilName",
    "TransmitCoilName",
    "SequenceName",
    "PulseSequenceName",
    "ImagedNucleus",
    "ContrastBolusRoute",
    "Radiopharmaceutical",
    "ReconstructionMethod",
    "AttenuationCorrectionMethod",
    "ScatterCorrectionMethod",
)
"""Text attributes outside the table that describe acquisition, not people."""

CODE_TAGS: frozenset[int] = _tags(
    "CodeValue",
    "CodingSchemeDesignator",
    "CodingSchemeVersion",
    "CodeMeaning",
    "LongCodeValue",
)
"""Code Sequence Macro text: kept only in items of a standard coding scheme."""

STANDARD_CODING_SCHEMES = frozenset(
    {
        "DCM", "SCT", "SRT", "SNM3", "LN", "UCUM", "NCIt", "FMA", "RADLEX", "MDC", "ACR",
        "SCPECG", "RFC3066", "RFC5646", "IBSI", "UMLS", "MSH", "NEU", "NBD", "HPC", "C4",
        "C5", "I9", "I9C", "I10", "I10P", "I11", "ISO3166_1", "ISO639_1", "ISO639_2",
        "ATC", "RXNORM", "NDC", "PUBCHEM_CID", "ORPHA", "NCDR", "NICIP", "MAYONRISBSASRG",
        "ITIS_TSN", "MGI", "NCBITaxon", "UBERON", "UNS", "UPC", "BARI", "CD2",
    }
)  # fmt: skip
"""Coding Scheme Designators of PS3.16 Table 8-1 whose meanings are public.

A local scheme (``99...``, ``L``, a RIS name) is free text in disguise: its
code values and meanings may name the institution or the patient.
"""

TEXT_GROUPS = frozenset({0x0028})
"""Groups whose short text (LO, SH) is technical: Image Pixel, LUTs, windows."""

TEXT_GROUP_VRS = frozenset({"LO", "SH"})

BULK_TAGS: frozenset[int] = _tags(
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "LUTData",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ICCProfile",
    "WaveformData",
    "WaveformPaddingValue",
    "ChannelMinimumValue",
    "ChannelMaximumValue",
    "SpectroscopyData",
    "FirstOrderPhaseCorrectionAngle",
    "FileMetaInformationVersion",
)
"""Bulk data kept as is; pixel data is never decoded or altered here."""

CLASS_UID_TAGS: frozenset[int] = _tags(
    "TransferSyntaxUID",
    "MediaStorageSOPClassUID",
    "SOPClassUID",
    "ReferencedSOPClassUID",
    "ReferencedSOPClassUIDInFile",
    "ReferencedTransferSyntaxUIDInFile",
    "RelatedGeneralSOPClassUID",
    "OriginalSpecializedSOPClassUID",
    "SOPClassesInStudy",
    "CodingSchemeUID",
    "ContextUID",
    "MappingResourceUID",
)
"""UI attributes that name a class, syntax or scheme: kept verbatim.

A private SOP Class or Transfer Syntax UID identifies a vendor's object type,
not a patient, and replacing a Transfer Syntax UID would make the file
unreadable.
"""


def keep_unlisted(tag: int, vr: str, *, strict: bool = False) -> bool:
    """Return whether a text or bulk attribute absent from Table E.1-1 is kept.

    Only meaningful for VRs that are not kept by VR alone (see the module
    notes); numeric, ``CS`` and ``UI`` values are decided by the engine.

    Parameters
    ----------
    tag
        The attribute tag.
    vr
        Its VR.
    strict
        True inside a sequence the table replaces with a dummy: only bulk
        data is kept there, no text.
    """
    if tag in BULK_TAGS:
        return True
    if strict:
        return False
    return tag in TEXT_TAGS or ((tag >> 16) in TEXT_GROUPS and vr in TEXT_GROUP_VRS)


__all__ = [
    "BULK_TAGS",
    "CLASS_UID_TAGS",
    "CODE_TAGS",
    "NUMERIC_VRS",
    "STANDARD_CODING_SCHEMES",
    "STRING_NUMERIC_VRS",
    "TEXT_GROUPS",
    "TEXT_TAGS",
    "keep_unlisted",
]
