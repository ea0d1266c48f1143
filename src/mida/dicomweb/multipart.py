"""Media types, Accept negotiation and ``multipart/related`` bodies (RFC 2387, PS3.18 8.6).

Framework-free: the API face hands header values and body chunks in and
streams the chunks that come out.

Examples
--------
>>> parse_media_type('multipart/related; type="application/dicom"; boundary=b1')
('multipart/related', {'type': 'application/dicom', 'boundary': 'b1'})
>>> [(r.media_type, r.params.get("type")) for r in parse_accept(
...     'multipart/related; type="image/jpeg"; q=0.5, multipart/related; type=application/dicom')]
[('multipart/related', 'application/dicom'), ('multipart/related', 'image/jpeg')]
>>> b"".join(multipart_body([("application/dicom", [b"AB"])], "x"))
b'--x\\r\\nContent-Type: application/dicom\\r\\n\\r\\nAB\\r\\n--x--\\r\\n'
"""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from mida.errors import MidaError


class DicomWebError(MidaError):
    """A DICOMweb request that cannot be answered; ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class NotAcceptableError(DicomWebError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 406)


class UnsupportedMediaTypeError(DicomWebError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 415)


class PayloadTooLargeError(DicomWebError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the {limit} bytes this node accepts "
                         "(MIDA_STOW_MAX_BYTES); send fewer instances per request", 413)


_PARAM = re.compile(r'\s*;\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)')


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """A media type (lower case) and its parameters (names lower case, quotes removed)."""
    value = value.strip()
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    rest = ";" + rest if rest else ""
    for m in _PARAM.finditer(rest):
        v = m.group(2)
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[m.group(1).lower()] = v
    return main.strip().lower(), params


def _split_commas(header: str) -> list[str]:
    """Split a header list on commas outside quoted strings."""
    out, cur, quoted, escaped = [], [], False, False
    for ch in header:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def multipart(self) -> bool:
        return self.media_type in ("multipart/related", "multipart/*")

    @property
    def part_type(self) -> str | None:
        """For a multipart range, the media type of its parts (None: any)."""
        t = self.params.get("type")
        return t.strip().lower() if t else None

    @property
    def transfer_syntax(self) -> str | None:
        ts = self.params.get("transfer-syntax")
        return ts.strip() if ts else None


def parse_accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, best first (``*/*`` when absent); q=0 ranges dropped."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for item in _split_commas(header):
        mt, params = parse_media_type(item)
        q = 1.0
        if "q" in params:
            try:
                q = float(params.pop("q"))
            except ValueError:
                q = 1.0
        if q > 0 and mt:
            ranges.append(MediaRange(mt, params, q))
    ranges.sort(key=lambda r: -r.q)  # stable: equal q keep the client's order
    return ranges


def type_matches(pattern: str | None, media_type: str) -> bool:
    """Whether ``media_type`` matches ``pattern`` (``*/*``, ``image/*``, exact; None = any)."""
    if pattern is None or pattern == "*/*" or pattern == "*":
        return True
    if pattern.endswith("/*"):
        return media_type.split("/")[0] == pattern[:-2]
    return pattern == media_type


def new_boundary() -> str:
    return f"mida-{secrets.token_hex(16)}"


def multipart_content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_head(content_type: str, boundary: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def multipart_body(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """Stream a multipart/related body: each part is (content type, its data chunks)."""
    for content_type, chunks in parts:
        yield part_head(content_type, boundary)
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


# -- reading -----------------------------------------------------------------
SPOOL_IN_MEMORY = 16 * 1024 * 1024  # a part larger than this goes to a temporary file


class Part:
    """One received body part: its headers and its data (spooled to disk when large)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.size = 0
        # closed by close(), which the reader and the STOW path always call
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_IN_MEMORY)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def write(self, data: bytes | memoryview) -> None:
        if data:
            self._file.write(data)
            self.size += len(data)

    def read(self) -> bytes:
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        self._file.close()


class MultipartReader:
    """Incremental parser of a ``multipart/related`` body, bounded in size.

    Feed it the body's chunks as they arrive; it keeps at most one
    delimiter's worth of bytes besides the current part (which spools to a
    temporary file past :data:`SPOOL_IN_MEMORY`), and raises
    :class:`PayloadTooLargeError` as soon as more than ``limit`` bytes came.
    """

    _MAX_HEADERS = 16 * 1024

    def __init__(self, boundary: str, limit: int) -> None:
        if not boundary or len(boundary) > 200:
            raise DicomWebError("the multipart/related Content-Type needs a boundary parameter")
        self.limit = limit
        self.received = 0
        self.parts: list[Part] = []
        self._dash = b"--" + boundary.encode("latin-1")
        self._delim = b"\r\n" + self._dash
        self._buf = bytearray()
        self._state = "preamble"  # preamble | after_delim | headers | body | done
        self._part: Part | None = None

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            self.discard()
            raise PayloadTooLargeError(self.limit)
        if self._state == "done" or not chunk:
            return
        self._buf += chunk
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        while True:
            if self._state == "preamble":
                # The first delimiter may start the body (no CRLF before it).
                at = buf.find(self._dash)
                if at < 0:
                    keep = len(self._dash) - 1
                    del buf[:max(0, len(buf) - keep)]
                    return
                del buf[:at + len(self._dash)]
                self._state = "after_delim"
            elif self._state == "after_delim":
                if len(buf) < 2:
                    return
                if buf[:2] == b"--":
                    self._state = "done"
                    buf.clear()
                    return
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise DicomWebError("malformed multipart body: junk after a boundary")
                    return
                del buf[:end + 2]  # transport padding, then CRLF
                self._state = "headers"
            elif self._state == "headers":
                end = buf.find(b"\r\n\r\n")
                if buf[:2] == b"\r\n":  # a part without headers
                    end = -2
                elif end < 0:
                    if len(buf) > self._MAX_HEADERS:
                        raise DicomWebError("malformed multipart body: part headers too long")
                    return
                headers = _parse_headers(bytes(buf[:max(end, 0)]))
                del buf[:end + 4]
                self._part = Part(headers)
                self.parts.append(self._part)
                self._state = "body"
            elif self._state == "body":
                assert self._part is not None
                at = buf.find(self._delim)
                if at < 0:
                    safe = len(buf) - (len(self._delim) - 1)
                    if safe > 0:
                        self._part.write(memoryview(buf)[:safe])
                        del buf[:safe]
                    return
                self._part.write(memoryview(buf)[:at])
                del buf[:at + len(self._delim)]
                self._part = None
                self._state = "after_delim"
            else:
                return

    def close(self) -> list[Part]:
        """Check the body ended properly; the parts received."""
        if self._state != "done":
            self.discard()
            if not self.parts and self._state == "preamble":
                raise DicomWebError("the body has no multipart/related part with the boundary "
                                    "named in Content-Type")
            raise DicomWebError("the multipart/related body is truncated: its closing "
                                "boundary is missing")
        return self.parts

    def discard(self) -> None:
        for p in self.parts:
            p.close()


def _parse_headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


__all__ = [
    "DicomWebError",
    "MediaRange",
    "MultipartReader",
    "NotAcceptableError",
    "Part",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "multipart_body",
    "multipart_content_type",
    "new_boundary",
    "parse_accept",
    "parse_media_type",
    "part_head",
    "type_matches",
]
