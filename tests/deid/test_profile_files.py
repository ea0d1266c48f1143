"""YAML profile files: shipped ones mirror the built-ins; errors name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mida.deid import get_profile, list_profiles
from mida.deid.profile_files import (
    available_profiles,
    load_profile_file,
    option_key,
    profile_files,
    shipped_dir,
)
from mida.errors import DeidError


def test_shipped_files_mirror_the_builtins() -> None:
    shipped = available_profiles(None)
    assert {"basic", "default", "research-full-dates"} <= set(shipped)
    for name in list_profiles():
        built = get_profile(name)
        assert shipped[name].options == built.options
        assert shipped[name].version == built.version
        assert dict(shipped[name].overrides) == dict(built.overrides)


def _write(home: Path, name: str, text: str) -> Path:
    (home / "profiles").mkdir(parents=True, exist_ok=True)
    p = home / "profiles" / f"{name}.yaml"
    p.write_text(text)
    return p


def test_node_profile_with_overrides(tmp_path: Path) -> None:
    _write(tmp_path, "lung-ct", """
name: lung-ct
version: "2"
description: keeps the series description
options: [retain-device-identity, rtnLongModifDatesOpt]
overrides:
  "(0008,103E)": keep
  BodyPartExamined: "replace:CHEST"
  "00081030": remove
""")
    p = available_profiles(tmp_path)["lung-ct"]
    assert p.version == "2"
    assert sorted(p.options) == ["rtnDevIdOpt", "rtnLongModifDatesOpt"]
    assert dict(p.overrides) == {0x0008103E: "keep", 0x00180015: "replace:CHEST",
                                 0x00081030: "remove"}
    assert profile_files(tmp_path)["lung-ct"].parent == tmp_path / "profiles"
    assert profile_files(tmp_path)["default"].parent == shipped_dir()


@pytest.mark.parametrize(("body", "key"), [
    ("name: x\nversion: '1'\noptions: [noSuchOpt]\n", "options[0]"),
    ("name: x\nversion: '1'\noverrides: {'(0008,103E)': shred}\n", "overrides['(0008,103E)']"),
    ("name: x\nversion: '1'\noverrides: {81030: keep}\n", "overrides[81030]"),
    ("name: x\nversion: '1'\noverrides: {NoSuchKeyword: keep}\n", "overrides['NoSuchKeyword']"),
    ("name: y\nversion: '1'\n", "name"),
    ("name: x\n", "version"),
    ("name: x\nversion: '1'\ncolour: red\n", "colour"),
    ("name: x\nversion: '1'\noptions: rtnUIDsOpt\n", "options"),
])
def test_errors_name_the_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    p = tmp_path / "x.yaml"
    p.write_text(body)
    with pytest.raises(DeidError) as exc:
        load_profile_file(p)
    assert str(exc.value).startswith(f"{p}: {key}:")


def test_invalid_yaml_and_conflicting_options(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("name: [x\n")
    with pytest.raises(DeidError, match=r"x\.yaml: not valid YAML at line"):
        load_profile_file(p)
    p.write_text("name: x\nversion: '1'\noptions: [rtnLongFullDatesOpt, rtnLongModifDatesOpt]\n")
    with pytest.raises(DeidError, match=r"x\.yaml: .*choose one"):
        load_profile_file(p)


def test_node_may_not_shadow_a_shipped_profile(tmp_path: Path) -> None:
    p = _write(tmp_path, "default", "name: default\nversion: '9'\n")
    with pytest.raises(DeidError, match=f"{p}: name: 'default' is a profile shipped"):
        available_profiles(tmp_path)


def test_docstring_examples() -> None:
    import doctest

    from mida.deid import profile_files

    assert doctest.testmod(profile_files).failed == 0


def test_option_names() -> None:
    assert option_key("rtnUIDsOpt") == "rtnUIDsOpt"
    assert option_key("RETAIN_UIDS") == "rtnUIDsOpt"
    assert option_key("clean-descriptors") == "cleanDescOpt"
    with pytest.raises(DeidError, match="retain-safe-private"):
        option_key("keep-everything")
