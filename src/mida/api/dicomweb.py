"""DICOMweb (PS3.18) routes under ``/dicomweb``: QIDO-RS, WADO-RS, STOW-RS."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

__all__ = ["router"]
