"""The de-identification engine: PS3.15 Basic Profile and options on a dataset.

:class:`Deidentifier` applies a :class:`~mida.deid.profile.Profile` to a
pydicom dataset in place, before anything is stored. Every element at every
depth (sequences inside sequences, and the file meta information) gets one
operation, decided by :class:`~mida.deid.plan.Planner` once per ``(tag, VR,
strict)`` and cached, in this order:

1. a profile override (``keep``, ``remove``, ``replace:<value>``);
2. group length elements ``(gggg,0000)`` are removed (the file meta group
   length stays: the writer recomputes it);
3. private elements (odd groups, creators included) are removed, except
   under Retain Safe Private those the safe-private dictionary lists (see
   below); :meth:`~mida.deid.plan.Planner.private_plan` decides;
4. the Table E.1-1 action under the profile's options
   (:mod:`mida.deid.table`);
5. attributes absent from the table follow :mod:`mida.deid.allowlist`:
   numbers and code strings kept, UIDs pseudonymized, sequences entered,
   text and other bulk data removed unless allow-listed (safe by default);
   code text (Code Value, Code Meaning...) is kept only in items of a
   standard coding scheme.

Actions
-------
``X`` removes; ``Z`` empties (a sequence becomes empty); ``D`` writes a dummy
valid for the VR (PN ``ANONYMOUS``, DA ``19000101``, TM ``000000``, DT
``19000101000000``, AS ``000D``, numbers 0, other text ``ANONYMIZED``, binary
eight zero bytes, UI the pseudonym of the original); a sequence under ``D`` is
kept and its items are filtered in *strict* mode, where the text allow-list
is off (a code in Person Identification Code Sequence may name a person);
``U`` replaces UIDs by :meth:`~mida.deid.pseudonyms.Pseudonymizer.uid`;
``K`` keeps (Patient's Age is capped at ``090Y``, HIPAA); ``C`` shifts DA
and DT values by the patient's offset under the Modified Dates option and
keeps TM values (the shift is whole days). Under Clean Descriptors and Clean
Structured Content, ``C`` on a text value (``LO SH ST LT UT UC``, and Text
Value (0040,A160) at any depth) removes names, IDs, dates, phone numbers and
addresses with :class:`~mida.deid.freetext.FreeTextCleaner`, given the
identifying values of the same dataset read before anything is replaced; a
value left empty gets the Basic Profile action; ``C`` on a structured
content sequence (Content, Acquisition Context, Specimen Preparation) filters
its items, while the coded sequences of Clean Descriptors keep the Basic
action (filtering would leave invalid code items). Any other ``C`` (a text
or OB timestamp, Timezone Offset From UTC) falls back to the Basic Profile
action, which retains less. A raw value that
is kept must match its VR (``DS``, ``IS``, ``CS``, ``TM``... syntax, binary
length a multiple of the item size), else the instance is quarantined.

Under Clean Graphics (product decision: "overlays are removed under Clean
Graphics") the ``C`` of Overlay Data and Overlay Comments removes the
overlay groups ``60xx`` whole, as without the option, and the ``C`` of Curve
Data removes the curve groups ``50xx`` whole: a bitmap or a curve cannot be
cleaned of text. Graphic Annotation Sequence (``D`` without the option: kept,
items filtered strictly, so its text goes) is kept with its items filtered by
the normal rules: graphic objects (coordinates, types, units) stay, and the
Unformatted Text Value (0070,0006) of each text object is cleaned with
:class:`~mida.deid.freetext.FreeTextCleaner`, like Clean Descriptors text; a
text object whose text is emptied (or cannot be decoded) is dropped as an
item, and a Text Object Sequence left without items is removed. Other text in
those items follows the normal rules.

Patient's Name and Patient ID become the patient pseudonym
(:meth:`~mida.deid.pseudonyms.Pseudonymizer.patient_id` of the original ID
and issuer; without an ID, of the name and birth date); the date offset
derives from the same key. Every UI value at any depth, file meta included,
becomes its pseudonym except UIDs under the DICOM root and the class-like
UIDs of :data:`~mida.deid.allowlist.CLASS_UID_TAGS`. Repeating overlay groups
``60xx`` are removed whole when Overlay Data is removed, so no overlay is
left without its data. A non-zero preamble is zeroed.

Retain Safe Private
-------------------
A private element ``(gggg,xxee)`` means what the private creator of block
``xx`` in the *same dataset* says, so its cached plan is only "private"; the
engine collects the private elements of each dataset it walks (top level or
item), reads the creators ``(gggg,0010-00FF)`` there, and looks each element up
as ``(creator, gggg, ee)`` in :mod:`mida.deid.safe_private`, together with the
path of sequences enclosing the dataset (a listing applies at the place the
dictionary lists it, nowhere else). An unlisted element, or one listed with
another VR, is removed; a listed one gets
:meth:`~mida.deid.plan.Planner.safe_private_plan`: numbers and code strings
kept after their syntax check (a value that fails it is removed rather than
quarantined: the element is optional), UIDs pseudonymized, dates as the date
options say, sequences kept with their items filtered by these same rules,
text kept verbatim only under a clean option when the free-text cleaner finds
nothing identifying in it, never rewritten. An element without a VR in the
file (implicit VR, ``UN``, ``OB``) is read as the single VR the dictionary
lists for it, else as opaque bytes: binary data stays, bytes that read as
text are text. A creator stays iff an element of its block stays; every
removed private element counts in :attr:`DeidReport.private_removed`. Only
private elements pay for this: the plans of standard ones are unchanged.

Combined actions
----------------
Table E.1-1 gives combined actions whose choice depends on the attribute's
Type in the IOD. This version has no IOD table yet, so each is resolved to
the safer compliant choice, and every resolution is recorded in
:attr:`DeidReport.combined_choices`:

==========  =============================================================
``X/Z``     ``Z``: the attribute stays present (valid for Type 2) and empty.
``X/D``     ``D``: a dummy is valid whatever the Type.
``Z/D``     ``D`` for UI and ID attributes (Patient ID gets the pseudonym),
            else ``Z``.
``X/Z/D``   ``D`` for UI values and reference sequences (``Referenced ...
            Sequence``: kept, items filtered strictly, UIDs pseudonymized),
            else ``Z``.
``X/Z/U*``  ``U`` for UI values and for sequences (items filtered, UIDs
            pseudonymized, so references still resolve), else ``Z``.
==========  =============================================================

Safety of errors
----------------
Messages never carry values, and values are decoded without pydicom's
validators, whose warnings quote them into the log. A value that must be
read or kept but cannot be decoded raises
:class:`~mida.errors.QuarantineError` with reason ``BAD_VR`` naming only the
tag and VR; any other failure raises ``DEID_FAILED`` naming only the
exception type. After an error the dataset is half-processed and must be
discarded.

Examples
--------
>>> from pydicom.dataset import Dataset
>>> ds = Dataset()
>>> ds.PatientName = "DOE^JANE"
>>> ds.PatientID = "12345"
>>> ds.StudyDate = "20240301"
>>> ds.StudyInstanceUID = "1.2.3.4"
>>> ds.InstitutionName = "General Hospital"
>>> ds.Modality = "CT"
>>> engine = Deidentifier(b"k" * 32, get_profile("default"))
>>> report = engine.apply(ds)
>>> ds.PatientID == str(ds.PatientName) == report.patient_pseudonym
True
>>> "InstitutionName" in ds, ds.Modality, ds.StudyInstanceUID.startswith("2.25.")
(True, 'CT', True)
>>> ds.InstitutionName, ds.PatientIdentityRemoved
('', 'YES')
"""

from __future__ import annotations

import hashlib
import re
import warnings

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from mida import __version__
from mida.deid.allowlist import STANDARD_CODING_SCHEMES
from mida.deid.elements import (
    Element,
    Encoding,
    drop,
    encoding_of,
    put,
    put_items,
    read_string,
    read_values,
    snapshot,
)
from mida.deid.freetext import FreeTextCleaner
from mida.deid.plan import (
    OPAQUE_VRS,
    SUPPORTED_OPTIONS,
    TEXT_VRS,
    VALID_VRS,
    IodTypes,
    Op,
    Plan,
    PlanCache,
    Planner,
    dictionary_vr_or_un,
)
from mida.deid.profile import Profile, get_profile
from mida.deid.pseudonyms import Pseudonymizer, patient_key, shift_da, shift_dt
from mida.deid.report import CombinedActionChoice, DeidReport, tag_str
from mida.deid.safe_private import sequence_component
from mida.deid.table import TABLE_EDITION, Option
from mida.errors import MidaError, QuarantineError, QuarantineReason

IMPLEMENTATION_VERSION_NAME = "MIDA_0_1"
"""(0002,0013) written into the file meta of every de-identified instance."""

IMPLEMENTATION_CLASS_UID = "2.25." + str(
    int.from_bytes(hashlib.sha256(b"mida ImplementationClassUID MIDA_0_1").digest()[:16], "big")
)
"""(0002,0012): a UUID-derived UID fixed for this implementation."""

_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_ISSUER = 0x00100021
_BIRTH_DATE = 0x00100030
_CHARSET = 0x00080005
_CODING_SCHEME = 0x00080102
_SOP_INSTANCE_UID = 0x00080018
_SOP_CLASS_UID = 0x00080016
_CODE_MEANING = 0x00080104
_STUDY_UID = 0x0020000D
_KNOWN_TAGS: tuple[BaseTag, ...] = tuple(BaseTag(t) for t in (
    0x00100010, 0x00101001, 0x00101005, 0x00101060, 0x00080090, 0x00081050, 0x00081060,
    0x00081070, 0x00081048, 0x00321032, 0x00402008, 0x00102297,  # person names
    0x00100020, 0x00101000, 0x00100021, 0x00080050, 0x00200010, 0x00101090,  # identifiers
    0x00101040, 0x00102154, 0x00102155,  # address, telephone numbers
))  # fmt: skip
"""Top-level values removed wherever they appear in cleaned text."""
_INSTITUTION_TAGS = tuple(BaseTag(t) for t in (0x00080080, 0x00080081, 0x00081040))
_OTHER_IDS_SEQUENCE = BaseTag(0x00101002)
_CONTENT_SEQUENCE = 0x0040A730
_SR_PERSON_NAME = 0x0040A123
_META_ENCODING: Encoding = (False, True)  # file meta is always explicit VR little endian
_AS = re.compile(r"^(\d{1,3}) ?([DWMY])$")
_NOT_TEXT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
"""Control bytes that text never holds (ESC, 1B, starts ISO 2022 escapes)."""
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


def _decode_text(elem: Element, encodings: list[str]) -> str | None:
    """Decode a text value strictly; None when its bytes are not text in `encodings`.

    pydicom's lenient decoding would replace bad bytes and warn with the value.
    """
    value = elem.value
    if type(elem) is not RawDataElement or not isinstance(value, bytes):
        return read_string(elem, encodings)
    try:
        if len(encodings) == 1:
            text = value.decode(encodings[0])
        else:  # ISO 2022 code extensions
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                text = decode_bytes(value, encodings, set())
    except (UnicodeError, LookupError, UserWarning):
        return None
    return text.strip("\x00 ")


_RAW_PATIENT_ID = {
    (False, True): re.compile(rb"\x10\x00\x20\x00LO(..)", re.DOTALL),
    (False, False): re.compile(rb"\x00\x10\x00\x20LO(..)", re.DOTALL),
    (True, True): re.compile(rb"\x10\x00\x20\x00(....)", re.DOTALL),
    (True, False): re.compile(rb"\x00\x10\x00\x20(....)", re.DOTALL),
}


def _raw_patient_ids(elem: RawDataElement, encodings: list[str]) -> list[str]:
    """The Patient ID values in the raw bytes of Other Patient IDs Sequence."""
    data: bytes = elem.value or b""
    little = elem.is_little_endian
    out = []
    for m in _RAW_PATIENT_ID[(elem.is_implicit_VR, little)].finditer(data):
        length = int.from_bytes(m.group(1), "little" if little else "big")
        if length > 64:  # not an LO value: a chance match of the tag bytes
            continue
        value = data[m.end() : m.end() + length]
        try:
            out.append(decode_bytes(value, encodings, set()).strip("\x00 "))
        except (UnicodeError, LookupError):
            out.append(value.decode("latin-1").strip("\x00 "))
    return out


def _sr_person_names(ds: Dataset, encodings: list[str], known: set[str]) -> None:
    """Add the Person Name (0040,A123) values of an SR content tree to `known`."""
    try:
        items = ds[_CONTENT_SEQUENCE].value or []
    except Exception:
        raise _bad(_CONTENT_SEQUENCE, "SQ") from None
    for item in items:
        known.add(read_string(item.get_item(_SR_PERSON_NAME), encodings))
        if item.get_item(_CONTENT_SEQUENCE) is not None:
            _sr_person_names(item, encodings, known)


def _bad(tag: int, vr: str | None) -> QuarantineError:
    if vr is None:  # implicit VR: name the dictionary's
        vr = dictionary_vr_or_un(tag)
    shown = vr if vr in VALID_VRS else "??"
    return QuarantineError(
        QuarantineReason.BAD_VR, f"element {tag_str(tag)} with VR {shown} could not be decoded"
    )


def cap_age(value: str) -> str | None:
    """Return an AS value with ages of 90 years or more as ``090Y`` (HIPAA).

    Returns None for a value that is not an age; the common ``"75Y"`` is
    repaired to ``"075Y"``.

    Examples
    --------
    >>> cap_age("089Y"), cap_age("090Y"), cap_age("102Y"), cap_age("011M"), cap_age("75Y")
    ('089Y', '090Y', '090Y', '011M', '075Y')
    """
    m = _AS.match(value.strip().upper())
    if m is None:
        return None
    number, unit = int(m.group(1)), m.group(2)
    if number * _DAYS_PER_UNIT[unit] >= 90 * 365.25:
        return "090Y"
    return f"{number:03d}{unit}"


class _Run:
    """State of one :meth:`Deidentifier.apply` call."""

    __slots__ = (
        "choices", "counts", "drop_item", "encoding", "encodings", "known", "known_bytes",
        "offset", "path",
        "private", "pseudonym", "top_cache", "types", "unlisted",
    )  # fmt: skip

    def __init__(
        self, pseudonym: str, offset: int, encodings: list[str], encoding: Encoding | None
    ) -> None:
        self.pseudonym = pseudonym
        self.offset = offset
        self.encodings = encodings
        self.encoding = encoding
        self.counts = dict.fromkeys("DZXKCU", 0)
        self.choices: dict[int, CombinedActionChoice] = {}
        self.private = 0
        self.unlisted = 0
        self.known: frozenset[str] = frozenset()
        self.drop_item = False  # set when the current sequence item cannot stay valid
        self.top_cache: PlanCache = {}
        self.types: IodTypes | None = None
        self.path: tuple[str, ...] = ()  # enclosing sequences, tracked under Retain Safe Private
        self.known_bytes: list[bytes] | None = None  # computed once, when first needed


class Deidentifier:
    """Applies a de-identification profile to datasets.

    Build one per key and profile and reuse it: decisions are cached per
    tag and VR, pseudonyms per UID. Not thread-safe: use one per worker.

    Parameters
    ----------
    key
        The node's secret key (see :class:`~mida.deid.pseudonyms.Pseudonymizer`).
    profile
        The profile to apply; :func:`~mida.deid.profile.get_profile` returns
        the built-in ones.

    Raises
    ------
    DeidError
        If the key is too short or the profile selects an option this
        version does not implement (:data:`SUPPORTED_OPTIONS`).
    """

    def __init__(self, key: bytes, profile: Profile) -> None:
        self.planner = Planner(profile)
        self.profile = profile
        self.pseudonymizer = Pseudonymizer(key)
        self.cleaner = FreeTextCleaner()
        self._safe = self.planner.safe_private
        self._known_tags: tuple[BaseTag, ...] = _KNOWN_TAGS
        if Option.RETAIN_INSTITUTION_IDENTITY not in profile.options:
            self._known_tags += _INSTITUTION_TAGS
        self.method = (
            f"mida {__version__} profile {profile.name} {profile.version} "
            f"(PS3.15 {TABLE_EDITION})"
        )[:64]
        self._methods: str | list[str] = self.method
        if self._safe is not None:  # Retain Safe Private: which dictionary said "safe"
            self._methods = [self.method, f"safe-private {self._safe.version}"[:64]]
        self._method_items = [
            [(0x00080100, "SH", c.CodeValue), (0x00080102, "SH", c.CodingSchemeDesignator),
             (0x00080104, "LO", c.CodeMeaning)]
            for c in profile.method_codes()
        ]  # fmt: skip
        if self.planner.shift_dates:
            self._temporal = "MODIFIED"
        elif self.planner.full_dates:
            self._temporal = "UNMODIFIED"
        else:
            self._temporal = "REMOVED"

    def apply(self, ds: Dataset) -> DeidReport:
        """De-identify `ds` (and ``ds.file_meta``) in place.

        Parameters
        ----------
        ds
            The dataset as read by pydicom; pixel data is not decoded.

        Returns
        -------
        DeidReport
            What was done, without any original value.

        Raises
        ------
        QuarantineError
            ``BAD_VR`` when a value that must be read or kept cannot be
            decoded; ``DEID_FAILED`` on any other failure. The message names
            at most a tag and a VR. `ds` must then be discarded.
        """
        try:
            return self._apply(ds)
        except MidaError:
            raise
        except Exception as exc:  # lower layers' messages may quote values
            raise QuarantineError(
                QuarantineReason.DEID_FAILED,
                f"de-identification failed with {type(exc).__name__}; the input was not stored",
            ) from None

    def _apply(self, ds: Dataset) -> DeidReport:
        pseudo = self.pseudonymizer
        encodings = self._encodings(ds)
        pid, issuer = self._patient_ident(ds, encodings)
        shift = self.planner.shift_dates
        offset = pseudo.date_offset_days(patient_key(pid, issuer)) if shift else 0
        run = _Run(pseudo.patient_id(pid, issuer), offset, encodings, encoding_of(ds))
        source = ds.get_item(_SOP_INSTANCE_UID)
        uids = self._read(source, _SOP_INSTANCE_UID) if source is not None else []
        source_hash = pseudo.keyed_hash(uids[0]) if uids else ""
        if self.planner.collects_known:  # before any value is replaced
            run.known = self._known(ds, encodings)
        sop_class = ds.get_item(_SOP_CLASS_UID)
        classes = self._read(sop_class, _SOP_CLASS_UID) if sop_class is not None else []
        run.top_cache, run.types = self.planner.top_level(classes[0] if classes else "")

        self._walk(ds, run, strict=False, top=True)
        file_meta = getattr(ds, "file_meta", None)
        if file_meta is not None:
            run.encoding = _META_ENCODING
            self._walk(file_meta, run, strict=False, top=False)
            run.encoding = encoding_of(ds)
            for tag, vr, value in (
                (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
                (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
            ):
                put(file_meta, tag, vr, value, file_meta.get_item(tag), _META_ENCODING)
        preamble = getattr(ds, "preamble", None)
        if preamble and preamble.strip(b"\x00"):  # 128 free bytes may hide anything
            ds.preamble = b"\x00" * 128
        self._record(ds, run)
        return DeidReport(
            profile_name=self.profile.name,
            profile_version=self.profile.version,
            table_edition=TABLE_EDITION,
            key_id=pseudo.key_id,
            patient_pseudonym=run.pseudonym,
            action_counts=run.counts,
            combined_choices=[run.choices[t] for t in sorted(run.choices)],
            private_removed=run.private,
            unlisted_removed=run.unlisted,
            dates_shifted=self.planner.shift_dates,
            source_uid_hash=source_hash,
            safe_private_version=self._safe.version if self._safe is not None else "",
        )

    def _walk(self, ds: Dataset, run: _Run, *, strict: bool, top: bool) -> None:
        # The hot loop: once per element of every instance. Plans are cached
        # per (tag, VR, strict), per IOD at the top level; the two commonest
        # operations come first.
        cache = run.top_cache if top else self.planner.cache
        types = run.types if top else None
        counts = run.counts
        enc = run.encoding
        keep, remove = Op.KEEP, Op.REMOVE
        pending: list[tuple[BaseTag, Element]] | None = None  # Retain Safe Private
        for tag, elem in snapshot(ds):
            vr = elem.VR
            key = (int(tag), vr, strict)
            plan = cache.get(key)
            if plan is None:
                plan = cache[key] = self.planner.plan(tag, vr, strict, types)
            op = plan.op
            counts[plan.action] += 1
            if plan.combined is not None:
                run.choices[tag] = plan.combined
            if op is keep:
                if plan.check is not None and type(elem) is RawDataElement:
                    self._check(elem, plan)
            elif op is remove:
                drop(ds, tag)
                if plan.private:
                    run.private += 1
                elif plan.unlisted:
                    run.unlisted += 1
            elif op is Op.UID:
                uid = self.pseudonymizer.uid
                put(ds, tag, "UI", [uid(v) for v in self._read(elem, tag)], elem, enc)
            elif op is Op.SET:
                put(ds, tag, plan.vr, plan.value, elem, enc)
            elif op is Op.SHIFT:
                shift = shift_da if plan.vr == "DA" else shift_dt
                shifted = shift("\\".join(self._read(elem, tag)), run.offset)
                put(ds, tag, plan.vr, shifted.split("\\") if shifted else None, elem, enc)
            elif op is Op.RECURSE:
                self._recurse(ds, tag, vr, run, plan.strict, top)
            elif op is Op.EMPTY_SEQUENCE:
                ds[tag] = DataElement(tag, "SQ", [])
            elif op is Op.PATIENT_NAME:
                put(ds, tag, "PN", run.pseudonym if top else None, elem, enc)
            elif op is Op.PATIENT_ID:
                self._patient_id(ds, elem, run, top)
            elif op is Op.CODE:
                self._code(ds, tag, elem, plan, run)
            elif op is Op.AGE:
                ages = [cap_age(v) for v in self._read(elem, tag)]
                if any(a is None for a in ages):  # not an age: dropped, not guessed
                    self._drop_kept(ds, tag, run)
                else:
                    put(ds, tag, "AS", [a for a in ages if a], elem, enc)
            elif op is Op.CLEAN:
                self._clean(ds, tag, elem, plan, run)
            elif op is Op.PRIVATE:  # decided once the block's creator is known
                if pending is None:
                    pending = []
                pending.append((tag, elem))
            else:  # Op.BAD
                raise _bad(tag, vr)
        if pending is not None:
            self._private(ds, pending, run, strict)

    # -- Retain Safe Private -----------------------------------------------------

    def _private(
        self, ds: Dataset, pending: list[tuple[BaseTag, Element]], run: _Run, strict: bool
    ) -> None:
        """Keep the private elements of `ds` that the safe-private dictionary lists.

        `pending` holds every private element of `ds` (counted ``X``). An
        element ``(gggg,xxee)`` is looked up by the creator of block ``xx``
        in this dataset; a creator stays iff an element of its block stays.
        """
        creators: dict[int, str] = {}
        for tag, elem in pending:
            element = tag & 0xFFFF
            if 0x10 <= element <= 0xFF:
                creators[(tag >> 16) << 8 | element] = read_string(elem, run.encodings)
        kept: set[int] = set()
        for tag, elem in pending:
            element = tag & 0xFFFF
            if element < 0x1000:
                continue
            block = (tag >> 16) << 8 | element >> 8
            creator = creators.get(block)
            if creator and self._keep_private(ds, tag, elem, creator, run, strict):
                kept.add(block)
            elif tag in ds._dict:  # a kept sequence whose items all went is gone already
                drop(ds, tag)
                run.private += 1
            else:
                run.private += 1
        for tag, _ in pending:
            element = tag & 0xFFFF
            if element >= 0x1000:
                continue
            if 0x10 <= element <= 0xFF and (tag >> 16) << 8 | element in kept:
                run.counts["X"] -= 1
                run.counts["K"] += 1
            else:  # an unused creator, or a reserved (gggg,0001-000F) (gggg,0100-0FFF)
                drop(ds, tag)
                run.private += 1

    def _keep_private(
        self, ds: Dataset, tag: BaseTag, elem: Element, creator: str, run: _Run, strict: bool
    ) -> bool:
        """Apply the plan of a private element if it is listed; whether it stays."""
        safe = self._safe
        assert safe is not None  # only Retain Safe Private plans Op.PRIVATE
        group, byte = tag >> 16, tag & 0xFF
        listed = safe.vrs(creator, group, byte, run.path)
        if not listed:
            return False
        file_vr = elem.VR
        if file_vr is None or file_vr in OPAQUE_VRS:  # the value is read as the listed VR
            typed = listed - OPAQUE_VRS
            vr = next(iter(typed)) if len(typed) == 1 else "UN"
        elif file_vr in listed:
            vr = file_vr
        else:  # listed with another VR: another attribute, or a broken one
            return False
        plan = self.planner.safe_private_plan(vr, strict)
        op = plan.op
        rewritten = file_vr is not None and file_vr != vr  # explicit OB/UN read as `vr`
        if op is Op.KEEP:
            if plan.check is not None and type(elem) is RawDataElement:
                try:
                    self._check(elem, plan)
                except QuarantineError:  # an optional value: dropped, not quarantined
                    return False
        elif op is Op.SAFE_TEXT:
            if not self._safe_text(elem, plan, run):
                return False
        elif op is Op.RECURSE:
            if file_vr is None and type(elem) is RawDataElement:  # implicit VR: parse items
                ds._dict[tag] = elem._replace(VR="SQ")
            elif file_vr != "SQ":
                return False
            try:  # items that cannot be parsed: the optional element goes, quietly
                parsed = isinstance(ds[tag].value, Sequence)
            except Exception:
                parsed = False
            if not parsed:
                return False
            self._recurse(ds, tag, "SQ", run, plan.strict, False,
                          sequence_component(group, byte, creator))  # fmt: skip
            if tag not in ds._dict:  # every item went
                return False
        elif op is Op.UID or op is Op.SHIFT:
            if rewritten:
                return False
            try:
                values = read_values(elem)
            except (UnicodeError, ValueError, TypeError):
                return False
            if op is Op.UID:
                put(ds, tag, "UI", [self.pseudonymizer.uid(v) for v in values], elem,
                    run.encoding)  # fmt: skip
            else:
                shift = shift_da if vr == "DA" else shift_dt
                shifted = shift("\\".join(values), run.offset)
                if not shifted:
                    return False
                put(ds, tag, vr, shifted.split("\\"), elem, run.encoding)
        else:  # Op.REMOVE
            return False
        run.counts["X"] -= 1
        run.counts[plan.action] += 1
        return True

    def _safe_text(self, elem: Element, plan: Plan, run: _Run) -> bool:
        """Whether a listed private text (or opaque) value may stay as it is.

        Opaque bytes (``OB``, ``UN``) that do not read as text are binary
        data and stay; text stays only when cleaning is on (``plan.strict``
        is off) and the free-text cleaner finds nothing identifying in any
        of its values.
        """
        value = elem.value
        if not value:
            return True
        if isinstance(value, bytes):
            data = value.rstrip(b"\x00 ")
            if plan.vr not in TEXT_VRS and (not data or _NOT_TEXT.search(data)):
                # binary, unless an identifying value of the instance is spelled in it
                return not any(k in data for k in self._known_bytes(run))
            if plan.strict:
                return False
            try:
                text = decode_bytes(data, run.encodings, set())
            except (UnicodeError, LookupError):
                return False
        elif plan.strict:
            return False
        else:
            text = read_string(elem, run.encodings)
        find = self.cleaner.find
        return not any(find(v, known=run.known) for v in text.split("\\"))

    @staticmethod
    def _known_bytes(run: _Run) -> list[bytes]:
        """The instance's identifying values as bytes (UTF-8, and each character set's)."""
        if run.known_bytes is not None:
            return run.known_bytes
        out: set[bytes] = set()
        parts = {p.strip() for v in run.known for p in re.split(r"[\^=]", v)}
        for value in run.known | parts:
            for codec in ("utf-8", *run.encodings):
                try:
                    out.add(value.encode(codec))
                except (UnicodeError, LookupError):
                    continue
        run.known_bytes = [b for b in out if len(b) >= 3]
        return run.known_bytes

    def _clean(self, ds: Dataset, tag: BaseTag, elem: Element, plan: Plan, run: _Run) -> None:
        """Clean a text value; one left empty gets the Basic Profile's plan."""
        text = _decode_text(elem, run.encodings)
        if text is None:  # not text in this character set: cannot be cleaned
            self._fallback(ds, tag, elem, plan.value, run)
            return
        # LO, SH and UC hold several values; ST, LT and UT may contain backslashes.
        values = text.split("\\") if plan.vr in ("LO", "SH", "UC") else [text]
        cleaned = [self.cleaner.clean(v, known=run.known).text for v in values]
        if cleaned == values and type(elem) is RawDataElement:
            return  # nothing identifying: the original bytes stay
        kept = [v for v in cleaned if v]
        if kept:
            put(ds, tag, plan.vr, kept if len(kept) > 1 else kept[0], elem, run.encoding)
            return
        self._fallback(ds, tag, elem, plan.value, run)

    def _code(self, ds: Dataset, tag: BaseTag, elem: Element, plan: Plan, run: _Run) -> None:
        """Keep code text of a standard scheme; clean or drop that of a local one.

        A local code (e.g. a RIS procedure code) is kept under a clean option
        when the free-text cleaner finds nothing identifying in it (its Code
        Meaning is cleaned); otherwise its item is dropped whole, since an
        item without its code value is invalid.
        """
        scheme = read_string(ds.get_item(_CODING_SCHEME), run.encodings)
        if not plan.strict and scheme in STANDARD_CODING_SCHEMES:
            return
        if not plan.strict and self.planner.cleans:
            text = _decode_text(elem, run.encodings)
            if text is not None:
                cleaned = self.cleaner.clean(text, known=run.known).text
                if cleaned == text:
                    return
                if cleaned and tag == _CODE_MEANING:
                    put(ds, tag, elem.VR or "LO", cleaned, elem, run.encoding)
                    return
        self._drop_kept(ds, tag, run)
        run.drop_item = True

    @staticmethod
    def _fallback(ds: Dataset, tag: BaseTag, elem: Element, basic: Plan, run: _Run) -> None:
        """Apply the Basic Profile's plan to a value that cleaning left empty.

        A graphic text object's fallback (:attr:`Op.DROP_ITEM`) drops its item.
        """
        if basic.op is Op.SET:
            put(ds, tag, basic.vr, basic.value, elem, run.encoding)
        else:  # X (text rows resolve to X, Z or D)
            drop(ds, tag)
            if basic.op is Op.DROP_ITEM:
                run.drop_item = True

    def _known(self, ds: Dataset, encodings: list[str]) -> frozenset[str]:
        """The identifying values of `ds` that cleaned text must not repeat."""
        store = ds._dict  # keyed by tag ints: faster than get_item for 24 look-ups
        known = {read_string(store.get(t), encodings) for t in self._known_tags if t in store}
        other = store.get(_OTHER_IDS_SEQUENCE)
        if type(other) is RawDataElement and isinstance(other.value, bytes):
            # Scanned, not parsed: parsing costs more than the rest of the
            # collection, and the Basic Profile removes the sequence unread.
            known.update(_raw_patient_ids(other, encodings))
        elif other is not None and isinstance(other.value, Sequence):
            for item in other.value:
                known.add(read_string(item.get_item(_PATIENT_ID), encodings))
        if self.planner.clean_sr_text and ds.get_item(_CONTENT_SEQUENCE) is not None:
            _sr_person_names(ds, encodings, known)
        known.discard("")
        return frozenset(known)

    @staticmethod
    def _drop_kept(ds: Dataset, tag: BaseTag, run: _Run) -> None:
        """Remove an element whose plan was to keep it, once its value is seen."""
        drop(ds, tag)
        run.counts["K"] -= 1
        run.counts["X"] += 1
        run.unlisted += 1

    @staticmethod
    def _check(elem: RawDataElement, plan: Plan) -> None:
        value = elem.value
        if value is None:
            return
        check = plan.check
        if isinstance(check, int):
            if elem.length != 0xFFFFFFFF and len(value) % check:
                raise _bad(elem.tag, elem.VR)
        elif check is not None and check.fullmatch(value) is None:
            raise _bad(elem.tag, elem.VR)

    @staticmethod
    def _read(elem: Element, tag: int) -> list[str]:
        try:
            return read_values(elem)
        except (UnicodeError, ValueError, TypeError):
            raise _bad(tag, elem.VR) from None

    def _recurse(
        self,
        ds: Dataset,
        tag: int,
        vr: str | None,
        run: _Run,
        strict: bool,
        top: bool,
        component: str | None = None,
    ) -> None:
        """Filter the items of a sequence; `component` names a private one in paths."""
        raw = ds.get_item(tag)
        if type(raw) is RawDataElement and not raw.value:  # empty: nothing to parse
            return
        try:
            seq = ds[tag].value
        except Exception:
            raise _bad(tag, vr) from None
        if seq is None:
            return
        if not isinstance(seq, Sequence):
            raise _bad(tag, vr)
        outer, dropped, path = run.drop_item, [], run.path
        if self._safe is not None:  # private attributes are listed by where they are
            run.path = (*path, component or sequence_component(tag >> 16, tag & 0xFFFF))
        for item in seq:
            run.drop_item = False
            self._walk(item, run, strict=strict, top=False)
            if run.drop_item:
                dropped.append(item)
        run.drop_item, run.path = outer, path
        if dropped:  # items left invalid go; so does a sequence left empty
            keep = [item for item in seq if all(item is not d for d in dropped)]
            if keep:
                ds[tag].value = Sequence(keep)
            elif run.types is not None and top and run.types.required(tag):
                ds[tag] = DataElement(tag, "SQ", [])
            else:
                drop(ds, BaseTag(tag))

    def _patient_id(self, ds: Dataset, elem: Element, run: _Run, top: bool) -> None:
        if top:
            value: str | None = run.pseudonym
        else:  # a nested Patient ID (e.g. in a Referenced Patient item)
            pid = read_string(elem, run.encodings)
            issuer = read_string(ds.get_item(_ISSUER), run.encodings)
            value = self.pseudonymizer.patient_id(pid, issuer) if pid else None
        put(ds, elem.tag, "LO", value, elem, run.encoding)

    # -- the patient and the record -------------------------------------------

    @staticmethod
    def _encodings(ds: Dataset) -> list[str]:
        elem = ds.get_item(_CHARSET)
        if elem is None:
            return convert_encodings(None)
        try:
            names = [v.strip() for v in read_values(elem)]
            return convert_encodings(names or None)
        except (UnicodeError, LookupError, ValueError):
            raise _bad(_CHARSET, elem.VR) from None

    @staticmethod
    def _patient_ident(ds: Dataset, encodings: list[str]) -> tuple[str, str]:
        """Return the ``(id, issuer)`` the pseudonym and date offset derive from.

        Patient ID with its issuer; without an ID, the name and birth date
        (so that the files of one unregistered patient still link); without
        those, the study (the patient cannot be linked across studies).
        A leading NUL marks the fallbacks: it cannot occur in an LO value.
        """
        pid = read_string(ds.get_item(_PATIENT_ID), encodings)
        if pid:
            return pid, read_string(ds.get_item(_ISSUER), encodings)
        name = read_string(ds.get_item(_PATIENT_NAME), encodings)
        if name:
            return f"\x00name\\{name}\\{read_string(ds.get_item(_BIRTH_DATE), encodings)}", ""
        return f"\x00study\\{read_string(ds.get_item(_STUDY_UID), encodings)}", ""

    def _record(self, ds: Dataset, run: _Run) -> None:
        """Write the pseudonym and the de-identification record (PS3.15 E.1.1)."""
        enc = run.encoding
        for tag, vr, value in (
            (_PATIENT_NAME, "PN", run.pseudonym),
            (_PATIENT_ID, "LO", run.pseudonym),
            (0x00120062, "CS", "YES"),
            (0x00120063, "LO", self._methods),
            (0x00280303, "CS", self._temporal),
        ):
            put(ds, tag, vr, value, ds.get_item(tag), enc)
        put_items(ds, 0x00120064, self._method_items, enc)


def deidentify(ds: Dataset, key: bytes, profile: str | Profile = "default") -> DeidReport:
    """De-identify one dataset in place; reuse a :class:`Deidentifier` for many.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName = "DOE^JOHN"
    >>> deidentify(ds, b"k" * 32).profile_name
    'default'
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    return Deidentifier(key, prof).apply(ds)


__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "SUPPORTED_OPTIONS",
    "CombinedActionChoice",
    "DeidReport",
    "Deidentifier",
    "cap_age",
    "deidentify",
]
