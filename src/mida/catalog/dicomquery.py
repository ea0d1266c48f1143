"""DICOM attribute matching over the catalog, shared by QIDO-RS and C-FIND (PS3.4 C.2.2).

IN PROGRESS: the implementation lands shortly; the contract below is fixed.

``search(s, level, match, *, collection_ids, study_uid=None, series_uid=None,
fuzzy=False, include=None, limit=None, offset=0) -> SearchResult``

- ``level``: "PATIENT", "STUDY", "SERIES" or "IMAGE" (QIDO's instances).
- ``match``: {keyword or 8-hex tag: DICOM matching string}: single value,
  wildcards ``*``/``?``, ranges ``A-B`` for DA/TM/DT, UID lists ``a\\b``,
  empty string = return key only. Unknown or unsupported keys raise
  ``mida.errors.MidaError`` with a message naming the key.
- ``collection_ids``: None = all collections, else only rows in these.
- ``include``: extra attributes (keywords or tags) or "all".
- Returns ``SearchResult(rows: list[dict[str, Any]] (DICOM JSON, keys 8-hex),
  more: bool)``; ``more`` is True when ``limit`` cut the result.

``locate(s, *, study_uid=None, series_uid=None, sop_uid=None, collection_ids)
-> list[Located]``: every stored instance under the given UIDs (the finest
given wins), with its blob digest, for WADO-RS, C-MOVE and C-GET.
"""
