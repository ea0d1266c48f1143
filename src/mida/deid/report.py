"""What one de-identification did: :class:`DeidReport`.

A report holds counts, choices and pseudonyms only: no original value and not
the patient's date offset, so it may be stored in the catalog and logged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def tag_str(tag: int) -> str:
    """Return `tag` as the standard writes it, ``"(gggg,eeee)"``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True, slots=True)
class CombinedActionChoice:
    """How one combined action of Table E.1-1 was resolved.

    Attributes
    ----------
    tag
        The attribute tag, e.g. ``0x00080080``.
    name
        The attribute name in the standard.
    combined
        The table's action, e.g. ``"X/Z/D"``.
    resolved
        The action applied, e.g. ``"Z"``.
    basis
        Why: the attribute's type in the object's IOD (``"Type 2 in
        ct-image"``, ``"not in ct-image"``), or ``"type unknown"`` when the
        IOD (or, inside a sequence, the attribute's type there) is not known
        and the safer choice was made.

    Examples
    --------
    >>> str(CombinedActionChoice(0x00080080, "Institution Name", "X/Z/D", "Z"))
    '(0008,0080) Institution Name: X/Z/D -> Z (type unknown)'
    """

    tag: int
    name: str
    combined: str
    resolved: str
    basis: str = "type unknown"

    def __str__(self) -> str:
        return f"{tag_str(self.tag)} {self.name}: {self.combined} -> {self.resolved} ({self.basis})"


@dataclass
class DeidReport:
    """What :meth:`~mida.deid.engine.Deidentifier.apply` did to one dataset.

    Attributes
    ----------
    profile_name, profile_version
        The profile applied.
    table_edition
        Edition of PS3.15 Table E.1-1 applied.
    key_id
        Identifier of the key (:attr:`~mida.deid.pseudonyms.Pseudonymizer.key_id`),
        not the key.
    patient_pseudonym
        The value written into Patient ID and Patient's Name.
    action_counts
        Elements per action letter (``D``, ``Z``, ``X``, ``K``, ``C``,
        ``U``), at all depths, file meta included.
    combined_choices
        Each combined action met, with its resolution (once per tag).
    private_removed
        Private elements removed (included in ``action_counts["X"]``).
    unlisted_removed
        Elements in neither the table nor the allow-list that were removed
        (included in ``action_counts["X"]``).
    dates_shifted
        Whether dates were shifted (Modified Dates option).
    source_uid_hash
        :meth:`~mida.deid.pseudonyms.Pseudonymizer.keyed_hash` of the
        original SOP Instance UID (empty when absent): lets the node
        recognise a re-sent original without storing it.
    safe_private_version
        Version of the safe-private dictionary under Retain Safe Private
        (also the second value of De-identification Method); else empty.
    """

    profile_name: str
    profile_version: str
    table_edition: str
    key_id: str
    patient_pseudonym: str
    action_counts: dict[str, int]
    combined_choices: list[CombinedActionChoice] = field(default_factory=list)
    private_removed: int = 0
    unlisted_removed: int = 0
    dates_shifted: bool = False
    source_uid_hash: str = ""
    safe_private_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; choice tags are written ``"(gggg,eeee)"``."""
        out = asdict(self)
        out["combined_choices"] = [
            {
                "tag": tag_str(c.tag),
                "name": c.name,
                "combined": c.combined,
                "resolved": c.resolved,
                "basis": c.basis,
            }
            for c in self.combined_choices
        ]
        return out


__all__ = ["CombinedActionChoice", "DeidReport", "tag_str"]
