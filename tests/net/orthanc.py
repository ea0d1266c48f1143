"""A real Orthanc on loopback for tests and benchmarks (Debian ``orthanc`` 1.10.1).

:func:`start_orthanc` writes a configuration into a temporary folder (storage,
index and log there), starts ``/usr/sbin/Orthanc`` with ``TCP_NODELAY=1`` in its
environment (DCMTK, and so Orthanc, honours it: see ../shared/NOTES.md) and
waits until ``GET /system`` answers. The configuration it writes is
:func:`orthanc_config`'s, in the form Orthanc's documentation recommends for a
peer that is queried and retrieved from: C-FIND, C-GET, C-MOVE and C-STORE
allowed for every calling AE, called AE not checked, HTTP on loopback only and
uncompressed. Orthanc's DICOM port listens on every interface, so tests send
DICOM traffic to 127.0.0.1 only.

Without Orthanc installed the caller's test is skipped, except under CI
(``MIDA_TEST_REQUIRE_SERVICES=1``), where it fails.

Examples
--------
>>> orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=free_port(),
...                         http_port=free_port(), modalities={})  # doctest: +SKIP
>>> upload(orthanc, Path("ct.dcm").read_bytes())  # doctest: +SKIP
>>> orthanc.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REQUIRE_SERVICES = os.environ.get("MIDA_TEST_REQUIRE_SERVICES") == "1"


def orthanc_binary() -> str:
    """The Orthanc executable; skips the test (fails under CI) when it is missing."""
    path = ORTHANC if os.access(ORTHANC, os.X_OK) else shutil.which("Orthanc")
    if not path:
        if REQUIRE_SERVICES:
            pytest.fail("Orthanc is not installed but CI requires it (apt-get install orthanc)")
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    return path


def free_port() -> int:
    """A TCP port free on loopback now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def orthanc_config(folder: Path, *, dicom_port: int, http_port: int,
                   modalities: dict[str, Any], plugins: list[str],
                   aet: str = "ORTHANC") -> dict[str, Any]:
    """The configuration :func:`start_orthanc` writes (one place to read it)."""
    return {
        "Name": "mida-test-orthanc",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpCompressionEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": modalities,
        "DicomModalitiesInDatabase": False,
        "SaveJobs": False,
        "Plugins": plugins,
    }


@dataclass
class OrthancHandle:
    """A running Orthanc: its REST base URL, DICOM port and AE title."""

    url: str
    dicom_port: int
    http_port: int
    aet: str
    folder: Path
    config: dict[str, Any]
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        """Orthanc's own output so far (for failure messages)."""
        p = self.folder / "orthanc.log"
        return p.read_text(errors="replace") if p.exists() else ""


def request(orthanc: OrthancHandle, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> Any:
    """One REST call to ``orthanc``; returns the decoded JSON answer (or None)."""
    req = urllib.request.Request(orthanc.url + path, data=body, method=method, headers={
        "Accept-Encoding": "identity", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def upload(orthanc: OrthancHandle, data: bytes) -> dict[str, Any]:
    """Store one DICOM file in ``orthanc`` over REST (``POST /instances``)."""
    out: dict[str, Any] = request(orthanc, "POST", "/instances", data, "application/dicom")
    return out


def start_orthanc(tmp_dir: Path, *, dicom_port: int, http_port: int,
                  modalities: dict[str, Any], plugins: list[str] | None = None,
                  aet: str = "ORTHANC", timeout: float = 60.0) -> OrthancHandle:
    """Start Orthanc with its storage, index, configuration and log in ``tmp_dir``.

    Parameters
    ----------
    tmp_dir
        A folder of its own (created).
    dicom_port, http_port
        Ports on loopback (see :func:`free_port`).
    modalities
        Orthanc's ``DicomModalities``, e.g. ``{"mida": ["MIDA", "127.0.0.1", 11112]}``.
    plugins
        Plugin libraries to load, e.g. ``[DICOMWEB_PLUGIN]``.
    aet
        Orthanc's own AE title.
    timeout
        Seconds to wait for ``GET /system`` to answer.

    Returns
    -------
    OrthancHandle
        Call ``.stop()`` when done (a fixture's teardown).
    """
    binary = orthanc_binary()
    folder = Path(tmp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = orthanc_config(folder, dicom_port=dicom_port, http_port=http_port,
                            modalities=modalities, plugins=list(plugins or []), aet=aet)
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    env = {**os.environ, "TCP_NODELAY": "1"}
    with open(folder / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([binary, "--no-jobs", str(cfg)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=folder)
    handle = OrthancHandle(url=f"http://127.0.0.1:{http_port}", dicom_port=dicom_port,
                           http_port=http_port, aet=aet, folder=folder, config=config,
                           process=proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{handle.log()[-3000:]}")
        try:
            request(handle, "GET", "/system")
            return handle
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                handle.stop()
                raise RuntimeError(f"Orthanc did not answer in {timeout:.0f}s:\n"
                                   f"{handle.log()[-3000:]}") from None
            time.sleep(0.1)


__all__ = [
    "DICOMWEB_PLUGIN",
    "OrthancHandle",
    "free_port",
    "orthanc_binary",
    "orthanc_config",
    "request",
    "start_orthanc",
    "upload",
]
