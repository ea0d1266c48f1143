"""The audit trail's hash chain detects edits, deletions and reordering."""

from __future__ import annotations

from pathlib import Path

from mida.sharing import AuditLog


def _log(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    for i in range(n):
        log.append("test.action", {"i": i}, actor="tester")
    return log


def test_intact_chain(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert log.verify() == []
    assert [e["detail"]["i"] for e in log.entries()] == [0, 1, 2, 3]
    assert (log.path.stat().st_mode & 0o777) == 0o600


def test_edit_delete_and_reorder_are_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[1].replace('"i": 1', '"i": 9'), *lines[2:]])
                        + "\n")
    assert log.verify() == [3]
    log.path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert log.verify() == [2]
    log.path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    assert log.verify() == [1, 2, 3]


def _append_many(path: str, who: str) -> None:
    log = AuditLog(Path(path), fsync=False)
    for i in range(50):
        log.append("concurrent", {"i": i}, actor=who)


def test_writers_in_several_processes_keep_one_chain(tmp_path: Path) -> None:
    """The server, the DICOM node and the CLI append to one trail at once."""
    import multiprocessing

    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), f"w{i}")) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    log = AuditLog(path)
    assert len(log.entries()) == 200
    assert log.verify() == []


def test_long_trail_appends_read_only_its_tail(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", fsync=False)
    big = {"pad": "x" * 100_000}  # a line longer than the tail window
    log.append("big", big, actor="t")
    log.append("after", {}, actor="t")
    assert log.verify() == []
