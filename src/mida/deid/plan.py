"""The policy: which operation each element gets under a profile.

:class:`Planner` turns ``(tag, VR, strict)`` into a :class:`Plan` once and
caches it; :mod:`mida.deid.engine` only executes plans. The order of
decisions, the treatment of each action and the resolution of combined
actions are documented in :mod:`mida.deid.engine`.

Two decisions cannot be made from the tag alone:

* under Retain Safe Private a private element's meaning depends on the
  private creator of its block in the same dataset, so its cached plan is
  :attr:`Op.PRIVATE` ("decide per dataset"); the engine reads the creators
  and asks :meth:`Planner.safe_private_plan` for the plan of each element the
  safe-private dictionary (:mod:`mida.deid.safe_private`) lists;
* under Clean Graphics the text of a Graphic Annotation text object
  (Unformatted Text Value) is cleaned, and when cleaning leaves nothing its
  fallback plan :attr:`Op.DROP_ITEM` removes the whole text object item.

Examples
--------
>>> from mida.deid.profile import Profile
>>> planner = Planner(Profile("p", "1", options=frozenset({"rtnSafePrivOpt"})))
>>> planner.plan(0x00191010, "DS", False).op  # decided per dataset
<Op.PRIVATE: 13>
>>> planner.safe_private_plan("DS", False).op, planner.safe_private_plan("PN", False).op
(<Op.KEEP: 0>, <Op.REMOVE: 1>)
>>> Planner(Profile("p", "1")).plan(0x00191010, "DS", False).op
<Op.REMOVE: 1>
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.valuerep import STANDARD_VR

from mida.deid.allowlist import (
    CLASS_UID_TAGS,
    CODE_TAGS,
    NUMERIC_VRS,
    STRING_NUMERIC_VRS,
    keep_unlisted,
)
from mida.deid.iod import iod_name, iod_types
from mida.deid.profile import Profile
from mida.deid.report import CombinedActionChoice, tag_str
from mida.deid.safe_private import SafePrivateDictionary, load_safe_private
from mida.deid.table import Action, Option, Rule, load_table
from mida.errors import DeidError


class Op(enum.IntEnum):
    """What the engine does with one element."""

    KEEP = 0  # leave as is (after a syntax check of a raw value, when given)
    REMOVE = 1
    SET = 2  # write Plan.value
    EMPTY_SEQUENCE = 3
    UID = 4  # replace each UID by its pseudonym
    SHIFT = 5  # shift DA/DT values by the patient's offset
    RECURSE = 6  # filter the items of a sequence
    AGE = 7  # keep an AS value, capped at 090Y
    PATIENT_ID = 8
    PATIENT_NAME = 9
    CODE = 10  # keep code text when the item's coding scheme is a standard one
    BAD = 11  # a value that must be kept or read has an invalid VR
    CLEAN = 12  # free text cleaned (mida.deid.freetext); Plan.value is the fallback plan
    PRIVATE = 13  # Retain Safe Private: decided per dataset, from the block's private creator
    SAFE_TEXT = 14  # safe private text (or opaque bytes): kept only if nothing identifying
    DROP_ITEM = 15  # fallback of a cleaned text object: the element and its item go


PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
OVERLAY_DATA = 0x60003000
REWRITTEN_META = frozenset({0x00020012, 0x00020013})
"""Implementation Class UID and Version Name: removed, then mida's are written."""

TEXT_DUMMY = "ANONYMIZED"
DUMMIES: Mapping[str, Any] = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "DS": "0",
    "IS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "SV": 0, "UV": 0, "AT": 0,
    "FL": 0.0, "FD": 0.0,
}  # fmt: skip
"""Dummy value of ``D`` per VR; other text VRs get :data:`TEXT_DUMMY`."""

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
"""Text VRs that the clean options clean (PN, dates and codes are never cleaned)."""
SR_TEXT_TAGS = frozenset({0x0040A160})
"""SR content text outside Table E.1-1 cleaned under Clean Structured Content: Text Value."""
GRAPHIC_TEXT_TAGS = frozenset({0x00700006})
"""Graphic annotation text outside Table E.1-1 cleaned under Clean Graphics: Unformatted
Text Value of a Text Object Sequence item."""
OPAQUE_VRS = frozenset({"OB", "UN"})
"""VRs that say nothing of a value: a private element's listed VR interprets it."""

BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
BINARY_DUMMY = b"\x00" * 8  # a whole number of items for every binary VR
VALID_VRS = frozenset(str(v) for v in STANDARD_VR)

_VR_SIZE: Mapping[str, int] = {
    "US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8, "AT": 4,
    "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8,
}  # fmt: skip
_SYNTAX: Mapping[str, re.Pattern[bytes]] = {
    "DS": re.compile(rb"[0-9+\-.eE \\\x00]*"),
    "IS": re.compile(rb"[0-9+\- \\\x00]*"),
    "CS": re.compile(rb"[\x20-\x7e\x00]*"),
    "TM": re.compile(rb"[0-9.:\- \\\x00]*"),
    "DA": re.compile(rb"[0-9.\- \\\x00]*"),
    "DT": re.compile(rb"[0-9.+\- \\\x00]*"),
}
SUPPORTED_OPTIONS: frozenset[str] = frozenset(
    {
        Option.RETAIN_SAFE_PRIVATE,
        Option.RETAIN_UIDS,
        Option.RETAIN_DEVICE_IDENTITY,
        Option.RETAIN_INSTITUTION_IDENTITY,
        Option.RETAIN_PATIENT_CHARACTERISTICS,
        Option.RETAIN_LONGITUDINAL_FULL_DATES,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
        Option.CLEAN_GRAPHICS,
    }
)
"""Options this version implements: all those of PS3.15 E.3 but Clean Pixel Data and
Clean Recognizable Visual Features, which are not Table E.1-1 columns (see
:mod:`mida.deid.pixels`)."""


@dataclass(frozen=True, slots=True)
class IodTypes:
    """The attribute types of one IOD (see :mod:`mida.deid.iod`)."""

    iod: str
    types: Mapping[str, str]

    def required(self, tag: int) -> bool:
        """Whether a top-level attribute is Type 1 or 2 (conditional included) here."""
        return self.types.get(keyword_for_tag(tag), "3")[0] in "12"


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one ``(tag, VR, strict)``.

    Attributes
    ----------
    op
        The operation.
    action
        The action letter counted in the report (``D Z X K C U``).
    vr
        VR of a written element (of the element, for :attr:`Op.PRIVATE` and
        :attr:`Op.SAFE_TEXT`).
    value
        Value written by :attr:`Op.SET`.
    strict
        For :attr:`Op.RECURSE`: filter the items without the text allow-list;
        for :attr:`Op.SAFE_TEXT`: no text is kept.
    check
        For :attr:`Op.KEEP` of a raw value: a syntax the bytes must match,
        or the item size their length must be a multiple of.
    combined
        The combined action resolved for this element, if any.
    private, unlisted
        Why an element is removed, for the report's counters.
    """

    op: Op
    action: str
    vr: str = ""
    value: Any = None
    strict: bool = False
    check: re.Pattern[bytes] | int | None = None
    combined: CombinedActionChoice | None = None
    private: bool = False
    unlisted: bool = False


def effective_vr(tag: int, raw_vr: str | None) -> str | None:
    """Return the VR that decides an element's fate; None when the file's VR is invalid.

    Implicit-VR (None) and ``UN`` elements take the dictionary VR; an
    ambiguous VR (``US or SS``, ``OB or OW``) is decided by its first choice.

    Examples
    --------
    >>> effective_vr(0x00100010, None), effective_vr(0x7FE00010, None)
    ('PN', 'OB')
    >>> effective_vr(0x00100010, "XX") is None
    True
    """
    if raw_vr is None or raw_vr == "UN":
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return "UN"
        return vr.split(" or ")[0]
    if " or " in raw_vr:
        return raw_vr.split(" or ")[0]
    return raw_vr if raw_vr in VALID_VRS else None


def dictionary_vr_or_un(tag: int) -> str:
    """Return the dictionary VR of `tag` (first of an ambiguous one), or ``UN``."""
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "UN"


def keep_plan(vr: str, action: str = "K", **kw: Any) -> Plan:
    """Keep, with the syntax or size check of `vr` applied to raw values."""
    check: re.Pattern[bytes] | int | None = _SYNTAX.get(vr) or _VR_SIZE.get(vr)
    return Plan(Op.KEEP, action, vr, check=check, **kw)


def _zero_plan(vr: str, **kw: Any) -> Plan:
    if vr == "SQ":
        return Plan(Op.EMPTY_SEQUENCE, "Z", vr, **kw)
    return Plan(Op.SET, "Z", vr, None, **kw)


def _is_reference_sequence(tag: int) -> bool:
    kw = keyword_for_tag(tag)
    return kw.startswith("Referenced") and kw.endswith("Sequence")


def resolve_combined(tag: int, action: Action, vr: str) -> Action:
    """Resolve a combined action without IOD knowledge: the safer choice.

    Used inside sequences and for objects whose IOD is unknown (see
    :mod:`mida.deid.engine`).

    Examples
    --------
    >>> resolve_combined(0x00080080, Action.REMOVE_OR_ZERO_OR_DUMMY, "LO")
    <Action.ZERO: 'Z'>
    >>> resolve_combined(0x00081140, Action.REMOVE_OR_ZERO_OR_UID, "SQ")
    <Action.UID: 'U'>
    """
    if action is Action.REMOVE_OR_ZERO:
        return Action.ZERO
    if action is Action.REMOVE_OR_DUMMY:
        return Action.DUMMY
    if action is Action.ZERO_OR_DUMMY:
        id_like = vr == "UI" or keyword_for_tag(tag).endswith("ID")
        return Action.DUMMY if id_like else Action.ZERO
    if action is Action.REMOVE_OR_ZERO_OR_DUMMY:
        if vr == "UI" or (vr == "SQ" and _is_reference_sequence(tag)):
            return Action.DUMMY
        return Action.ZERO
    if action is Action.REMOVE_OR_ZERO_OR_UID:
        return Action.UID if vr in ("UI", "SQ") else Action.ZERO
    return action


def resolve_by_type(tag: int, action: Action, vr: str, typ: str) -> Action:
    """Resolve a combined action by the attribute's type in the object's IOD.

    `typ` is ``1``, ``1C``, ``2``, ``2C`` or ``3``, or ``""`` when the IOD
    does not include the attribute (treated as Type 3). PS3.15 E.1.1: ``X``
    unless ``Z`` (Type 2) or ``D`` (Type 1) is required for conformance.
    ``X/Z`` on a Type 1 attribute gets ``D`` (an empty value would break the
    IOD). ``X/Z/U*`` keeps sequences and UIDs with their UIDs replaced
    whatever the type, so references stay resolvable (``U`` is one of its
    permitted choices and retains nothing but pseudonymous UIDs).

    Examples
    --------
    >>> resolve_by_type(0x00081110, Action.REMOVE_OR_ZERO, "SQ", "3")
    <Action.REMOVE: 'X'>
    >>> resolve_by_type(0x00080090, Action.REMOVE_OR_ZERO_OR_DUMMY, "PN", "2")
    <Action.ZERO: 'Z'>
    >>> resolve_by_type(0x00200010, Action.ZERO_OR_DUMMY, "SH", "1")
    <Action.DUMMY: 'D'>
    >>> resolve_by_type(0x00081140, Action.REMOVE_OR_ZERO_OR_UID, "SQ", "3")
    <Action.UID: 'U'>
    """
    level = typ.rstrip("C")  # 1C and 2C are required when their condition holds
    if action is Action.REMOVE_OR_ZERO_OR_UID:
        if vr in ("UI", "SQ"):
            return Action.UID
        return Action.ZERO if level == "2" else Action.DUMMY if level == "1" else Action.REMOVE
    if action is Action.ZERO_OR_DUMMY:
        return Action.DUMMY if level == "1" else Action.ZERO
    if level == "1":
        return Action.DUMMY
    if level == "2":
        return Action.DUMMY if action is Action.REMOVE_OR_DUMMY else Action.ZERO
    return Action.REMOVE


PlanCache = dict[tuple[int, str | None, bool], Plan]


class Planner:
    """Decides, and caches, the plan of every ``(tag, VR, strict)``.

    Parameters
    ----------
    profile
        The profile to apply.

    Raises
    ------
    DeidError
        If the profile selects an option this version does not implement.
    """

    def __init__(self, profile: Profile) -> None:
        unsupported = sorted(set(profile.options) - SUPPORTED_OPTIONS)
        if unsupported:
            raise DeidError(
                f"profile {profile.name!r} selects {', '.join(unsupported)}, which this "
                f"version does not implement; supported options: "
                f"{', '.join(sorted(SUPPORTED_OPTIONS))}"
            )
        self.profile = profile
        self.table = load_table()
        options = profile.options
        self.shift_dates = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options
        self.full_dates = Option.RETAIN_LONGITUDINAL_FULL_DATES in options
        self.keep_uids = Option.RETAIN_UIDS in options
        cleans = {Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT} & options
        self.clean_sr_text = Option.CLEAN_STRUCTURED_CONTENT in options
        self.cleans = bool(cleans)
        """Whether descriptors or structured content are cleaned (and safe private text kept)."""
        self.clean_graphics = Option.CLEAN_GRAPHICS in options
        self.safe_private: SafePrivateDictionary | None = (
            load_safe_private() if Option.RETAIN_SAFE_PRIVATE in options else None
        )
        """The safe-private dictionary under Retain Safe Private, else None."""
        self.collects_known = self.cleans or self.clean_graphics or self.safe_private is not None
        """Whether text may be cleaned or private values kept: the engine then collects
        the identifying values of each instance, which no kept value may repeat."""
        self._safe_plans: dict[tuple[str, bool], Plan] = {}
        # Rows whose C comes from a clean option (not from a date option).
        self._cleaned = frozenset(
            r for r in self.table if any(r.options.get(o) is Action.CLEAN for o in cleans)
        )
        # Sequences cleaned by filtering their items: the structured content
        # ones (Content, Acquisition Context, Specimen Preparation). The coded
        # sequences of Clean Descriptors (Request Attributes, Reason for ... Code)
        # keep the Basic action: filtering would leave invalid code items.
        self._cleaned_sequences = frozenset(
            r
            for r in self._cleaned
            if self.clean_sr_text and r.options.get(Option.CLEAN_STRUCTURED_CONTENT) is Action.CLEAN
        )
        # Rows whose C comes from Clean Graphics: Curve Data, Overlay Data and
        # Comments are removed whole; Graphic Annotation Sequence is entered.
        self._graphics = frozenset(
            r
            for r in self.table
            if self.clean_graphics and r.options.get(Option.CLEAN_GRAPHICS) is Action.CLEAN
        )
        self._actions: dict[Rule, Action] = {r: r.action_for(options) for r in self.table}
        overlay = self.table.lookup(OVERLAY_DATA)
        self._drop_overlays = overlay is not None and self._actions[overlay] in (
            Action.REMOVE,
            Action.CLEAN,  # Clean Graphics: overlays go whole (they may hold burned-in text)
        )
        self.cache: PlanCache = {}
        """Plans of nested elements, and of top-level ones of an unknown IOD."""
        self._iod_caches: dict[str, PlanCache] = {}

    def top_level(self, sop_class_uid: str) -> tuple[PlanCache, IodTypes | None]:
        """The plan cache and attribute types for the top level of an object.

        Objects of a known IOD get their own cache, since combined actions
        resolve by type there; others share :attr:`cache`.
        """
        iod = iod_name(sop_class_uid)
        types = iod_types(sop_class_uid) if iod else None
        if iod is None or types is None:
            return self.cache, None
        cache = self._iod_caches.get(iod)
        if cache is None:
            cache = self._iod_caches[iod] = {}
        return cache, IodTypes(iod, types)

    def plan(
        self, tag: int, raw_vr: str | None, strict: bool, types: IodTypes | None = None
    ) -> Plan:
        """Return the plan for an element (cached by the engine).

        `types` are the attribute types of the object's IOD, given for
        top-level elements only.
        """
        vr = effective_vr(tag, raw_vr)
        if vr is None:  # the file's VR is not a DICOM VR: only dropping is safe
            plan = self._decide(tag, dictionary_vr_or_un(tag), strict, types)
            if plan.op in (Op.REMOVE, Op.SET, Op.EMPTY_SEQUENCE):
                return plan
            if plan.op is Op.PRIVATE:  # a private value that cannot be read is not kept
                return Plan(Op.REMOVE, "X", private=True)
            return Plan(Op.BAD, plan.action)
        return self._decide(tag, vr, strict, types)

    def _resolve(
        self, tag: int, action: Action, vr: str, types: IodTypes | None
    ) -> tuple[Action, str]:
        if types is None:
            return resolve_combined(tag, action, vr), "type unknown"
        typ = types.types.get(keyword_for_tag(tag), "")
        basis = f"Type {typ} in {types.iod}" if typ else f"not in {types.iod}"
        return resolve_by_type(tag, action, vr, typ), basis

    def _decide(self, tag: int, vr: str, strict: bool, types: IodTypes | None) -> Plan:
        override = self.profile.overrides.get(tag)
        if override is not None:
            return self._override_plan(tag, vr, override, strict)
        group = tag >> 16
        if tag & 0xFFFF == 0:  # group length: the writer recomputes the meta one
            return Plan(Op.KEEP, "K") if group == 0x0002 else Plan(Op.REMOVE, "X")
        if group & 1:
            return self.private_plan(tag, vr)
        if tag in REWRITTEN_META:  # the engine writes mida's own into the file meta
            return Plan(Op.REMOVE, "X")
        if self._drop_overlays and group & 0xFF01 == 0x6000:
            return Plan(Op.REMOVE, "X")
        rule = self.table.lookup(tag)
        if rule is None:
            return self._unlisted_plan(tag, vr, strict)
        action = self._actions[rule]
        if action is Action.CLEAN:
            if vr in ("DA", "DT", "TM") and self.shift_dates:
                # whole-day shifts leave times of day unchanged
                return keep_plan(vr, "C") if vr == "TM" else Plan(Op.SHIFT, "C", vr)
            if rule in self._graphics:
                if vr == "SQ":  # Graphic Annotation: items entered, their text cleaned
                    return Plan(Op.RECURSE, "C", vr, strict=strict)
                return Plan(Op.REMOVE, "X")  # curves and overlays go whole
            if rule in self._cleaned:
                if vr == "SQ" and rule in self._cleaned_sequences:
                    # items filtered by the same rules; their text cleaned
                    return Plan(Op.RECURSE, "C", vr, strict=strict)
                if vr in TEXT_VRS:
                    basic = self._basic_plan(tag, vr, rule, strict, types)
                    return Plan(Op.CLEAN, "C", vr, basic)
            action = rule.basic  # a clean this version cannot do: the basic action
        combined = None
        if action.is_combined:
            resolved, basis = self._resolve(tag, action, vr, types)
            combined = CombinedActionChoice(tag, rule.name, action.value, resolved.value, basis)
            action = resolved
        return self._action_plan(tag, vr, action, strict, combined)

    def _basic_plan(
        self, tag: int, vr: str, rule: Rule, strict: bool, types: IodTypes | None
    ) -> Plan:
        """The Basic Profile's plan: what a cleaned value that is left empty gets."""
        action = rule.basic
        if action.is_combined:
            action = self._resolve(tag, action, vr, types)[0]
        return self._action_plan(tag, vr, action, strict, None)

    def private_plan(self, tag: int, vr: str) -> Plan:
        """Decide a private element by its tag: removed, private creators included.

        Under Retain Safe Private the decision needs the block's private
        creator, which only the dataset holds: the plan is then
        :attr:`Op.PRIVATE` (counted ``X`` until the engine keeps the element),
        and the engine decides each element with :meth:`safe_private_plan`.
        """
        if self.safe_private is not None:
            return Plan(Op.PRIVATE, "X", vr, private=True)
        return Plan(Op.REMOVE, "X", private=True)

    def safe_private_plan(self, vr: str, strict: bool) -> Plan:
        """The plan of a private element that the safe-private dictionary lists.

        `vr` is the VR the value is read as: the file's, or for an element
        without one (implicit VR, ``UN``, ``OB``) the single VR the dictionary
        lists for it (``UN`` when it lists none or several). Listed values are
        treated like standard attributes outside Table E.1-1, except for text:

        * numbers and code strings (``US``... ``DS IS CS``) are kept after the
          syntax or size check of their VR; other binary data is kept;
        * ``UI`` values are pseudonymized (kept under Retain UIDs); ``DA DT``
          shifted, kept or removed and ``TM`` kept or removed as the date
          options say;
        * a sequence is kept and its items are filtered by the same rules;
        * text (``LO SH ST LT UT UC``, and ``OB``/``UN`` bytes that read as
          text) is kept only under Clean Descriptors or Clean Structured
          Content, outside strict sequences, when the free-text cleaner finds
          nothing identifying in it: it is kept verbatim or removed, never
          rewritten (:attr:`Op.SAFE_TEXT`);
        * ``PN``, ``AE``, ``AS``, ``UR`` are removed: a person, a device, a
          free address.

        Examples
        --------
        >>> from mida.deid.profile import Profile
        >>> planner = Planner(Profile("p", "1", options=frozenset({"rtnSafePrivOpt"})))
        >>> [planner.safe_private_plan(vr, False).op.name for vr in ("FL", "UI", "LO", "DA")]
        ['KEEP', 'UID', 'REMOVE', 'REMOVE']
        """
        key = (vr, strict)
        plan = self._safe_plans.get(key)
        if plan is None:
            plan = self._safe_plans[key] = self._safe_private_plan(vr, strict)
        return plan

    def _safe_private_plan(self, vr: str, strict: bool) -> Plan:
        removed = Plan(Op.REMOVE, "X", private=True)
        if vr == "SQ":
            return Plan(Op.RECURSE, "K", vr, strict=strict)
        if vr == "UI":
            return keep_plan(vr) if self.keep_uids else Plan(Op.UID, "U", vr)
        if vr in NUMERIC_VRS or vr in STRING_NUMERIC_VRS:
            return keep_plan(vr)
        if vr in ("DA", "DT"):
            if self.shift_dates:
                return Plan(Op.SHIFT, "C", vr)
            return keep_plan(vr) if self.full_dates else removed
        if vr == "TM":
            return keep_plan(vr) if self.shift_dates or self.full_dates else removed
        if vr in TEXT_VRS:
            if strict or not self.cleans:
                return removed
            return Plan(Op.SAFE_TEXT, "K", vr, strict=strict)
        if vr in OPAQUE_VRS:  # binary kept, text checked (by the engine)
            return Plan(Op.SAFE_TEXT, "K", vr, strict=strict or not self.cleans)
        if vr in BINARY_VRS:
            return keep_plan(vr)
        return removed

    def _action_plan(
        self,
        tag: int,
        vr: str,
        action: Action,
        strict: bool,
        combined: CombinedActionChoice | None,
    ) -> Plan:
        letter = action.value
        if tag == PATIENT_NAME and action in (Action.ZERO, Action.DUMMY):
            return Plan(Op.PATIENT_NAME, letter, "PN", combined=combined)
        if tag == PATIENT_ID and action in (Action.ZERO, Action.DUMMY):
            return Plan(Op.PATIENT_ID, letter, "LO", combined=combined)
        if action is Action.REMOVE:
            return Plan(Op.REMOVE, letter, combined=combined)
        if action is Action.ZERO:
            return _zero_plan(vr, combined=combined)
        if action is Action.DUMMY or action is Action.UID:
            if vr == "SQ":
                strict_items = strict or action is Action.DUMMY
                return Plan(Op.RECURSE, letter, vr, strict=strict_items, combined=combined)
            if vr == "UI":
                return Plan(Op.UID, letter, vr, combined=combined)
            value = DUMMIES.get(vr, BINARY_DUMMY if vr in BINARY_VRS else TEXT_DUMMY)
            return Plan(Op.SET, letter, vr, value, combined=combined)
        # K: an option retains it
        if vr == "SQ":
            return Plan(Op.RECURSE, letter, vr, strict=strict, combined=combined)
        if vr == "AS":
            return Plan(Op.AGE, letter, vr, combined=combined)
        return keep_plan(vr, letter, combined=combined)

    def _unlisted_plan(self, tag: int, vr: str, strict: bool) -> Plan:
        if vr == "SQ":
            return Plan(Op.RECURSE, "K", vr, strict=strict)
        if vr == "UI":
            if tag in CLASS_UID_TAGS or self.keep_uids:
                return keep_plan(vr)
            return Plan(Op.UID, "U", vr)
        if vr in NUMERIC_VRS or vr in STRING_NUMERIC_VRS:
            return keep_plan(vr)
        if vr in ("DA", "DT"):
            if self.shift_dates:
                return Plan(Op.SHIFT, "C", vr)
            if self.full_dates:
                return keep_plan(vr)
        elif vr == "TM" and (self.shift_dates or self.full_dates):
            return keep_plan(vr)
        if tag in CODE_TAGS:
            return Plan(Op.CODE, "K", vr, strict=strict)
        if self.clean_sr_text and tag in SR_TEXT_TAGS and vr in TEXT_VRS:
            return Plan(Op.CLEAN, "C", vr, Plan(Op.REMOVE, "X", unlisted=True))
        if self.clean_graphics and tag in GRAPHIC_TEXT_TAGS and vr in TEXT_VRS and not strict:
            # a text object left without text is invalid: its item goes
            return Plan(Op.CLEAN, "C", vr, Plan(Op.DROP_ITEM, "X", unlisted=True))
        if keep_unlisted(tag, vr, strict=strict):
            return keep_plan(vr)
        return Plan(Op.REMOVE, "X", unlisted=True)

    def _override_plan(self, tag: int, vr: str, override: str, strict: bool) -> Plan:
        if override == "remove":
            return Plan(Op.REMOVE, "X")
        if override == "keep":
            if vr == "SQ":  # the sequence stays; its items are still filtered
                return Plan(Op.RECURSE, "K", vr, strict=strict)
            return Plan(Op.KEEP, "K")
        if vr == "SQ":
            raise DeidError(
                f"profile {self.profile.name!r} overrides sequence {tag_str(tag)} with "
                "'replace:'; a sequence can only be kept or removed"
            )
        text = override.removeprefix("replace:")
        value: Any = text
        try:
            if vr in ("US", "SS", "UL", "SL", "SV", "UV", "AT"):
                value = int(text, 0)
            elif vr in ("FL", "FD"):
                value = float(text)
        except ValueError:
            raise DeidError(
                f"profile {self.profile.name!r}: the override value for {tag_str(tag)} is "
                f"not a number as VR {vr} requires"
            ) from None
        return Plan(Op.SET, "D", vr, value)


__all__ = [
    "DUMMIES",
    "GRAPHIC_TEXT_TAGS",
    "OPAQUE_VRS",
    "SR_TEXT_TAGS",
    "SUPPORTED_OPTIONS",
    "TEXT_DUMMY",
    "TEXT_VRS",
    "IodTypes",
    "Op",
    "Plan",
    "PlanCache",
    "Planner",
    "dictionary_vr_or_un",
    "effective_vr",
    "keep_plan",
    "resolve_by_type",
    "resolve_combined",
]
