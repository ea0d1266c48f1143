"""DICOMweb logic (QIDO-RS, WADO-RS, STOW-RS) behind the API's ``/dicomweb`` routes.

- :mod:`~mida.dicomweb.qido`: query parameters of a search, run on the shared matcher;
- :mod:`~mida.dicomweb.wado`: instances, catalog metadata, frames and bulk data;
- :mod:`~mida.dicomweb.render`: rendered images and thumbnails;
- :mod:`~mida.dicomweb.stow`: storing instances through the one ingest path;
- :mod:`~mida.dicomweb.multipart`: media types, Accept, multipart/related bodies.
"""

from mida.dicomweb.multipart import DicomWebError

__all__ = ["DicomWebError"]
