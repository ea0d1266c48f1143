"""The one ingest pipeline every source feeds."""

from mida.ingest.pipeline import Ingestor, IngestSummary, ingest_paths
from mida.ingest.processor import InstanceProcessor, Outcome, Source

__all__ = [
    "IngestSummary",
    "Ingestor",
    "InstanceProcessor",
    "Outcome",
    "Source",
    "ingest_paths",
]
