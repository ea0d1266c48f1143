"""Profiles: built-ins, validation, and their CID 7050 codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mida.deid import Deidentifier
from mida.deid.profile import Profile, get_profile, list_profiles, parse_overrides
from mida.errors import DeidError

from .builders import KEY


def test_builtin_profiles() -> None:
    assert list_profiles() == ["basic", "default", "research-full-dates"]
    assert get_profile("basic").options == frozenset()
    assert get_profile("default").options == {
        "rtnSafePrivOpt", "rtnLongModifDatesOpt", "rtnPatCharsOpt", "cleanDescOpt",
        "cleanStructContOpt", "cleanGraphOpt",
    }


def test_unknown_profile_names_the_available_ones() -> None:
    with pytest.raises(DeidError, match="available profiles: basic, default"):
        get_profile("nope")


def test_method_codes_use_cid_7050() -> None:
    codes = get_profile("default").method_codes()
    assert [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning) for c in codes] == [
        ("113100", "DCM", "Basic Application Confidentiality Profile"),
        ("113103", "DCM", "Clean Graphics Option"),
        ("113104", "DCM", "Clean Structured Content Option"),
        ("113105", "DCM", "Clean Descriptors Option"),
        ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
        ("113108", "DCM", "Retain Patient Characteristics Option"),
        ("113111", "DCM", "Retain Safe Private Option"),
    ]
    assert [c.CodeValue for c in get_profile("basic").method_codes()] == ["113100"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "invalid profile name"),
        ({"version": ""}, "invalid version"),
        ({"options": frozenset({"rtnEverythingOpt"})}, "unknown option"),
        (
            {"options": frozenset({"rtnLongFullDatesOpt", "rtnLongModifDatesOpt"})},
            "choose one",
        ),
        ({"overrides": {0x00081030: "blank"}}, "'keep', 'remove' or 'replace"),
        ({"overrides": {"StudyDescription": "keep"}}, "is not a tag"),
    ],
)
def test_invalid_profiles_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "custom", "version": "1"} | kwargs
    with pytest.raises(DeidError, match=message):
        Profile(**args)  # type: ignore[arg-type]


def test_options_are_stored_as_plain_keys() -> None:
    p = Profile("custom", "2", options=frozenset({"rtnUIDsOpt"}))
    assert p.options == frozenset({"rtnUIDsOpt"})
    assert [c.CodeValue for c in p.method_codes()] == ["113100", "113110"]


def test_every_option_is_implemented_by_the_engine() -> None:
    profile = Profile("clean", "1", options=frozenset({"rtnSafePrivOpt", "cleanGraphOpt"}))
    engine = Deidentifier(KEY, profile)  # no longer refused (DeidError) as unimplemented
    assert engine.planner.safe_private is not None and engine.planner.clean_graphics
    assert [c.CodeValue for c in profile.method_codes()] == ["113100", "113103", "113111"]


def test_parse_overrides_accepts_tags_and_keywords() -> None:
    assert parse_overrides(
        [("(0008,1030)", "keep"), ("0008103E", "remove"), ("BodyPartExamined", "replace:X"),
         (0x00080060, "keep")]
    ) == {0x00081030: "keep", 0x0008103E: "remove", 0x00180015: "replace:X", 0x00080060: "keep"}
    with pytest.raises(DeidError, match="neither a tag nor a DICOM keyword"):
        parse_overrides([("NotAKeyword", "keep")])


def test_node_profiles_come_from_home(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "liver-ct.yaml").write_text(
        'name: liver-ct\nversion: "3"\noptions: [rtnDevIdOpt]\n'
        "overrides: {BodyPartExamined: keep}\n"
    )
    assert "liver-ct" in list_profiles(tmp_path) and "liver-ct" not in list_profiles()
    prof = get_profile("liver-ct", tmp_path)
    assert prof.version == "3" and prof.options == {"rtnDevIdOpt"}
    with pytest.raises(DeidError, match="unknown de-identification profile 'liver-ct'"):
        get_profile("liver-ct")
