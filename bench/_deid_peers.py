"""De-identifier runners for ``bench/deid.py``, and the measures applied to their outputs.

Run as a script, this module is the timed harness for the Python tools::

    python bench/_deid_peers.py TOOL LIST_FILE OUT_DIR --workers N

``TOOL`` is ``deid``, ``dicognito`` or ``mida-api``. ``LIST_FILE`` holds one
input path a line. The harness imports the tool first (untimed), then times
the de-identification of every input, files written included, and prints one
JSON line ``{"seconds": ..., "written": ..., "refused": ..., "errors": [...]}``.
``deid`` and ``dicognito`` run in a ``fork`` pool of N processes (the same
parallelism mida gets), one task per file; ``mida-api`` calls
:func:`mida.ingest.deid_run.run_deid`, the engine of ``mida deid run``, with
``workers=N``.

The measures (:func:`leak_scan`, :func:`retention`) use mida's verifier
(:mod:`mida.deid.verify`) and a fixed list of research attributes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import io
import json
import multiprocessing
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Research attributes whose retention is measured. Dates count as retained
#: when the output holds a valid date (a shifted one is fine); every other
#: attribute must hold an equal value (numbers compared numerically).
RESEARCH_ATTRIBUTES: tuple[str, ...] = (
    "Modality", "Manufacturer", "ManufacturerModelName", "BodyPartExamined",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    "ImageType", "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PhotometricInterpretation", "SamplesPerPixel",
    "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "SliceLocation",
    "ImagePositionPatient", "ImageOrientationPatient", "PatientPosition",
    "RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth",
    "KVP", "XRayTubeCurrent", "ExposureTime", "Exposure", "ConvolutionKernel",
    "EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "EchoTrainLength",
    "MagneticFieldStrength", "ScanningSequence", "SequenceVariant", "ContrastBolusAgent",
    "SeriesNumber", "InstanceNumber",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
)  # fmt: skip
DATE_ATTRIBUTES = frozenset({"StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"})
#: Vendor private research attributes, ``(creator, group, element byte)``: those of
#: mida's sample archive (:data:`mida.dicom.sample.VENDOR_PRIVATE`: GE table speed
#: and rotation time, the Siemens diffusion b-value), counted as
#: ``"(gggg,creator,ee)"``.
RESEARCH_PRIVATE: tuple[tuple[str, int, int], ...] = (
    ("GEMS_ACQU_01", 0x0019, 0x23), ("GEMS_ACQU_01", 0x0019, 0x27),
    ("SIEMENS MR HEADER", 0x0019, 0x0C),
)  # fmt: skip

_HEADERS = {"Accept-Encoding": "identity"}


# -- measures -----------------------------------------------------------------
def _read(data: bytes) -> Any:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def pixel_key(ds: Any) -> str | None:
    """SHA-256 of the raw PixelData, with the geometry: pairs an output with its input."""
    pixels = ds.get("PixelData")
    if not isinstance(pixels, bytes):
        return None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    return f"{rows}x{cols}:" + hashlib.sha256(pixels).hexdigest()


def _norm(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return tuple(_norm(v) for v in value)
    if isinstance(value, int | float):
        return round(float(value), 6)
    text = str(value).strip()
    try:
        return round(float(text), 6)
    except ValueError:
        return text


def _valid_date(value: Any) -> bool:
    try:
        dt.datetime.strptime(str(value).strip()[:8], "%Y%m%d")
    except ValueError:
        return False
    return True


def research_values(ds: Any) -> dict[str, Any]:
    """The research attributes present (non-empty) in ``ds``, normalised."""
    out: dict[str, Any] = {}
    for kw in RESEARCH_ATTRIBUTES:
        try:
            value = ds.get(kw)
        except Exception:  # an undecodable value counts as absent
            continue
        if value is None or value == "":
            continue
        out[kw] = str(value) if kw in DATE_ATTRIBUTES else _norm(value)
    for creator, group, byte in RESEARCH_PRIVATE:
        try:
            value = ds.private_block(group, creator)[byte].value
        except Exception:  # absent (KeyError) or unreadable
            continue
        if isinstance(value, bytes):  # implicit VR or UN: the value's text, if any
            value = value.rstrip(b"\x00 ").decode("ascii", "replace")
        if value is not None and value != "":
            out[f"({group:04X},{creator},{byte:02X})"] = _norm(value)
    return out


def _over_89(age: Any) -> bool:
    text = str(age).strip().upper()
    return text.endswith("Y") and text[:-1].isdigit() and int(text[:-1]) > 89


class InputIndex:
    """Identifiers (mida's verifier) and research values of the input files."""

    def __init__(self, files: Sequence[Path]) -> None:
        from mida.deid.verify import Identifiers, collect_identifiers

        self.identifiers = Identifiers()
        self.by_pixels: dict[str, dict[str, Any]] = {}
        self.ids_by_pixels: dict[str, Identifiers] = {}
        for path in files:
            ds = _read(path.read_bytes())
            ids = collect_identifiers(ds)
            self.identifiers.update(ids)
            key = pixel_key(ds)
            if key is not None:
                self.by_pixels.setdefault(key, research_values(ds))
                self.ids_by_pixels.setdefault(key, ids)


def leak_scan(index: InputIndex, outputs: Iterable[Path]) -> dict[str, Any]:
    """Run :func:`mida.deid.verify.find_leaks` over every output file.

    Identifiers are the union over all inputs, as ``mida deid verify`` does;
    ``own_input_leaks`` repeats the search against the identifiers of the
    output's own input only (paired by pixel hash), which tells a real leak
    from a shifted date that equals another patient's date by chance.
    Returns counts only (leak values are never reported).
    """
    from mida.deid.verify import find_leaks

    leaks = 0
    files_with = 0
    paired = 0  # leaks of the output's own input (paired by pixel hash)
    kinds: dict[str, int] = {}
    tags: dict[str, int] = {}
    for path in outputs:
        data = path.read_bytes()
        found = find_leaks(data, index.identifiers, location=path.name)
        own = index.ids_by_pixels.get(pixel_key(_read(data)) or "")
        if found and own is not None:
            paired += len(find_leaks(data, own, location=path.name))
        leaks += len(found)
        files_with += bool(found)
        for leak in found:
            kinds[leak.kind] = kinds.get(leak.kind, 0) + 1
            where = leak.path.split(">")[-1] if not leak.path.startswith("raw") else "raw bytes"
            tags[where] = tags.get(where, 0) + 1
    top = dict(sorted(tags.items(), key=lambda kv: -kv[1])[:8])
    return {
        "leaks": leaks,
        "files_with_leaks": files_with,
        "own_input_leaks": paired,
        "by_kind": kinds,
        "top_places": top,
    }


def retention(index: InputIndex, outputs: Iterable[Path]) -> dict[str, Any]:
    """Share of research attributes kept, over outputs paired to inputs by pixel hash."""
    present = 0
    kept = 0
    dropped: dict[str, int] = {}
    changed: dict[str, int] = {}
    paired = unpaired = 0
    for path in outputs:
        ds = _read(path.read_bytes())
        key = pixel_key(ds)
        original = index.by_pixels.get(key) if key else None
        if original is None:
            unpaired += 1
            continue
        paired += 1
        now = research_values(ds)
        for kw, value in original.items():
            present += 1
            got = now.get(kw)
            if kw in DATE_ATTRIBUTES:
                ok = _valid_date(got)
            elif kw == "PatientAge" and _over_89(value):
                ok = got is not None  # HIPAA requires ages over 89 to be aggregated
            else:
                ok = got == value
            if ok:
                kept += 1
            elif got is None:
                dropped[kw] = dropped.get(kw, 0) + 1
            else:
                changed[kw] = changed.get(kw, 0) + 1
    share = None if present == 0 else kept / present
    return {
        "retained_share": None if share is None else round(share, 4),
        "attributes_present": present,
        "attributes_retained": kept,
        "outputs_paired": paired,
        "outputs_unpaired": unpaired,
        "dropped": dict(sorted(dropped.items())),
        "changed": dict(sorted(changed.items())),
    }


# -- Orthanc /anonymize --------------------------------------------------------
def orthanc_instance_ids(port: int) -> list[str]:
    """Every instance id the Orthanc on ``port`` holds (``GET /instances``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/instances", headers=_HEADERS)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET /instances -> HTTP {resp.status}")
    return [str(i) for i in json.loads(data)]


def orthanc_anonymize(
    port: int, ids: Sequence[str], out_dir: Path, clients: int, timeout_s: float, body: bytes
) -> tuple[float, list[str]]:
    """``POST /instances/{id}/anonymize`` for every id from ``clients`` keep-alive threads.

    The answer of each call is the anonymized file; it is written to
    ``out_dir`` (inside the timed section). Returns (seconds, errors).
    """
    pending = iter(enumerate(ids))
    lock = threading.Lock()
    errors: list[str] = []
    deadline = time.monotonic() + timeout_s

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                if time.monotonic() > deadline:
                    errors.append("deadline reached")
                    return
                n, iid = item
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                        conn.connect()
                        assert conn.sock is not None
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.request(
                        "POST",
                        f"/instances/{iid}/anonymize",
                        body=body,
                        headers={**_HEADERS, "Content-Type": "application/json"},
                    )
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(f"{iid}: {exc!r}")
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                if resp.status != 200:
                    errors.append(f"{iid}: HTTP {resp.status} {data[:120]!r}")
                    continue
                (out_dir / f"{n:06d}.dcm").write_bytes(data)
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=worker, name=f"anon-{i}") for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, errors


# -- timed harness for the Python tools -----------------------------------------
_STATE: dict[str, Any] = {}


def _init(tool: str, out_dir: str) -> None:
    warnings.simplefilter("ignore")
    _STATE["tool"] = tool
    _STATE["out"] = Path(out_dir)
    if tool == "dicognito":
        from dicognito.anonymizer import Anonymizer

        # One seed for every worker, so UIDs map the same way in each process.
        _STATE["anon"] = Anonymizer(seed="mida-bench")
    elif tool == "deid":
        import logging

        from deid.logger import bot

        bot.level = 0  # the default recipe warns once per file
        logging.disable(logging.WARNING)


def _one(item: tuple[int, str]) -> str | None:
    n, name = item
    out = _STATE["out"] / f"{n:06d}.dcm"
    try:
        if _STATE["tool"] == "dicognito":
            import pydicom

            ds = pydicom.dcmread(name)
            _STATE["anon"].anonymize(ds)
            ds.save_as(out)
        else:
            from deid.dicom import get_identifiers, replace_identifiers

            # deid's documented workflow: extract, then replace with the default recipe.
            ids = get_identifiers([name])
            ds = replace_identifiers([name], ids=ids)[0]
            ds.save_as(out)
    except Exception as exc:  # reported, the run goes on
        # First line only: pydicom puts a traceback (local paths) into some messages.
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{Path(name).name}: {type(exc).__name__}: {first}"[:300]
    return None


def _pool_run(tool: str, files: list[str], out_dir: Path, workers: int) -> dict[str, Any]:
    _init(tool, str(out_dir))  # imports, untimed (the fork inherits them)
    start = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=(tool, str(out_dir))) as pool:
        errors = [e for e in pool.imap_unordered(_one, enumerate(files), chunksize=4) if e]
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "written": len(files) - len(errors),
        "refused": 0,
        "errors": errors[:20],
        "error_count": len(errors),
    }


def _mida_api_run(list_dir: Path, out_dir: Path, workers: int) -> dict[str, Any]:
    from mida.ingest.deid_run import run_deid

    key = hashlib.sha256(b"mida-bench-key").digest()
    start = time.perf_counter()
    report = run_deid([list_dir], out_dir, key, "default", workers=workers)
    seconds = time.perf_counter() - start
    reasons: dict[str, int] = {}
    for r in report.refused:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return {
        "seconds": seconds,
        "written": len(report.written),
        "refused": len(report.refused),
        "refused_reasons": reasons,
        "duplicates": report.duplicates,
        "errors": [],
        "error_count": 0,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of the timed harness (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="bench/_deid_peers.py")
    parser.add_argument("tool", choices=["deid", "dicognito", "mida-api"])
    parser.add_argument("inputs", type=Path, help="list file (deid, dicognito) or folder (mida)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    ns = parser.parse_args(argv)
    # bench/deid.py would shadow the ``deid`` package: drop this folder from the path.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    ns.out.mkdir(parents=True, exist_ok=True)
    if ns.tool == "mida-api":
        result = _mida_api_run(ns.inputs, ns.out, ns.workers)
    else:
        files = [line for line in ns.inputs.read_text().splitlines() if line]
        result = _pool_run(ns.tool, files, ns.out, ns.workers)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
