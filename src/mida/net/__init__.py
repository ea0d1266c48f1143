"""DICOM networking: the DIMSE node (SCP) and PACS pull (SCU)."""

__all__: list[str] = []
