"""De-identification profiles: which PS3.15 options apply, plus overrides.

A :class:`Profile` is declarative: a name and version (recorded in every
de-identified instance), the selected options of the Basic Application Level
Confidentiality Profile (PS3.15 E.3), and per-tag overrides. Two profiles are
built in:

``basic``
    The Basic Profile alone: every date, time, name and identifier in
    Table E.1-1 is removed, emptied or replaced.
``default``
    Basic Profile + Retain Safe Private (private attributes that the
    safe-private dictionary lists: :mod:`mida.deid.safe_private`) + Retain
    Longitudinal Temporal Information with Modified Dates (dates shifted by a
    per-patient offset) + Retain Patient Characteristics (sex, age capped at
    90 years, size, weight...) + Clean Descriptors + Clean Structured Content
    + Clean Graphics (descriptions, comments, SR text and graphic annotation
    text keep their clinical words, lose names, IDs, dates, phone numbers and
    addresses: :mod:`mida.deid.freetext`). This is what AI training usually
    needs.

Examples
--------
>>> list_profiles()
['basic', 'default', 'research-full-dates']
>>> p = get_profile("default")
>>> sorted(p.options)  # doctest: +NORMALIZE_WHITESPACE
['cleanDescOpt', 'cleanGraphOpt', 'cleanStructContOpt', 'rtnLongModifDatesOpt',
 'rtnPatCharsOpt', 'rtnSafePrivOpt']
>>> [c.CodeValue for c in p.method_codes()]
['113100', '113103', '113104', '113105', '113107', '113108', '113111']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from mida.deid.table import Option
from mida.errors import DeidError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,23}$")
_VERSION = re.compile(r"^[A-Za-z0-9_.-]{1,16}$")
_OVERRIDE = re.compile(r"^(keep|remove|replace:.*)$", re.DOTALL)


class MethodCode(NamedTuple):
    """A code of CID 7050 "De-identification Method" (scheme ``DCM``)."""

    CodeValue: str
    CodeMeaning: str
    CodingSchemeDesignator: str = "DCM"


BASIC_PROFILE_CODE = MethodCode("113100", "Basic Application Confidentiality Profile")
"""CID 7050 code of the Basic Profile itself."""

OPTION_CODES: Mapping[str, MethodCode] = MappingProxyType(
    {
        Option.CLEAN_GRAPHICS: MethodCode("113103", "Clean Graphics Option"),
        Option.CLEAN_STRUCTURED_CONTENT: MethodCode("113104", "Clean Structured Content Option"),
        Option.CLEAN_DESCRIPTORS: MethodCode("113105", "Clean Descriptors Option"),
        Option.RETAIN_LONGITUDINAL_FULL_DATES: MethodCode(
            "113106", "Retain Longitudinal Temporal Information Full Dates Option"
        ),
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: MethodCode(
            "113107", "Retain Longitudinal Temporal Information Modified Dates Option"
        ),
        Option.RETAIN_PATIENT_CHARACTERISTICS: MethodCode(
            "113108", "Retain Patient Characteristics Option"
        ),
        Option.RETAIN_DEVICE_IDENTITY: MethodCode("113109", "Retain Device Identity Option"),
        Option.RETAIN_UIDS: MethodCode("113110", "Retain UIDs Option"),
        Option.RETAIN_SAFE_PRIVATE: MethodCode("113111", "Retain Safe Private Option"),
        Option.RETAIN_INSTITUTION_IDENTITY: MethodCode(
            "113112", "Retain Institution Identity Option"
        ),
    }
)
"""CID 7050 code of each option, recorded in DeidentificationMethodCodeSequence."""


@dataclass(frozen=True)
class Profile:
    """A named, versioned de-identification profile.

    Parameters
    ----------
    name
        Short lower-case identifier, e.g. ``"default"``.
    version
        Version of the profile; change it whenever its behaviour changes,
        since it is recorded in every de-identified instance.
    options
        Selected option keys (see :class:`~mida.deid.table.Option`); stored
        as plain strings.
    overrides
        Tag (as an int, e.g. ``0x00081030``) to ``"keep"``, ``"remove"`` or
        ``"replace:<value>"``; applied at every depth before the table.
    description
        One line for humans.

    Raises
    ------
    DeidError
        If the name, version, an option or an override is invalid, or both
        longitudinal date options are selected.
    """

    name: str
    version: str
    options: frozenset[str] = frozenset()
    overrides: Mapping[int, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DeidError(
                f"invalid profile name {self.name!r}: use 1-24 lower-case letters, digits, "
                "'_', '-' or '.'"
            )
        if not _VERSION.match(self.version):
            raise DeidError(f"invalid version {self.version!r} for profile {self.name!r}")
        options: set[str] = set()
        for opt in self.options:
            try:
                options.add(Option(opt).value)
            except ValueError:
                known = ", ".join(o.value for o in Option)
                raise DeidError(
                    f"unknown option {opt!r} in profile {self.name!r}; known options: {known}"
                ) from None
        dates = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if dates <= options:
            raise DeidError(
                f"profile {self.name!r} selects both rtnLongFullDatesOpt and "
                "rtnLongModifDatesOpt; choose one"
            )
        object.__setattr__(self, "options", frozenset(options))
        for tag, action in self.overrides.items():
            if not isinstance(tag, int) or not 0 <= tag <= 0xFFFFFFFF:
                raise DeidError(f"override key {tag!r} in profile {self.name!r} is not a tag")
            if not isinstance(action, str) or not _OVERRIDE.match(action):
                raise DeidError(
                    f"override for ({tag >> 16:04X},{tag & 0xFFFF:04X}) in profile "
                    f"{self.name!r} must be 'keep', 'remove' or 'replace:<value>'"
                )
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    def method_codes(self) -> list[MethodCode]:
        """Return the CID 7050 codes that describe this profile, Basic first."""
        return [BASIC_PROFILE_CODE] + [
            OPTION_CODES[o] for o in sorted(self.options, key=lambda o: OPTION_CODES[o])
        ]


_BUILTIN: Mapping[str, Profile] = MappingProxyType(
    {
        "basic": Profile(
            name="basic",
            version="1",
            description="PS3.15 Basic Application Level Confidentiality Profile only",
        ),
        "default": Profile(
            name="default",
            version="3",
            options=frozenset(
                {
                    Option.RETAIN_SAFE_PRIVATE,
                    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
                    Option.RETAIN_PATIENT_CHARACTERISTICS,
                    Option.CLEAN_DESCRIPTORS,
                    Option.CLEAN_STRUCTURED_CONTENT,
                    Option.CLEAN_GRAPHICS,
                }
            ),
            # Occupation is C under Clean Descriptors, but a rare occupation
            # identifies a person and no cleaning can tell which: removed.
            overrides={0x00102180: "remove"},
            description=(
                "Basic Profile + Retain Safe Private + Retain Longitudinal Temporal "
                "Information with Modified Dates + Retain Patient Characteristics + Clean "
                "Descriptors + Clean Structured Content + Clean Graphics"
            ),
        ),
    }
)


def list_profiles(home: Path | None = None) -> list[str]:
    """Return the names of the available profiles, sorted.

    Those built in, the YAML files shipped with mida and, given a node's
    `home`, the node's own ``home/profiles/*.yaml``
    (:mod:`mida.deid.profile_files`).
    """
    from mida.deid.profile_files import available_profiles

    return sorted(set(_BUILTIN) | set(available_profiles(home)))


def get_profile(name: str, home: Path | None = None) -> Profile:
    """Return the profile called `name` (see :func:`list_profiles` for where from).

    Raises
    ------
    DeidError
        If no profile has that name (the message lists the available ones),
        or a profile file is invalid (the message names the file and key).
    """
    builtin = _BUILTIN.get(name)
    if builtin is not None:
        return builtin
    from mida.deid.profile_files import available_profiles

    found = available_profiles(home)
    if name in found:
        return found[name]
    raise DeidError(
        f"unknown de-identification profile {name!r}; available profiles: "
        f"{', '.join(list_profiles(home))}"
    )


def parse_overrides(items: Iterable[tuple[str | int, str]]) -> dict[int, str]:
    """Turn ``(tag, action)`` pairs into an overrides mapping.

    Tags may be ints, ``"(gggg,eeee)"``, ``"ggggeeee"`` or DICOM keywords.

    Examples
    --------
    >>> parse_overrides([("(0008,1030)", "keep"), ("BodyPartExamined", "remove")])
    {528432: 'keep', 1572885: 'remove'}
    """
    from pydicom.datadict import tag_for_keyword

    out: dict[int, str] = {}
    for key, action in items:
        if isinstance(key, int):
            out[key] = action
            continue
        text = key.strip()
        tag = tag_for_keyword(text)
        if tag is None:
            digits = text.strip("()").replace(",", "")
            try:
                tag = int(digits, 16) if len(digits) == 8 else None
            except ValueError:
                tag = None
        if tag is None:
            raise DeidError(f"override key {key!r} is neither a tag nor a DICOM keyword")
        out[tag] = action
    return out


__all__ = [
    "BASIC_PROFILE_CODE",
    "OPTION_CODES",
    "MethodCode",
    "Profile",
    "get_profile",
    "list_profiles",
    "parse_overrides",
]
