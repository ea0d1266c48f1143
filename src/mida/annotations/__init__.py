"""Annotation: label schemas, records with revisions, import/export, reader workflow.

* :mod:`.schema` — versioned label sets (the common annotation format)
* :mod:`.geometry` — the voxel grid of a stored series, which masks are tied to
* :mod:`.store` — annotation records and their immutable revisions
* :mod:`.formats` — import and export (DICOM SEG, RTSTRUCT, SR TID 1500, NIfTI, COCO, CSV)
* :mod:`.tasks`, :mod:`.agreement`, :mod:`.consensus` — the multi-reader workflow
* :mod:`.models` — AI pre-annotation by registered models
"""
