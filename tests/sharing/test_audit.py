"""The audit trail is tamper-evident: keyed chain, sequence numbers, an anchor for the tail."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from mida.errors import ConfigError
from mida.sharing import AuditLog
from mida.sharing import audit as audit_mod
from mida.sharing.audit import GENESIS, export, parse_when

KEY = b"a" * 32


def _log(tmp_path: Path, n: int = 6, **kw: Any) -> AuditLog:
    log = AuditLog(tmp_path / "node" / "audit" / "audit.jsonl", fsync=False, **kw)
    for i in range(n):
        log.append("test.action", {"i": i}, actor="tester")
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("\n".join(lines) + "\n")


def _found(log: AuditLog, **kw: Any) -> list[tuple[int | None, int | None, str]]:
    return [(p.line, p.seq, p.kind) for p in log.verify(**kw)]


def test_entries_are_numbered_keyed_and_anchored(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert log.verify() == []
    entries = log.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["mac"] for a, b in itertools.pairwise(entries))
    assert [e["detail"]["i"] for e in entries] == [0, 1, 2, 3, 4, 5]
    home = tmp_path / "node"
    for path in (log.path, home / "keys" / "audit.key", log.head_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    anchor = log.anchor()
    assert anchor is not None and anchor["seq"] == 6 and anchor["mac"] == entries[-1]["mac"]
    # the MAC is keyed: the same entry under another key has another MAC
    body = {k: v for k, v in entries[0].items() if k != "mac"}
    assert audit_mod.entry_mac(KEY, body) != entries[0]["mac"]


def test_an_edit_is_caught(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    _write(log, [lines[0], lines[1].replace('"i": 1', '"i": 9'), *lines[2:]])
    assert _found(log) == [(2, 2, "edited")]
    _write(log, [*lines[:-1], lines[-1].replace('"tester"', '"nobody"')])  # the last one too
    assert _found(log) == [(6, 6, "edited")]


def test_a_deletion_in_the_middle_is_caught(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    _write(log, [lines[0], *lines[2:]])
    assert _found(log) == [(2, 2, "deleted")]
    _write(log, [lines[0], *lines[3:]])
    problems = log.verify()
    assert [(p.line, p.seq, p.kind) for p in problems] == [(2, 2, "deleted")]
    assert "entries 2-3 are missing" in problems[0].message
    _write(log, lines[1:])
    assert _found(log) == [(1, 1, "deleted")]


def test_reordering_is_caught(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    _write(log, [lines[0], lines[2], lines[1], *lines[3:]])
    assert _found(log) == [(3, 2, "reordered")]
    _write(log, [lines[1], lines[0], *lines[2:]])
    assert _found(log) == [(2, 1, "reordered")]


def test_truncation_is_caught_by_the_anchor(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    _write(log, lines[:-1])
    problems = log.verify()
    assert [(p.line, p.seq, p.kind) for p in problems] == [(None, 6, "truncated")]
    assert "entry 6 was removed" in problems[0].message
    _write(log, lines[:-3])
    assert _found(log) == [(None, 6, "truncated")]
    log.path.write_text("")
    assert _found(log) == [(None, 6, "truncated")]


def test_a_truncation_stays_visible_after_later_appends(tmp_path: Path) -> None:
    """The next append finds the anchor ahead of the log and records that first."""
    log = _log(tmp_path)
    _write(log, _lines(log)[:-2])
    log.append("after", {}, actor="server")
    log.append("after", {}, actor="server")
    assert _found(log) == [(5, 6, "truncated")]
    evidence = log.entries()[4]
    assert evidence["action"] == audit_mod.ANCHOR_ACTION
    assert evidence["detail"]["head_seq"] == 6 and evidence["detail"]["log_seq"] == 4
    assert [e["seq"] for e in log.entries()] == [1, 2, 3, 4, 5, 6, 7]


def test_a_recomputed_hash_forgery_is_caught(tmp_path: Path) -> None:
    """Edit entry 3 and recompute every later hash, as one could with a plain sha256 chain."""
    log = _log(tmp_path)
    entries = [json.loads(x) for x in _lines(log)]
    entries[2]["detail"] = {"i": 99}
    for k in range(2, len(entries)):
        if k > 2:
            entries[k]["prev"] = entries[k - 1]["mac"]
        body = {a: b for a, b in entries[k].items() if a != "mac"}
        entries[k]["mac"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    _write(log, [json.dumps(e, sort_keys=True) for e in entries])
    assert _found(log) == [(3, 3, "forged"), (4, 4, "forged"), (5, 5, "forged"),
                           (6, 6, "forged"), (None, 6, "anchor_mismatch")]


def test_inserted_copied_and_damaged_lines_are_caught(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    fake = json.loads(lines[2])
    fake.update(detail={"i": "inserted"}, mac="f" * 64)
    _write(log, [*lines[:3], json.dumps(fake), *lines[3:]])
    assert (4, 3, "forged") in _found(log)
    _write(log, [*lines, lines[1]])
    assert _found(log) == [(7, 2, "duplicated")]
    _write(log, [*lines[:2], "not json at all", *lines[2:]])
    assert _found(log) == [(3, None, "unreadable")]
    legacy = json.dumps({"action": "x", "actor": "y", "detail": {}, "prev": GENESIS,
                         "time": "2024-01-01T00:00:00+00:00"})
    _write(log, [*lines, legacy])
    assert _found(log) == [(7, None, "forged")]  # an unkeyed line after keyed ones


def test_a_line_torn_by_a_crash_is_the_only_finding(tmp_path: Path) -> None:
    """A crash in the middle of a write leaves half a line; later appends carry on after it."""
    log = _log(tmp_path, n=3)
    with log.path.open("a") as fh:
        fh.write('{"action": "half a li')
    log.append("after", {}, actor="server")
    assert _found(log) == [(4, None, "unreadable")]
    assert [e["seq"] for e in log.entries()] == [1, 2, 3, 4]


def test_the_anchor_itself_is_signed(tmp_path: Path) -> None:
    log = _log(tmp_path)
    head = json.loads(log.head_path.read_text())
    lines = _lines(log)
    # truncate and rewrite the anchor to match (copying seq and mac from the log)
    _write(log, lines[:-1])
    last = json.loads(lines[-2])
    head.update(seq=last["seq"], mac=last["mac"])
    log.head_path.write_text(json.dumps(head))
    assert _found(log) == [(None, 5, "anchor_forged")]
    log.head_path.unlink()
    assert _found(log) == [(None, None, "anchor_missing")]


def test_an_anchor_kept_elsewhere_catches_a_rollback(tmp_path: Path) -> None:
    """Log and local anchor put back together to an older state: only an outside anchor shows it."""
    log = _log(tmp_path, n=3)
    old_log, old_head = log.path.read_bytes(), log.head_path.read_bytes()
    for i in range(3):
        log.append("later", {"i": i}, actor="tester")
    kept = log.anchor()
    assert kept is not None and log.verify([kept]) == []
    log.path.write_bytes(old_log)
    log.head_path.write_bytes(old_head)
    assert log.verify() == []  # consistent locally...
    assert _found(log, anchors=[kept]) == [(None, 6, "truncated")]  # ...but not with the anchor
    forged = {**kept, "seq": 2}
    assert _found(log, anchors=[forged]) == [(None, 2, "anchor_forged")]


def test_another_key_cannot_verify_or_append(tmp_path: Path) -> None:
    log = _log(tmp_path)
    other = AuditLog(log.path, key=b"b" * 32, fsync=False)
    kinds = {p.kind for p in other.verify()}
    assert kinds == {"forged", "wrong_key"}
    key_file = tmp_path / "node" / "keys" / "audit.key"
    key_file.rename(key_file.with_suffix(".bak"))
    fresh = AuditLog(log.path, fsync=False)
    with pytest.raises(ConfigError, match="restore the key"):
        fresh.append("x", {})
    assert _found(fresh) == [(None, None, "key_missing")]
    assert not key_file.exists(), "no new key is made while keyed entries exist"


def test_a_legacy_log_verifies_and_is_sealed_by_the_first_keyed_entry(tmp_path: Path) -> None:
    path = tmp_path / "node" / "audit" / "audit.jsonl"
    path.parent.mkdir(parents=True)
    prev, lines = GENESIS, []
    for i in range(3):  # the format before sequence numbers: prev = sha256 of the line before
        line = json.dumps({"action": "old", "actor": "a", "detail": {"i": i}, "prev": prev,
                           "time": "2024-01-01T00:00:00+00:00"}, sort_keys=True)
        lines.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
    path.write_text("\n".join(lines) + "\n")
    log = AuditLog(path, fsync=False)
    rep = log.report()
    assert rep.intact and rep.legacy_entries == 3 and rep.last_seq is None
    entry = log.append("new", {}, actor="b")
    assert entry["seq"] == 4 and entry["prev"] == prev
    assert log.verify() == [] and log.report().legacy_entries == 3
    # the prefix is now sealed: rewriting it consistently breaks the keyed link
    forged, p = [], GENESIS
    for line in lines:
        e = json.loads(line)
        e["prev"] = p
        e["detail"] = {"i": -1} if e["detail"]["i"] == 1 else e["detail"]
        forged.append(json.dumps(e, sort_keys=True))
        p = hashlib.sha256(forged[-1].encode()).hexdigest()
    _write(log, [*forged, *_lines(log)[3:]])
    assert _found(log) == [(4, 4, "chain_break")]


def test_appends_read_only_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting lines happens once, when a legacy prefix is sealed; never on a keyed log."""
    log = AuditLog(tmp_path / "node" / "audit" / "audit.jsonl", fsync=False, key=KEY)
    log.append("big", {"pad": "x" * 100_000}, actor="t")  # longer than the tail window

    def no_scan(fd: int) -> int:
        raise AssertionError("an append scanned the whole log")

    monkeypatch.setattr(audit_mod, "_count_lines", no_scan)
    for _ in range(3):
        log.append("after", {}, actor="t")
    assert log.verify() == [] and log.entries()[-1]["seq"] == 4


def test_detail_values_are_stored_as_read_back(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a" / "audit.jsonl", key=KEY, fsync=False)
    entry = log.append("t", {"when": dt.date(2025, 3, 4), "path": Path("/x"), "ids": (1, 2),
                             1: "numeric key", "text": "台灣"})
    assert entry["detail"] == {"when": "2025-03-04", "path": "/x", "ids": [1, 2],
                               "1": "numeric key", "text": "台灣"}
    assert log.entries()[0] == entry and log.verify() == []


def _append_many(path: str, who: str) -> None:
    log = AuditLog(Path(path), fsync=False)
    for i in range(50):
        log.append("concurrent", {"i": i}, actor=who)


def test_writers_in_several_processes_keep_one_chain(tmp_path: Path) -> None:
    """The server, the DICOM node and the CLI append to one trail (and make one key) at once."""
    import multiprocessing

    path = tmp_path / "node" / "audit" / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), f"w{i}")) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    log = AuditLog(path)
    assert [e["seq"] for e in log.entries()] == list(range(1, 201))
    assert log.verify() == []


def _backdate(log: AuditLog, n: int, when: str) -> None:
    """Give the first ``n`` entries an earlier time, re-MACed and re-anchored as if written then."""
    import os

    entries = [json.loads(x) for x in _lines(log)]
    for e in entries[:n]:
        e["time"] = when
    for k, e in enumerate(entries):
        if k:
            e["prev"] = entries[k - 1]["mac"]
        e["mac"] = audit_mod.entry_mac(KEY, e)
    _write(log, [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in entries])
    fd = os.open(log.head_path, os.O_RDWR)
    try:
        log._write_head(fd, KEY, entries[-1]["seq"], entries[-1]["mac"])
    finally:
        os.close(fd)


def test_export_writes_a_period_and_a_verification_report(tmp_path: Path) -> None:
    log = _log(tmp_path, n=5, key=KEY)
    _backdate(log, 2, "2024-12-31T23:00:00+00:00")
    assert log.verify() == []
    out = tmp_path / "export" / "audit.jsonl"
    rep = export(log, out, since=parse_when("2025-01-01"))
    assert rep["entries"] == 3 and rep["first"]["seq"] == 3 and rep["last"]["seq"] == 5
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == [3, 4, 5]
    assert rep["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    saved = json.loads(Path(f"{out}.verification.json").read_text())
    assert saved["verification"]["intact"] and saved["verification"]["entries"] == 5
    assert saved["verification"]["anchor"]["seq"] == 5
    # the excerpt verifies on its own: sequence and links always, MACs with the key
    assert AuditLog(out, key=KEY).report(fragment=True).intact
    keyless = AuditLog(out, home=tmp_path / "nowhere").report(fragment=True)
    assert keyless.intact and not keyless.macs_checked
    _write(AuditLog(out, key=KEY), _lines(AuditLog(out, key=KEY))[::2])
    assert [p.kind for p in AuditLog(out, key=KEY).report(fragment=True).problems] == [
        "deleted"]
    early = export(log, tmp_path / "early.csv", until=parse_when("2024-12-31", end=True),
                   fmt="csv")
    rows = list(csv.DictReader((tmp_path / "early.csv").open()))
    assert early["entries"] == 2 and [r["seq"] for r in rows] == ["1", "2"]
    assert json.loads(rows[0]["detail"]) == {"i": 0}


def test_an_export_of_a_tampered_log_says_so(tmp_path: Path) -> None:
    log = _log(tmp_path, n=3, key=KEY)
    _write(log, _lines(log)[:-1])
    rep = export(log, tmp_path / "x.jsonl")
    assert rep["entries"] == 2
    assert [p["kind"] for p in rep["verification"]["problems"]] == ["truncated"]
