"""Typed events for long or networked work.

Services emit events; faces subscribe to them (the CLI draws progress bars,
the API reports job status, the audit log records them), as pynetdicom binds
handlers to ``evt.EVT_C_STORE``. Events carry no identified data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """Base of every event."""


@dataclass(frozen=True)
class IngestStarted(Event):
    job_id: int
    sources: int


@dataclass(frozen=True)
class FileDiscovered(Event):
    total: int


@dataclass(frozen=True)
class FileProcessed(Event):
    """One input file or archive member finished."""

    outcome: str  # stored | duplicate | quarantined
    nbytes: int
    reason: str | None = None


@dataclass(frozen=True)
class IngestFinished(Event):
    job_id: int
    counts: dict[str, int] = field(default_factory=dict)


Handler = Callable[[Event], None]


class EventBus:
    """A minimal synchronous publish/subscribe hub.

    Examples
    --------
    >>> bus = EventBus()
    >>> seen = []
    >>> bus.subscribe(seen.append)
    >>> bus.emit(FileDiscovered(total=3))
    >>> seen
    [FileDiscovered(total=3)]
    """

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def emit(self, event: Event) -> None:
        for handler in self._handlers:
            handler(event)


__all__ = [
    "Event",
    "EventBus",
    "FileDiscovered",
    "FileProcessed",
    "Handler",
    "IngestFinished",
    "IngestStarted",
]
