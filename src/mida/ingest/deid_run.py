"""Standalone de-identification: DICOM in, de-identified DICOM files out.

:func:`run_deid` serves people who only need a de-identifier (``mida deid
run``): no node, catalog or blob store. It uses the same steps as ingest:
discover inputs (files, folders, zip and tar archives, via
:mod:`mida.ingest.sources`), parse and validate (:mod:`mida.ingest.parse`),
de-identify (:class:`~mida.deid.Deidentifier`) and encode
(:func:`mida.dicom.write.encode`). Each output is written atomically (a
temporary file, then :func:`os.replace`) as ``<out_dir>/<new SOP Instance
UID>.dcm``.

An input that cannot be made safe (not DICOM, malformed, an encapsulated
document, pixels that may carry burned-in text while no pixel cleaning covers
them, ...) is *refused*: it is listed in the report with its reason code and
nothing is written for it. Inputs are opened read-only and never modified.

With ``workers > 1`` inputs are processed by a process pool with at most
``4 x workers`` inputs in flight, as in :mod:`mida.ingest.pipeline`; the
parent alone writes files, so two inputs with the same (pseudonymous) SOP
Instance UID cannot race: the second is reported as a duplicate.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mida.config import Settings
from mida.deid import Deidentifier, Profile, get_profile
from mida.dicom.write import encode
from mida.errors import IngestError, QuarantineError, QuarantineReason
from mida.events import EventBus, FileDiscovered, FileProcessed
from mida.ingest import parse
from mida.ingest.processor import ensure_file_meta, make_safe, pixel_cleaner, quiet_pydicom
from mida.ingest.sources import Item, Refused, count_inputs, discover, read_zip_member


@dataclass(frozen=True)
class Refusal:
    """An input that was not written, and why (``reason`` is a stable code)."""

    ref: str
    reason: str
    message: str


@dataclass
class RunReport:
    """What :func:`run_deid` did.

    ``refused`` holds local input references: show them to the operator, do
    not publish them (folder names may identify people).
    """

    out_dir: str
    profile: str
    profile_version: str
    inputs: int = 0
    written: list[str] = field(default_factory=list)
    duplicates: int = 0
    refused: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def by_reason(self) -> dict[str, int]:
        """Refusals counted by reason code."""
        out: dict[str, int] = {}
        for r in self.refused:
            out[r.reason] = out.get(r.reason, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "out_dir": self.out_dir, "profile": self.profile,
            "profile_version": self.profile_version, "inputs": self.inputs,
            "written": len(self.written), "duplicates": self.duplicates,
            "refused": len(self.refused), "by_reason": self.by_reason,
            "files": sorted(self.written),
            "refusals": [{"input": r.ref, "reason": r.reason, "message": r.message}
                         for r in self.refused],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Result:
    ref: str
    name: str | None = None
    data: bytes | None = None
    reason: str | None = None
    message: str = ""


# -- worker side -----------------------------------------------------------------
class _Worker:
    def __init__(self, key: bytes, profile: dict[str, Any], settings: Settings) -> None:
        quiet_pydicom()
        self.settings = settings
        self.deid = Deidentifier(key, Profile(**profile))
        self.pixels = pixel_cleaner(settings)

    def read(self, item: Item) -> bytes:
        if item.data is not None:
            return item.data
        if item.kind == "zip" and item.member is not None:
            return read_zip_member(item.path, item.member, self.settings.archive_max_member_bytes)
        with open(item.path, "rb") as fh:
            return fh.read()

    def process(self, item: Item) -> _Result:
        try:
            data = self.read(item)
        except (OSError, ValueError) as exc:
            return _Result(item.ref, reason=QuarantineReason.UNREADABLE.value,
                           message=f"cannot read the input ({type(exc).__name__})")
        try:
            name, out = self._deid(data)
        except QuarantineError as exc:
            return _Result(item.ref, reason=exc.reason.value, message=exc.message)
        except Exception as exc:  # the message may quote values: give the type only
            return _Result(item.ref, reason=QuarantineReason.INTERNAL.value,
                           message=f"unexpected {type(exc).__name__}; please report it")
        return _Result(item.ref, name=name, data=out)

    def _deid(self, data: bytes) -> tuple[str, bytes]:
        if data[:4] == b"PK\x03\x04" or data[:2] == b"\x1f\x8b":
            raise QuarantineError(QuarantineReason.NOT_DICOM,
                                  "a nested archive: extract it and run again on the result")
        ds = parse.read_dataset(data)
        parse.validate(ds, quarantine_documents=self.settings.quarantine_encapsulated_documents)
        ensure_file_meta(ds)
        make_safe(ds, self.deid, self.pixels, self.settings)
        return f"{ds.SOPInstanceUID}.dcm", encode(ds)


_WORKER: _Worker | None = None


def _init_worker(key: bytes, profile: dict[str, Any], settings: dict[str, Any]) -> None:
    global _WORKER
    _WORKER = _Worker(key, profile, Settings(**settings))


def _work(item: Item) -> _Result:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.process(item)


# -- parent side -----------------------------------------------------------------
def _profile_dict(p: Profile) -> dict[str, Any]:
    return {"name": p.name, "version": p.version, "options": frozenset(p.options),
            "overrides": dict(p.overrides), "description": p.description}


def _write_atomic(folder: Path, name: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _results(inputs: list[Path], key: bytes, profile: Profile, settings: Settings,
             workers: int) -> Iterator[_Result]:
    items = discover(inputs, settings)
    if workers <= 1:
        local = _Worker(key, _profile_dict(profile), settings)
        for it in items:
            if isinstance(it, Refused):
                yield _Result(it.ref, reason=it.reason.value, message=it.message)
            else:
                yield local.process(it)
        return
    quiet_pydicom()
    limit = 4 * workers
    with cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker,
        initargs=(key, _profile_dict(profile), settings.model_dump()),
    ) as pool:
        pending: set[cf.Future[_Result]] = set()
        try:
            for it in items:
                if isinstance(it, Refused):
                    yield _Result(it.ref, reason=it.reason.value, message=it.message)
                    continue
                pending.add(pool.submit(_work, it))
                if len(pending) >= limit:
                    done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for f in done:
                        yield f.result()
            for f in cf.as_completed(pending):
                yield f.result()
            pending = set()
        finally:
            for f in pending:
                f.cancel()


def run_deid(
    inputs: list[Path], out_dir: Path, key: bytes, profile: Profile | str = "default",
    workers: int = 1, *, settings: Settings | None = None, bus: EventBus | None = None,
) -> RunReport:
    """De-identify every DICOM input into ``out_dir``.

    Parameters
    ----------
    inputs
        Files, folders, zip or tar(.gz) archives; never modified.
    out_dir
        Output folder (created if missing); must not lie inside an input folder.
    key
        The de-identification key: the same key gives byte-identical outputs
        and the same pseudonyms at every site.
    profile
        A :class:`~mida.deid.Profile` or the name of a built-in one.
    workers
        Worker processes; 1 runs in this process.
    settings
        Archive limits, pixel-risk modalities and document handling (defaults
        when None).
    bus
        Receives :class:`~mida.events.FileDiscovered` and
        :class:`~mida.events.FileProcessed` (outcome ``written``,
        ``duplicate`` or ``refused``).

    Returns
    -------
    RunReport
        Files written (names only) and inputs refused with their reasons.

    Raises
    ------
    IngestError
        If ``out_dir`` lies inside an input folder.
    FileNotFoundError
        If an input does not exist.
    """
    settings = settings or Settings()
    prof = get_profile(profile, settings.home) if isinstance(profile, str) else profile
    out = Path(out_dir).absolute()
    for p in inputs:
        if not Path(p).exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        src = Path(p).absolute()
        if src.is_dir() and out.is_relative_to(src):
            raise IngestError(f"the output folder {out} lies inside the input folder {src}; "
                              "choose an output folder outside the inputs")
    out.mkdir(parents=True, exist_ok=True)
    bus = bus or EventBus()
    bus.emit(FileDiscovered(total=count_inputs(list(inputs))))
    report = RunReport(out_dir=str(out), profile=prof.name, profile_version=prof.version)
    written: set[str] = set()
    t0 = time.perf_counter()
    for r in _results(list(inputs), key, prof, settings, workers):
        report.inputs += 1
        if r.name is None or r.data is None:
            reason = r.reason or QuarantineReason.INTERNAL.value
            report.refused.append(Refusal(r.ref, reason, r.message))
            bus.emit(FileProcessed(outcome="refused", nbytes=0, reason=reason))
        elif r.name in written:
            report.duplicates += 1
            bus.emit(FileProcessed(outcome="duplicate", nbytes=len(r.data)))
        else:
            _write_atomic(out, r.name, r.data)
            written.add(r.name)
            report.written.append(r.name)
            bus.emit(FileProcessed(outcome="written", nbytes=len(r.data)))
    report.written.sort()
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["Refusal", "RunReport", "run_deid"]
