"""DICOM series to NIfTI-1, matching dcm2niix: the parts behind :mod:`mida.datasets.convert`.

``frames`` decodes instances into planes with their geometry and scaling,
``stack`` splits and orders the planes into volumes and fills them,
``sidecar`` writes the BIDS-style acquisition fields, ``writer`` the files.
Import the public names from :mod:`mida.datasets.convert`.
"""

from mida.datasets.nifti_convert.models import ConversionError, Frame, NiftiVolume

__all__ = ["ConversionError", "Frame", "NiftiVolume"]
