"""DICOM helpers (floor 1): fast DICOM JSON, synthetic sample studies, Taiwan national IDs.

Submodules are imported on demand, so that ingest workers do not pay for the
sample generator:

json
    :func:`~mida.dicom.json.to_json_dict`, the DICOM JSON model from raw elements.
sample
    :func:`~mida.dicom.sample.generate` writes synthetic studies with planted PHI.
twid
    Validate and draw Taiwan national ID numbers.
"""

__all__ = ["json", "sample", "twid"]
