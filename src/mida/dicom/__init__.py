"""DICOM helpers: synthetic sample studies and Taiwan national IDs (so far).

Submodules
----------
sample
    :func:`~mida.dicom.sample.generate` writes synthetic studies with planted PHI.
twid
    Validate and draw Taiwan national ID numbers.
"""

from mida.dicom import sample, twid
from mida.dicom.sample import BurnedInText, SampleManifest, SampleStudy
from mida.dicom.sample import generate as generate_sample

__all__ = [
    "BurnedInText",
    "SampleManifest",
    "SampleStudy",
    "generate_sample",
    "sample",
    "twid",
]
