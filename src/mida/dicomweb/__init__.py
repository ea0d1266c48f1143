"""DICOMweb logic (QIDO-RS, WADO-RS, STOW-RS) behind the API's ``/dicomweb`` routes."""

__all__: list[str] = []
