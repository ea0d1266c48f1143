"""De-identification of DICOM datasets (PS3.15 Annex E).

The ingest pipeline calls :meth:`Deidentifier.apply` on every incoming
dataset before anything is stored. The package follows the standard's own
structure:

* :mod:`~mida.deid.table`: Table E.1-1 (edition :data:`TABLE_EDITION`) as
  lookup rules;
* :mod:`~mida.deid.profile`: which options apply (built-ins ``basic`` and
  ``default``), recorded with CID 7050 codes;
* :mod:`~mida.deid.pseudonyms`: keyed pseudonyms of UIDs and patients, and
  per-patient date shifts;
* :mod:`~mida.deid.allowlist`: what survives although the table does not
  list it (safe by default: unlisted text is removed);
* :mod:`~mida.deid.freetext`: the cleaning of descriptions, SR text and
  graphic annotations under the Clean Descriptors, Clean Structured Content
  and Clean Graphics options;
* :mod:`~mida.deid.safe_private`: the versioned dictionary of private
  attributes that the Retain Safe Private option keeps;
* :mod:`~mida.deid.engine`: the walk over every element at every depth.

Examples
--------
>>> from pydicom.dataset import Dataset
>>> ds = Dataset()
>>> ds.PatientName = "DOE^JANE"
>>> ds.PatientID = "12345"
>>> report = Deidentifier(b"k" * 32, get_profile("default")).apply(ds)
>>> str(ds.PatientName) == report.patient_pseudonym
True
"""

from mida.deid.engine import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    SUPPORTED_OPTIONS,
    CombinedActionChoice,
    Deidentifier,
    DeidReport,
    deidentify,
)
from mida.deid.freetext import CleanResult, FreeTextCleaner, Span
from mida.deid.profile import (
    BASIC_PROFILE_CODE,
    OPTION_CODES,
    MethodCode,
    Profile,
    get_profile,
    list_profiles,
    parse_overrides,
)
from mida.deid.pseudonyms import Pseudonymizer, patient_key, shift_da, shift_dt
from mida.deid.safe_private import SafePrivateDictionary, load_safe_private
from mida.deid.table import (
    OPTION_KEYS,
    TABLE_EDITION,
    Action,
    ConfidentialityTable,
    Option,
    Rule,
    load_table,
)

__all__ = [
    "BASIC_PROFILE_CODE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "OPTION_CODES",
    "OPTION_KEYS",
    "SUPPORTED_OPTIONS",
    "TABLE_EDITION",
    "Action",
    "CleanResult",
    "CombinedActionChoice",
    "ConfidentialityTable",
    "DeidReport",
    "Deidentifier",
    "FreeTextCleaner",
    "MethodCode",
    "Option",
    "Profile",
    "Pseudonymizer",
    "Rule",
    "SafePrivateDictionary",
    "Span",
    "deidentify",
    "get_profile",
    "list_profiles",
    "load_safe_private",
    "load_table",
    "parse_overrides",
    "patient_key",
    "shift_da",
    "shift_dt",
]
