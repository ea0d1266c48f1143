"""PS3.15 Table E.1-1 loads completely and looks up tags as the standard says."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from mida.deid.table import (
    OPTION_KEYS,
    TABLE_EDITION,
    Action,
    Option,
    load_table,
    parse_pattern,
)
from mida.errors import DeidError


def test_table_has_every_row_of_the_edition() -> None:
    table = load_table()
    assert table.edition == TABLE_EDITION == "2024b"
    assert len(table) == 621
    assert len(table.exact) + len(table.masked) + 1 == 621  # + the private row


def test_shipped_files_match_the_edition_and_carry_the_licence() -> None:
    data = resources.files("mida.deid").joinpath("data")
    rows = json.loads(data.joinpath(f"ps3.15-table-e1-1-{TABLE_EDITION}.json").read_text())
    assert len(rows) == 621
    assert "Innolitics" in data.joinpath("LICENSE-innolitics.txt").read_text()


def test_every_row_matches_its_own_pattern() -> None:
    table = load_table()
    for rule in table:
        if rule.private:
            assert rule.matches(0x00091010)
        else:
            assert rule.matches(rule.value)
            assert table.lookup(rule.value) is rule


def test_group_patterns_are_all_present() -> None:
    patterns = {r.pattern for r in load_table().masked}
    assert patterns == {"(50XX,XXXX)", "(60XX,3000)", "(60XX,4000)"}


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        (0x50000000, "Curve Data"),
        (0x501E3000, "Curve Data"),
        (0x60003000, "Overlay Data"),
        (0x601E3000, "Overlay Data"),
        (0x60024000, "Overlay Comments"),
    ],
)
def test_wildcards_match_whole_repeating_groups(tag: int, name: str) -> None:
    rule = load_table().lookup(tag)
    assert rule is not None
    assert rule.name == name


def test_wildcards_do_not_match_other_elements() -> None:
    table = load_table()
    assert table.lookup(0x60003001) is None
    assert table.lookup(0x60000010) is None  # Overlay Rows: not in the table
    assert table.lookup(0x00280010) is None  # Rows


def test_private_row_covers_odd_groups_only() -> None:
    table = load_table()
    rule = table.lookup(0x00291010)
    assert rule is not None and rule.private and rule.basic is Action.REMOVE
    assert rule.options == {Option.RETAIN_SAFE_PRIVATE: Action.CLEAN}
    assert table.lookup(0x00090010) is rule  # private creator
    assert table.lookup(0x00280010) is None


@pytest.mark.parametrize(
    ("tag", "basic"),
    [
        (0x00100010, "Z"),  # Patient's Name
        (0x00100020, "Z/D"),  # Patient ID
        (0x00080018, "U"),  # SOP Instance UID
        (0x00080080, "X/Z/D"),  # Institution Name
        (0x00081140, "X/Z/U*"),  # Referenced Image Sequence
        (0x0040A730, "D"),  # Content Sequence
        (0x00101000, "X"),  # Other Patient IDs
    ],
)
def test_basic_profile_actions(tag: int, basic: str) -> None:
    rule = load_table().lookup(tag)
    assert rule is not None
    assert rule.basic == basic
    assert rule.action_for(()) == basic


def test_options_replace_the_basic_action() -> None:
    table = load_table()
    study_date = table.lookup(0x00080020)
    age = table.lookup(0x00101010)
    assert study_date is not None and age is not None
    assert study_date.action_for({"rtnLongModifDatesOpt"}) is Action.CLEAN
    assert study_date.action_for({"rtnLongFullDatesOpt"}) is Action.KEEP
    assert age.action_for({"rtnPatCharsOpt"}) is Action.KEEP
    assert age.action_for({"rtnLongModifDatesOpt"}) is Action.REMOVE


def test_clean_wins_over_keep_when_options_overlap() -> None:
    rule = load_table().lookup(0x0018700C)  # Date of Last Detector Calibration
    assert rule is not None
    assert rule.action_for({"rtnDevIdOpt"}) is Action.KEEP
    assert rule.action_for({"rtnDevIdOpt", "rtnLongModifDatesOpt"}) is Action.CLEAN


def test_every_option_column_is_known() -> None:
    assert set(OPTION_KEYS) == {o.value for o in Option}
    used = {opt for rule in load_table() for opt in rule.options}
    assert used == set(Option)


def test_combined_actions_are_flagged() -> None:
    assert Action.REMOVE_OR_ZERO_OR_UID.is_combined
    assert not Action.UID.is_combined


def test_parse_pattern_masks_each_wildcard_nibble() -> None:
    assert parse_pattern("(50xx,xxxx)") == (0x50000000, 0xFF000000)
    assert parse_pattern("(0010,0010)") == (0x00100010, 0xFFFFFFFF)
    with pytest.raises(DeidError, match="unrecognised tag pattern"):
        parse_pattern("(0010,00GG)")
