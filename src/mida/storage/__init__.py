"""Content-addressed blob storage over fsspec."""

from mida.storage.blobstore import BlobRef, BlobStore, backends, open_store
from mida.storage.quarantine import QuarantineArea

__all__ = ["BlobRef", "BlobStore", "QuarantineArea", "backends", "open_store"]
