"""A throw-away Orthanc on loopback, and the two ways the bench feeds it.

Orthanc (Debian package, 1.10.x) is started per corpus and per method with a
generated configuration in a temporary directory. The configuration follows
the performance advice of the Orthanc Book ("Scalability of Orthanc":
``StorageCompression false``, ``KeepAlive``, ``TcpNoDelay``, ``SaveJobs false``,
``StorageAccessOnFind Never``, ``LimitFind*``), raises ``MaximumPduLength``
to DCMTK's maximum, and the environment sets
``TCP_NODELAY=1``, which DCMTK (and so Orthanc's DICOM server and storescu)
honours. The built-in SQLite index is kept: the Book advises PostgreSQL only
for hundreds of thousands of instances, far above these corpora.

Traffic only ever goes to 127.0.0.1. Orthanc 1.10 binds its DICOM port on
every interface; ``RemoteAccessAllowed false`` covers HTTP only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from _result import die_with_parent, log_tail

LOOPBACK = "127.0.0.1"
AE_TITLE = "ORTHANC"
_HTTP_HEADERS = {"Accept-Encoding": "identity"}


class OrthancError(RuntimeError):
    """Orthanc did not start, answer or store as expected; see its log."""


def free_port() -> int:
    """An unused TCP port on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def peer_environment() -> dict[str, str]:
    """Environment for Orthanc and storescu: DCMTK reads ``TCP_NODELAY``."""
    return {**os.environ, "TCP_NODELAY": "1"}


def orthanc_config(workdir: Path, http_port: int, dicom_port: int) -> dict[str, Any]:
    """The configuration written for one benchmark Orthanc."""
    return {
        "Name": "mida-bench",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "DicomServerEnabled": True,
        "DicomAet": AE_TITLE,
        "DicomPort": dicom_port,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "DicomModalities": {},
        # The largest PDU DCMTK accepts (default 16384): about 5 % faster storescu here.
        "MaximumPduLength": 131072,
        "SaveJobs": False,
        "StorageAccessOnFind": "Never",
        "LimitFindResults": 100,
        "LimitFindInstances": 100,
        "OverwriteInstances": False,
    }


class OrthancServer:
    """Start a fresh Orthanc in ``workdir``; stop it and delete ``workdir`` on exit.

    Examples
    --------
    ::

        with OrthancServer(Path("/tmp/o1")) as orthanc:
            ...  # feed it
            assert orthanc.count_instances() == n
    """

    def __init__(self, workdir: Path, binary: str = "Orthanc", ready_timeout_s: float = 60) -> None:
        self.workdir = workdir
        self.binary = binary
        self.ready_timeout_s = ready_timeout_s
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.config = orthanc_config(workdir, self.http_port, self.dicom_port)
        self.log_path = workdir / "orthanc.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id of the running Orthanc."""
        if self._proc is None:
            raise OrthancError("Orthanc is not running")
        return self._proc.pid

    def __enter__(self) -> OrthancServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self) -> None:
        """Write the configuration, launch Orthanc and wait for ``GET /system``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config, indent=2))
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [self.binary, str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=peer_environment(),
                preexec_fn=die_with_parent,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise OrthancError(f"Orthanc exited at start:\n{log_tail(self.log_path)}")
            try:
                self.get_json("/system")
                return
            except (OSError, http.client.HTTPException, OrthancError):
                time.sleep(0.1)
        raise OrthancError(
            f"Orthanc not ready after {self.ready_timeout_s:.0f} s:\n{log_tail(self.log_path)}"
        )

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One HTTP request to this Orthanc; raise :class:`OrthancError` unless 200."""
        conn = http.client.HTTPConnection(LOOPBACK, self.http_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=_HTTP_HEADERS)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise OrthancError(f"{method} {path} -> HTTP {resp.status}: {data[:200]!r}")
        return data

    def get_json(self, path: str) -> Any:
        """``GET path`` decoded as JSON."""
        return json.loads(self.request("GET", path))

    def count_instances(self) -> int:
        """``CountInstances`` from ``GET /statistics``."""
        return int(self.get_json("/statistics")["CountInstances"])

    def version(self) -> str:
        """Orthanc's own version string (``GET /system``)."""
        return str(self.get_json("/system").get("Version", "?"))

    def stop(self) -> None:
        """``POST /tools/shutdown``, then terminate, then kill (bounded waits)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(OSError, http.client.HTTPException, OrthancError):
            self.request("POST", "/tools/shutdown")
        for action, wait_s in ((None, 30.0), (proc.terminate, 10.0), (proc.kill, 10.0)):
            if action is not None:
                action()
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def storescu_command(
    binary: str, port: int, directory: Path, calling_aet: str = "MIDABENCH"
) -> list[str]:
    """One association over every file under ``directory``.

    ``-R`` proposes exactly the presentation contexts the scanned files need
    (their SOP classes with the uncompressed transfer syntaxes); ``-nh``
    keeps going after a failed store so the count check reports it.
    """
    return [
        binary,
        "-aet", calling_aet,
        "-aec", AE_TITLE,
        "-R",
        "+sd", "+r", "+sp", "*.dcm",
        "-nh",
        "-ll", "warn",
        LOOPBACK, str(port), str(directory),
    ]  # fmt: skip


def feed_storescu(
    binary: str, port: int, directory: Path, log_path: Path, timeout_s: float
) -> None:
    """Run storescu to completion; raise :class:`OrthancError` if it fails."""
    cmd = storescu_command(binary, port, directory)
    with log_path.open("wb") as log:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=peer_environment(),
            timeout=timeout_s,
            check=False,
        )
    if proc.returncode != 0:
        raise OrthancError(f"storescu exited {proc.returncode}:\n{log_tail(log_path)}")


class _RestClient:
    """One keep-alive HTTP connection that POSTs DICOM files to ``/instances``."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout_s)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, path: Path) -> str | None:
        """Send one file; return an error message, or ``None`` on success."""
        body = path.read_bytes()
        headers = {**_HTTP_HEADERS, "Content-Type": "application/dicom"}
        try:
            if self.conn is None:
                self.conn = self._connect()
            self.conn.request("POST", "/instances", body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return f"{path.name}: {exc!r}"
        if resp.status != 200:
            return f"{path.name}: HTTP {resp.status} {data[:120]!r}"
        return None

    def close(self) -> None:
        """Close the connection (a later :meth:`post` reconnects)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def feed_rest(port: int, files: Sequence[Path], clients: int, timeout_s: float) -> list[str]:
    """POST every file with ``clients`` concurrent keep-alive connections.

    Returns the error messages (empty when every POST answered 200).
    """
    pending = iter(files)
    lock = threading.Lock()
    errors: list[str] = []
    deadline = time.monotonic() + timeout_s

    def next_file() -> Path | None:
        with lock:
            return next(pending, None)

    def worker() -> None:
        client = _RestClient(port, timeout_s=60)
        try:
            while (path := next_file()) is not None:
                if time.monotonic() > deadline:
                    errors.append("deadline reached before all files were sent")
                    return
                error = client.post(path)
                if error is not None:
                    errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"rest-{i}") for i in range(clients)]
    _run_all(threads)
    return errors


def _run_all(threads: Iterable[threading.Thread]) -> None:
    started = list(threads)
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()


def tool_version(binary: str) -> str:
    """First line of ``binary --version`` (best effort)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return out.strip().splitlines()[0] if out.strip() else "unknown"
