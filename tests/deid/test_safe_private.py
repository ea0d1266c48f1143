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
import io
import json
import re
import shutil
import struct
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from sqlalchemy import select

from mida.catalog.models import Instance
from mida.deid import (
    Deidentifier,
    Option,
    Profile,
    Pseudonymizer,
    get_profile,
    load_safe_private,
)
from mida.deid.plan import VALID_VRS
from mida.deid.safe_private import parse_safe_private, sequence_component
from mida.errors import DeidError
from mida.ingest import ingest_paths
from mida.node import Node
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
    assert re.fullmatch(r"tcia-\d{4}-\d{2}-\d{2}\.\d+\+mida-\d+", safe.version)
    assert safe.source["name"] == "TCIA Private Tag Knowledge Base"
    assert safe.source["licence"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{64}", safe.source["sha256"])
    assert len(safe) > 100
    doc = json.loads(resources.files("mida.deid").joinpath("data", "safe_private.json").read_text())
    counts = doc["counts"]
    tcia = parse_safe_private(doc)
    assert len(tcia) == counts["entries"] == counts["top_level"] + counts["nested"]
    assert counts["dispositions"]["k"] >= counts["entries"]
    assert safe.version.startswith(tcia.version + "+")


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


# -- mida's supplement: Philips precise scaling in enhanced MR per-frame items ---------------

PER_FRAME = ("(5200,9230)", '(2005,"Philips MR Imaging DD 005",0f)')
"""Where Philips enhanced MR files carry the scaling: Per-frame Functional Groups
Sequence > item > Private Per-Frame Sequence (2005,xx0F of DD 005) > item."""
SCALING = {0x0B: 171142256.0, 0x0C: 0.0, 0x0D: 2047.5, 0x0E: 8.448640073766e-06}
"""Max FP, Min FP, Scale Intercept, Scale Slope (2005,xx0B-0E of DD 001), float32-exact."""
DD001, DD005 = "Philips MR Imaging DD 001", "Philips MR Imaging DD 005"


def _json(name: str) -> Any:
    return json.loads(resources.files("mida.deid").joinpath("data", name).read_text("utf-8"))


def test_supplement_is_merged_into_the_dictionary() -> None:
    tcia = parse_safe_private(_json("safe_private.json"))
    supplement = parse_safe_private(_json("safe_private_mida.json"), reasons=True)
    safe = load_safe_private()
    assert re.fullmatch(r"mida-\d+", supplement.version)
    assert safe.version == f"{tcia.version}+{supplement.version}"
    assert safe.source == tcia.source
    assert safe.supplements == ({"version": supplement.version, **supplement.source},)
    assert set(safe.entries) == set(tcia.entries) | set(supplement.entries)
    for key in safe.entries:
        assert safe.entries[key] == tcia.entries.get(key, frozenset()) | supplement.entries.get(
            key, frozenset()
        )


def test_supplement_lists_philips_scaling_numbers_each_with_a_reason() -> None:
    """Only numbers without identity, and the sequence that holds them; each says why."""
    doc = _json("safe_private_mida.json")
    assert doc["format"] == 1 and doc["columns"][-1] == "reason"
    numbers, containers = set(), set()
    for path, creator, group, element, vr, _name, reason in doc["entries"]:
        assert len(reason) > 40, (creator, element)
        if vr == "SQ":
            containers.add((*path, sequence_component(int(group, 16), int(element, 16), creator)))
        else:
            assert vr in {"FL", "FD", "DS", "IS", "SS", "US"}, (creator, element, vr)
            numbers.add((tuple(path), creator, group, element, vr))
    assert numbers == {(PER_FRAME, DD001, "2005", f"{b:02x}", "FL") for b in SCALING}
    assert containers == {PER_FRAME}  # the one sequence holds exactly those numbers


def test_supplement_entries_must_give_a_reason() -> None:
    doc = _json("safe_private_mida.json")
    doc["entries"][1][6] = " "
    with pytest.raises(DeidError, match="gives no reason"):
        parse_safe_private(doc, reasons=True)
    without = _json("safe_private.json")
    with pytest.raises(DeidError, match="columns"):
        parse_safe_private(without, reasons=True)


def test_scaling_is_listed_at_the_per_frame_path_only() -> None:
    safe = load_safe_private()
    for byte in SCALING:
        assert safe.vrs(DD001, 0x2005, byte, PER_FRAME) == {"FL"}
        for elsewhere in (
            PER_FRAME[:1],  # directly in the per-frame item
            PER_FRAME[1:],  # the private sequence at the top level
            ("(5200,9229)", PER_FRAME[1]),  # Shared Functional Groups
            (*PER_FRAME, "(0008,9124)"),  # one level deeper
        ):
            assert not safe.vrs(DD001, 0x2005, byte, elsewhere), (byte, elsewhere)
        assert not safe.vrs(DD001.upper(), 0x2005, byte, PER_FRAME)  # creators are exact
        assert not safe.vrs(DD005, 0x2005, byte, PER_FRAME)  # another creator's block


def _scaling_item(values: dict[int, Any], vr: str = "FL", *, block: int = 0x11) -> Dataset:
    """Philips' private per-frame item: DD 001 at block `block`, the scaling, decoys."""
    item = Dataset()
    item.add_new(0x20050000 | block, "LO", DD001)
    for byte, value in values.items():
        item.add_new(0x20050000 | block << 8 | byte, vr, value)
    item.add_new(0x20050000 | block << 8 | 0x10, "LO", "PrivateSecretValue")  # unlisted
    item.PatientName = "WATSON^JOHN"
    return item


def _frame(private_item: Dataset, *, block: int = 0x15) -> Dataset:
    """A per-frame functional groups item holding the Private Per-Frame Sequence."""
    frame = Dataset()
    frame.add_new(0x20050000 | block, "LO", DD005)
    frame.add_new(0x20050000 | block << 8 | 0x0F, "SQ", Sequence([private_item]))
    return frame


def _floats(item: Dataset, block: int = 0x11) -> dict[int, float]:
    out = {}
    for byte in SCALING:
        elem = item.get_item(0x20050000 | block << 8 | byte)
        if elem is not None:
            out[byte] = struct.unpack("<f", elem.value)[0]
    return out


@pytest.mark.parametrize("implicit", ENCODINGS)
def test_philips_per_frame_scaling_is_kept_verbatim(safe: Deidentifier, implicit: bool) -> None:
    ds = ct_dataset()
    ds.PerFrameFunctionalGroupsSequence = [_frame(_scaling_item(SCALING)) for _ in range(2)]
    ds = reread(ds, implicit=implicit)
    safe.apply(ds)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        assert {int(e.tag) for e in frame if e.tag.is_private} == {0x20050015, 0x2005150F}
        (item,) = frame[0x2005150F].value
        assert _floats(item) == SCALING  # bit for bit: each value is float32-exact
        assert private_tags(item) == {0x20050011} | {0x20051100 | b for b in SCALING}
        assert "PatientName" not in item or item.PatientName == ""
    data = output_bytes(ds)
    assert b"PrivateSecretValue" not in data and b"WATSON" not in data


def test_philips_scaling_elsewhere_and_text_at_its_tag_are_removed(safe: Deidentifier) -> None:
    ds = ct_dataset()
    direct = _scaling_item(SCALING)  # the numbers straight in the per-frame item
    named = _frame(_scaling_item({0x0E: "WATSON^JOHN"}, "LO"))  # text at the listed place
    planted = _frame(_scaling_item(SCALING))
    planted.add_new(0x20050011, "LO", DD001)  # text at the same private tag, another path
    planted.add_new(0x2005110E, "LO", "DOE^JANE^Q")
    ds.PerFrameFunctionalGroupsSequence = [direct, named, planted]
    ds.SharedFunctionalGroupsSequence = [_frame(_scaling_item(SCALING))]
    ds = reread(ds)
    safe.apply(ds)
    direct, named, planted = ds.PerFrameFunctionalGroupsSequence
    assert private_tags(direct) == set()
    assert private_tags(named[0x2005150F].value[0]) == set()
    assert _floats(planted[0x2005150F].value[0]) == SCALING  # the listed place still kept
    assert 0x2005110E not in planted and 0x20050011 not in planted
    shared_frame = ds.get("SharedFunctionalGroupsSequence")
    assert not shared_frame or private_tags(shared_frame[0]) == set()
    data = output_bytes(ds)
    assert b"WATSON" not in data and b"DOE^JANE" not in data


@pytest.mark.shared_data
def test_ingest_keeps_the_per_frame_scaling_of_a_philips_enhanced_mr(
    node: Node, tmp_path: Path
) -> None:
    """dcm_qa_enh's Philips field map (64 frames, two echoes) through de-identifying ingest."""
    source = shared("conversion", "dcm_qa_enh_subset", "In", "Philips", "IM_0027_fMAP.dcm")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(source, folder)
    ingest_paths(node, [folder], "philips", workers=1)
    with node.catalog().session() as s:
        (digest,) = s.scalars(select(Instance.blob_sha256)).all()
    stored = pydicom.dcmread(io.BytesIO(node.store().get(digest)))
    original = pydicom.dcmread(source, stop_before_pixels=True)

    def scaling(ds: Dataset) -> list[tuple[float, ...]]:
        out = []
        for frame in ds.PerFrameFunctionalGroupsSequence:
            (item,) = frame.private_block(0x2005, DD005)[0x0F].value
            block = item.private_block(0x2005, DD001)
            out.append(tuple(float(block[b].value) for b in sorted(SCALING)))
        return out

    got, want = scaling(stored), scaling(original)
    assert len(got) == 64 and got == want
    assert {slope for *_, slope in got} == {8.448640073766e-06, 4.095000267028809}
    assert stored.DeidentificationMethod[1] == f"safe-private {load_safe_private().version}"
