"""Build mida's safe-private dictionary from the TCIA private tag knowledge base.

The Retain Safe Private option (PS3.15 E.3.10) keeps a private attribute only
when :mod:`mida.deid.safe_private` lists it. That list is generated from the
TCIA Private Tag Knowledge Base (the ``k``, *keep*, rows) by this script and
committed as ``src/mida/deid/data/safe_private.json`` (with the Apache-2.0
licence text of its source as ``safe_private.LICENSE.txt``); mida never reads
the knowledge base at run time.

Usage (from the repository root)::

    python tools/build_safe_private.py [KB.csv] [--out src/mida/deid/data/safe_private.json]

Without arguments the knowledge base is read from ``../shared/data`` (see
:data:`DEFAULT_KB`). The output depends only on the input file, so running the
script again on the same knowledge base reproduces the committed file byte for
byte (``tests/deid/test_safe_private.py`` checks that where the file exists).

Parsing
-------
Each row is ``element_sig_pattern, tag_name, vr, private_disposition``. A
pattern is a chain of segments joined by item markers ``[<n>]`` (any item at
nesting level n): ``(gggg,eeee)`` for a standard attribute or
``(gggg,"creator",ee)`` for a private one, where ee is the element byte within
the creator's block. The CSV quotes creators irregularly
(``(0019,"X",10)``, ``(0019,X",10)``, ``(0019,X,10)``), so a segment is parsed
by its fixed ends (group, element byte, closing parenthesis before the next
marker) rather than by its quotes. Dispositions and VRs are stripped and
case-folded (``" k"`` and ``"K"`` are ``k``).

A ``k`` row becomes an entry ``[path, creator, group, element, vr, name]``,
where path lists the enclosing sequences (empty at the top level). Rows are
skipped, and counted by reason in the output's ``counts.skipped``, when the
pattern does not parse, the creator is empty (unknown), the last segment is a
standard attribute (inside a private sequence it follows mida's normal
rules), a private segment is in an even group, or the VR is missing or not a
DICOM VR.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

from pydicom.valuerep import STANDARD_VR

from mida.deid.safe_private import sequence_component

REPO = Path(__file__).resolve().parents[1]
KB_NAME = "TCIAPrivateTagKB-02-01-2024-formatted.csv"
KB_DATE = "2024-02-01"
DEFAULT_KB = REPO.parent / "shared" / "data" / "phi" / "midi_b_micdkfz_refs" / "docs" / KB_NAME
DEFAULT_OUT = REPO / "src" / "mida" / "deid" / "data" / "safe_private.json"
VERSION = f"tcia-{KB_DATE}.1"
"""The dictionary's version: the knowledge base's date, then mida's revision of the build."""

SOURCE = {
    "name": "TCIA Private Tag Knowledge Base",
    "file": KB_NAME,
    "date": KB_DATE,
    "via": "github.com/MIC-DKFZ/miccai2024_midi-b-submission "
    "commit e3e62baea9808983d28e30e1880dec8a05f4b6d1, docs/" + KB_NAME,
    "licence": "Apache-2.0",
}
VRS = frozenset(str(vr) for vr in STANDARD_VR)
_SEGMENT = re.compile(
    r"\((?P<group>[0-9A-Fa-f]{4}),"
    r'(?:(?P<tag_element>[0-9A-Fa-f]{4})|"?(?P<creator>.*?)"?,(?P<element>[0-9A-Fa-f]{2}))\)'
    r"(?=\[<\d+>\]|$)"
)
_ITEM = re.compile(r"\[<\d+>\]")


class Skip(Exception):
    """A row that does not become an entry; the message is the reason counted."""


def parse_pattern(pattern: str) -> list[tuple[int, str | None, int]]:
    """Split an element signature into ``(group, creator, element)`` segments.

    A standard segment has creator None and its 16-bit element; a private
    one its creator (stripped) and element byte.

    >>> parse_pattern('(0008,1115)[<0>](0009,GEIIS_RA1000",01)')
    [(8, None, 4373), (9, 'GEIIS_RA1000', 1)]
    >>> parse_pattern('(0019,"HOLOGIC, Inc.",60)')
    [(25, 'HOLOGIC, Inc.', 96)]
    """
    segments: list[tuple[int, str | None, int]] = []
    pos, text = 0, pattern.strip()
    while True:
        m = _SEGMENT.match(text, pos)
        if m is None:
            raise Skip("pattern does not parse")
        group = int(m["group"], 16)
        if m["tag_element"] is not None:
            segments.append((group, None, int(m["tag_element"], 16)))
        else:
            segments.append((group, m["creator"].strip(), int(m["element"], 16)))
        pos = m.end()
        if pos == len(text):
            return segments
        marker = _ITEM.match(text, pos)
        if marker is None:  # pragma: no cover - the lookahead guarantees one
            raise Skip("pattern does not parse")
        pos = marker.end()


def entry(row: list[str]) -> tuple[list[str], str, str, str, str, str]:
    """The dictionary entry of a ``k`` row; raises :class:`Skip` with the reason."""
    pattern, name, vr = row[0], row[1].strip(), row[2].strip().upper()
    segments = parse_pattern(pattern)
    for group, creator, _ in segments:
        if creator is not None and not group & 1:
            raise Skip("private segment in an even group")
        if creator is None and group & 1:
            raise Skip("odd group without a creator")
        if creator == "":
            raise Skip("empty (unknown) private creator")
    group, creator, element = segments[-1]
    if creator is None:
        raise Skip("standard attribute in a private sequence: normal rules apply")
    if not vr:
        raise Skip("no VR")
    if vr not in VRS:
        raise Skip("VR is not a DICOM VR")
    path = [sequence_component(g, e, c) for g, c, e in segments[:-1]]
    return path, creator, f"{group:04x}", f"{element:02x}", vr, name


def build(kb: Path) -> str:
    """Return the text of ``safe_private.json`` built from the knowledge base `kb`."""
    data = kb.read_bytes()
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, body = rows[0], rows[1:]
    if [h.strip() for h in header] != [
        "element_sig_pattern",
        "tag_name",
        "vr",
        "private_disposition",
    ]:
        raise SystemExit(f"{kb}: unexpected header {header}")
    dispositions: collections.Counter[str] = collections.Counter()
    skipped: collections.Counter[str] = collections.Counter()
    entries: dict[tuple[tuple[str, ...], str, str, str, str], list[object]] = {}
    for row in body:
        if len(row) != 4:
            skipped["malformed CSV row"] += 1
            continue
        disposition = row[3].strip().lower() or "(none)"
        dispositions[disposition] += 1
        if disposition != "k":
            continue
        try:
            e = entry(row)
        except Skip as why:
            skipped[str(why)] += 1
            continue
        path, creator, group, element, vr, name = e
        key = (tuple(path), creator, group, element, vr)
        if key in entries:
            skipped["duplicate"] += 1
            continue
        entries[key] = [path, creator, group, element, vr, name]
    ordered = [entries[k] for k in sorted(entries, key=lambda k: (len(k[0]), k))]
    top = sum(1 for e in ordered if not e[0])
    doc = {
        "format": 1,
        "version": VERSION,
        "source": SOURCE | {"sha256": hashlib.sha256(data).hexdigest()},
        "generator": "tools/build_safe_private.py",
        "selection": "rows with private_disposition k (keep); creator, group, element byte "
        "and VR as listed; nested rows keep the path of their enclosing sequences",
        "counts": {
            "rows": len(body),
            "dispositions": dict(sorted(dispositions.items())),
            "entries": len(ordered),
            "top_level": top,
            "nested": len(ordered) - top,
            "skipped": dict(sorted(skipped.items())),
        },
        "columns": ["path", "creator", "group", "element", "vr", "name"],
    }
    head = json.dumps(doc, indent=1, ensure_ascii=False)[:-2]  # reopen the object
    lines = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in ordered)
    return f'{head},\n "entries": [\n{lines}\n ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kb", nargs="?", type=Path, default=DEFAULT_KB)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.kb.is_file():
        raise SystemExit(f"{args.kb}: no such file (the TCIA knowledge base CSV)")
    text = build(args.kb)
    args.out.write_text(text, encoding="utf-8")
    licence = args.kb.parents[1] / "LICENSE"  # the Apache-2.0 text of the repository it came from
    if licence.is_file():
        args.out.with_name("safe_private.LICENSE.txt").write_bytes(licence.read_bytes())
    counts = json.loads(text)["counts"]
    sys.stdout.write(
        f"{args.out}: {counts['entries']} entries ({counts['top_level']} top-level, "
        f"{counts['nested']} nested) from {counts['rows']} rows; skipped "
        f"{sum(counts['skipped'].values())} keep rows: {counts['skipped']}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
