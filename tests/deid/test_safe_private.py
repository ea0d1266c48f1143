"""Retain Safe Private: only the private attributes of the safe-private dictionary stay.

A private attribute is known by its block's private creator, not by its tag,
so the datasets here put the creators of Siemens, GE and Philips in other
blocks than the usual ``(gggg,0010)`` and plant, next to each listed
attribute, an unlisted one in the same block, the same element byte under
another creator, and a block with nothing listed. Datasets go through bytes,
explicit and implicit VR, as in ingest.
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
from importlib import resources
from types import ModuleType
from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from mida.deid import (
    Deidentifier,
    Option,
    Profile,
    Pseudonymizer,
    get_profile,
    load_safe_private,
)
from mida.deid.plan import VALID_VRS
from tests.conftest import REPO, shared

from .builders import KEY, PLANTED, ct_dataset, default_without, output_bytes, reread, uid

DEFAULT = default_without(Option.RETAIN_SAFE_PRIVATE, "default-no-safe-private")
SAFE = get_profile("default")  # the default research profile applies Retain Safe Private
BASIC_SAFE = Profile("basic-safe-private", "1", options=frozenset({Option.RETAIN_SAFE_PRIVATE}))

# (group, block the file uses, creator, element byte, VR, value) of listed attributes
VENDORS = {
    "siemens": (0x0019, 0x11, "SIEMENS CT VA0  COAD", 0x22, "DS", "0.5"),  # Detector Spacing
    "ge": (0x0019, 0x12, "GEMS_ACQU_01", 0x13, "SS", 7),  # Start Number For Baseline
    "philips": (0x2001, 0x13, "Philips Imaging DD 001", 0x03, "FL", 1000.0),  # B-Factor
}
UNLISTED_BYTE = 0xFE  # listed for none of the three creators
OTHER_CREATOR = "MIDA OTHER VENDOR"
ENCODINGS = [pytest.param(False, id="explicit"), pytest.param(True, id="implicit")]
CLINICAL_TEXT = {"Scanned after the fall at home", "Deeply nested comment"}
"""Planted descriptions without identifying content: Clean Descriptors keeps them."""


@pytest.fixture(scope="module")
def safe() -> Deidentifier:
    return Deidentifier(KEY, SAFE)


@pytest.fixture(scope="module")
def default() -> Deidentifier:
    return Deidentifier(KEY, DEFAULT)


def private_tags(ds: Dataset) -> set[int]:
    return {int(e.tag) for e in ds.iterall() if e.tag.is_private}


def vendor_dataset(vendor: str) -> Dataset:
    """A CT with the vendor's block at a non-default block number, and its decoys."""
    group, block, creator, byte, vr, value = VENDORS[vendor]
    ds = ct_dataset()
    ds.add_new(group << 16 | block, "LO", creator)
    ds.add_new(group << 16 | block << 8 | byte, vr, value)  # listed
    ds.add_new(group << 16 | block << 8 | UNLISTED_BYTE, "LO", "PrivateSecretValue")
    ds.add_new(group << 16 | (block + 1), "LO", OTHER_CREATOR)
    ds.add_new(group << 16 | (block + 1) << 8 | byte, vr, value)  # same byte, other creator
    return ds


# -- the dictionary -------------------------------------------------------------


def test_dictionary_is_versioned_and_sourced() -> None:
    safe = load_safe_private()
    assert re.fullmatch(r"tcia-\d{4}-\d{2}-\d{2}\.\d+", safe.version)
    assert safe.source["name"] == "TCIA Private Tag Knowledge Base"
    assert safe.source["licence"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{64}", safe.source["sha256"])
    assert len(safe) > 100
    doc = json.loads(resources.files("mida.deid").joinpath("data", "safe_private.json").read_text())
    counts = doc["counts"]
    assert len(safe) == counts["entries"] == counts["top_level"] + counts["nested"]
    assert counts["dispositions"]["k"] >= counts["entries"]


def test_dictionary_entries_are_well_formed() -> None:
    for (path, creator, group, element), vrs in load_safe_private().entries.items():
        assert creator == creator.strip() and creator, (path, group, element)
        assert group & 1 and group > 0x0008, (creator, group)
        assert 0 <= element <= 0xFF
        assert vrs and vrs <= VALID_VRS, (creator, group, element, vrs)
        for component in path:
            assert re.fullmatch(r'\([0-9a-f]{4},([0-9a-f]{4}|"[^"]+",[0-9a-f]{2})\)', component)


def test_dictionary_knows_the_three_vendors() -> None:
    safe = load_safe_private()
    for group, _, creator, byte, vr, _ in VENDORS.values():
        assert vr in safe.vrs(creator, group, byte)
        assert not safe.vrs(creator, group, UNLISTED_BYTE)
        assert not safe.vrs(OTHER_CREATOR, group, byte)
    assert not safe.vrs("SIEMENS CT VA0  COAD", 0x0019, 0x22, ("(0008,1115)",))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_safe_private", REPO / "tools" /
                                                  "build_safe_private.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_committed_dictionary() -> None:
    kb = shared("phi", "midi_b_micdkfz_refs", "docs", "TCIAPrivateTagKB-02-01-2024-formatted.csv")
    committed = (REPO / "src" / "mida" / "deid" / "data" / "safe_private.json").read_text("utf-8")
    assert _generator().build(kb) == committed


def test_generator_parses_irregular_quoting() -> None:
    gen = _generator()
    for pattern in ('(0019,"SIEMENS CT VA0  COAD",22)', "(0019,SIEMENS CT VA0  COAD\",22)",
                    "(0019,SIEMENS CT VA0  COAD,22)"):  # fmt: skip
        assert gen.parse_pattern(pattern) == [(0x0019, "SIEMENS CT VA0  COAD", 0x22)]
    path, creator, group, element, vr, _ = gen.entry(
        ['(5200,9230)[<0>](0021,SIEMENS MR SDI 02",fe)[<1>](0021,"SIEMENS MR SDI 02",1c)',
         "x", " is", " K"]
    )  # fmt: skip
    assert path == ["(5200,9230)", '(0021,"SIEMENS MR SDI 02",fe)']
    assert (creator, group, element, vr) == ("SIEMENS MR SDI 02", "0021", "1c", "IS")
    for row, reason in (
        (["(0009,,02)", "x", "UN", "k"], "empty"),
        (['(0009,"CTP",02)', "x", "", "k"], "no VR"),
        (['(0009,"CTP",02)[<0>](0008,0100)', "x", "SH", "k"], "normal rules"),
        (["(0009,garbage", "x", "UN", "k"], "does not parse"),
    ):
        with pytest.raises(gen.Skip, match=reason):
            gen.entry(row)


# -- the engine ---------------------------------------------------------------------


@pytest.mark.parametrize("implicit", ENCODINGS)
@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_listed_attribute_and_its_creator_stay(
    safe: Deidentifier, vendor: str, implicit: bool
) -> None:
    group, block, creator, byte, _, _ = VENDORS[vendor]
    ds = reread(vendor_dataset(vendor), implicit=implicit)
    listed = BaseTag(group << 16 | block << 8 | byte)
    original = ds.get_item(listed).value
    report = safe.apply(ds)
    assert ds.get_item(listed).value == original  # verbatim
    assert private_tags(ds) == {group << 16 | block, listed}
    assert str(ds[group << 16 | block].value) == creator
    # removed: the unlisted one, the decoy block (creator, element), the
    # builder's ACME block (creator, value, sequence)
    assert report.private_removed == 6
    assert b"PrivateSecretValue" not in output_bytes(ds)
    assert OTHER_CREATOR.encode() not in output_bytes(ds)


@pytest.mark.parametrize("implicit", ENCODINGS)
def test_without_the_option_every_private_attribute_goes(
    default: Deidentifier, implicit: bool
) -> None:
    for vendor in VENDORS:
        ds = reread(vendor_dataset(vendor), implicit=implicit)
        report = default.apply(ds)
        assert private_tags(ds) == set()
        assert report.private_removed == 8


def test_a_block_without_a_listed_attribute_loses_its_creator(safe: Deidentifier) -> None:
    ds = ct_dataset()
    ds.add_new(0x00190010, "LO", "SIEMENS CT VA0  COAD")
    ds.add_new(0x001910FE, "LO", "PrivateSecretValue")  # unlisted byte
    ds.add_new(0x00190011, "LO", OTHER_CREATOR)
    ds.add_new(0x00191122, "DS", "0.5")  # listed byte, unknown creator
    ds.add_new(0x00191222, "DS", "0.5")  # a block without a creator
    ds = reread(ds)
    safe.apply(ds)
    assert private_tags(ds) == set()


def test_the_option_is_recorded_with_its_code(safe: Deidentifier) -> None:
    ds = reread(vendor_dataset("siemens"))
    safe.apply(ds)
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert "113111" in codes
    assert codes == [c.CodeValue for c in SAFE.method_codes()]
    default = reread(vendor_dataset("siemens"))
    Deidentifier(KEY, DEFAULT).apply(default)
    assert "113111" not in [item.CodeValue for item in default.DeidentificationMethodCodeSequence]


def test_no_planted_value_survives_with_the_option(safe: Deidentifier) -> None:
    ds = ct_dataset()
    for vendor in VENDORS:
        group, block, creator, byte, vr, value = VENDORS[vendor]
        ds.add_new(group << 16 | block, "LO", creator)
        ds.add_new(group << 16 | block << 8 | byte, vr, value)
    ds = reread(ds)
    safe.apply(ds)
    data = output_bytes(ds)
    assert [p for p in PLANTED if p not in CLINICAL_TEXT and p.encode() in data] == []
    assert len(private_tags(ds)) == 6  # three creators, three values


def _with(creator: str, byte: int, vr: str, value: Any, group: int = 0x0019) -> Dataset:
    ds = ct_dataset()
    ds.add_new(group << 16 | 0x0010, "LO", creator)
    ds.add_new(group << 16 | 0x1000 | byte, vr, value)
    return ds


def test_listed_values_with_a_bad_syntax_are_removed_not_quarantined(
    safe: Deidentifier,
) -> None:
    ds = reread(_with("SIEMENS CT VA0  COAD", 0x22, "DS", "0.5"))
    key = BaseTag(0x00191022)
    ds._dict[key] = RawDataElement(key, "DS", 8, b"DOE JANE", 0, False, True)  # not a DS
    safe.apply(ds)
    assert private_tags(ds) == set()


def test_listed_with_another_vr_is_removed(safe: Deidentifier) -> None:
    ds = reread(_with("SIEMENS CT VA0  COAD", 0x22, "LO", "0.5"))  # listed as DS only
    safe.apply(ds)
    assert private_tags(ds) == set()


@pytest.mark.parametrize("implicit", ENCODINGS)
def test_listed_text_stays_only_when_the_cleaner_finds_nothing(
    safe: Deidentifier, implicit: bool
) -> None:
    ras = 0x00191018  # GEMS_ACQU_01 First Scan RAS: listed as LO (and OB, UN)
    clean = reread(_with("GEMS_ACQU_01", 0x18, "LO", "S"), implicit=implicit)
    safe.apply(clean)
    assert clean.get_item(ras).value.rstrip(b" ") == b"S"
    for text in ("DOE", "S Chen Mei-Ling", "WATSON^JOHN"):  # DOE: the patient's own name
        dirty = reread(_with("GEMS_ACQU_01", 0x18, "LO", text), implicit=implicit)
        safe.apply(dirty)
        assert private_tags(dirty) == set(), text  # removed, creator too: never rewritten


def test_listed_text_needs_a_clean_option() -> None:
    engine = Deidentifier(KEY, BASIC_SAFE)
    ds = reread(_with("GEMS_ACQU_01", 0x18, "LO", "S"))
    engine.apply(ds)
    assert private_tags(ds) == set()
    numbers = reread(_with("SIEMENS CT VA0  COAD", 0x22, "DS", "0.5"))
    engine.apply(numbers)
    assert private_tags(numbers) == {0x00190010, 0x00191022}


@pytest.mark.parametrize("implicit", ENCODINGS)
def test_opaque_bytes_are_kept_as_binary_and_checked_as_text(
    safe: Deidentifier, implicit: bool
) -> None:
    # (0019,xx70) LORAD Selenia: listed as UN only, so the bytes say what they are
    binary = struct.pack("<d", 1.5)
    kept = reread(_with("LORAD Selenia", 0x70, "UN", binary), implicit=implicit)
    safe.apply(kept)
    assert kept.get_item(0x00191070).value == binary
    word = reread(_with("LORAD Selenia", 0x70, "UN", b"FAST"), implicit=implicit)
    safe.apply(word)
    assert word.get_item(0x00191070).value == b"FAST"
    name = reread(_with("LORAD Selenia", 0x70, "UN", b"WATSON^JOHN "), implicit=implicit)
    safe.apply(name)
    assert private_tags(name) == set()


@pytest.mark.parametrize("implicit", ENCODINGS)
def test_opaque_bytes_are_read_as_the_listed_vr(safe: Deidentifier, implicit: bool) -> None:
    # (0019,xx0f) GEMS_ACQU_01 Horizontal Frame Of Reference: listed DS, OB and UN
    number = reread(_with("GEMS_ACQU_01", 0x0F, "OB", b"12.5"), implicit=implicit)
    safe.apply(number)
    assert number.get_item(0x0019100F).value == b"12.5"
    for value in (b"DOE^JANE", struct.pack("<d", 1.5)):  # not a DS
        bad = reread(_with("GEMS_ACQU_01", 0x0F, "OB", value), implicit=implicit)
        safe.apply(bad)
        assert private_tags(bad) == set()


def test_listed_uids_are_pseudonymized(safe: Deidentifier) -> None:
    ds = reread(_with("GEMS_PETD_01", 0xAE, "UI", uid("42"), group=0x0009))
    safe.apply(ds)
    assert ds[0x000910AE].value == Pseudonymizer(KEY).uid(uid("42"))


def _stack(creator: str = "Philips MR Imaging DD 001") -> Dataset:
    """A Philips Stack Sequence whose item holds a listed and an unlisted attribute."""
    item = Dataset()
    item.add_new(0x20050010, "LO", creator)
    item.add_new(0x20051073, "FL", 12.5)  # Stack Angulation RL: listed in Stack Sequence
    item.add_new(0x200510FE, "LO", "Nested private note")
    item.PatientName = "WATSON^JOHN"
    ds = ct_dataset()
    ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
    ds.add_new(0x2001105F, "SQ", Sequence([item]))
    return ds


@pytest.mark.parametrize("implicit", ENCODINGS)
def test_listed_private_sequences_are_kept_and_their_items_filtered(
    safe: Deidentifier, implicit: bool
) -> None:
    ds = reread(_stack(), implicit=implicit)
    safe.apply(ds)
    (item,) = ds[0x2001105F].value
    assert struct.unpack("<f", item.get_item(0x20051073).value)[0] == 12.5
    assert private_tags(item) == {0x20050010, 0x20051073}
    assert "PatientName" not in item or item.PatientName == ""
    assert b"Nested private note" not in output_bytes(ds)
    assert b"WATSON" not in output_bytes(ds)


def test_a_listing_applies_only_where_it_is_listed(safe: Deidentifier) -> None:
    # Stack Angulation RL is listed inside Stack Sequence, not at the top level...
    top = reread(_with("Philips MR Imaging DD 001", 0x73, "FL", 12.5, group=0x2005))
    safe.apply(top)
    assert private_tags(top) == set()
    # ...and Detector Spacing at the top level, not inside a standard sequence
    item = Dataset()
    item.add_new(0x00190010, "LO", "SIEMENS CT VA0  COAD")
    item.add_new(0x00191022, "DS", "0.5")
    ds = ct_dataset()
    ds.DerivationImageSequence = [item]
    ds = reread(ds)
    safe.apply(ds)
    assert private_tags(ds) == set()


def test_items_of_a_kept_private_sequence_follow_their_own_creators(
    safe: Deidentifier,
) -> None:
    ds = reread(_stack(creator="MIDA UNKNOWN"))  # Stack Angulation RL under another creator
    safe.apply(ds)
    (item,) = ds[0x2001105F].value
    assert private_tags(item) == set()
    assert private_tags(ds) == {0x20010010, 0x2001105F}


def test_the_default_research_profile_retains_safe_private_attributes() -> None:
    """The issue's research profile keeps safe private attributes (and cleans graphics)."""
    profile = get_profile("default")
    assert {Option.RETAIN_SAFE_PRIVATE, Option.CLEAN_GRAPHICS} <= profile.options
    ds = reread(vendor_dataset("ge"))
    report = Deidentifier(KEY, profile).apply(ds)
    group, _block, creator, byte, _vr, value = VENDORS["ge"]
    assert ds.private_block(group, creator)[byte].value == value
    assert report.safe_private_version == load_safe_private().version
    assert ds.DeidentificationMethod[1] == f"safe-private {load_safe_private().version}"
