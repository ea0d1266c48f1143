"""Archive safety and discovery: no traversal, no links, no bombs, stable order."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

from mida.config import Settings
from mida.errors import QuarantineReason
from mida.ingest.sources import Item, Refused, archive_kind, count_inputs, discover


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path / "n", **kw)  # type: ignore[arg-type]


def test_folders_are_walked_recursively_in_order(tmp_path: Path) -> None:
    (tmp_path / "in" / "b").mkdir(parents=True)
    (tmp_path / "in" / "a.dcm").write_bytes(b"1")
    (tmp_path / "in" / "b" / "c.dcm").write_bytes(b"2")
    items = list(discover([tmp_path / "in"], _settings(tmp_path)))
    assert [Path(i.path).name for i in items] == ["a.dcm", "c.dcm"]
    assert all(isinstance(i, Item) and i.kind == "file" for i in items)
    assert count_inputs([tmp_path / "in"]) == 2


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.dcm").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "link")
    assert list(discover([tmp_path / "in"], _settings(tmp_path))) == []


def test_zip_members_and_traversal(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok/one.dcm", b"one")
        zf.writestr("../evil.dcm", b"evil")
        zf.writestr("/abs.dcm", b"abs")
    assert archive_kind(str(z)) == "zip"
    out = list(discover([z], _settings(tmp_path)))
    ok = [i for i in out if isinstance(i, Item)]
    bad = [i for i in out if isinstance(i, Refused)]
    assert [i.member for i in ok] == ["ok/one.dcm"]
    assert len(bad) == 2 and all(b.reason == QuarantineReason.UNSAFE_ARCHIVE for b in bad)


def test_zip_bomb_is_refused_before_reading(tmp_path: Path) -> None:
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * (80 * 1024 * 1024))
    assert z.stat().st_size < 1024 * 1024
    out = list(discover([z], _settings(tmp_path)))
    assert len(out) == 1 and isinstance(out[0], Refused)
    assert out[0].reason == QuarantineReason.ARCHIVE_LIMIT
    assert "ratio" in out[0].message


def test_zip_member_limits(tmp_path: Path) -> None:
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(5):
            zf.writestr(f"{i}.dcm", b"x")
    out = list(discover([z], _settings(tmp_path, archive_max_members=3)))
    assert len(out) == 1 and isinstance(out[0], Refused)
    assert "MIDA_ARCHIVE_MAX_MEMBERS" in out[0].message


def test_tar_gz_links_and_traversal_are_refused(tmp_path: Path) -> None:
    t = tmp_path / "a.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        for name, data in [("s/1.dcm", b"abc"), ("../up.dcm", b"up")]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("s/link.dcm")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    assert archive_kind(str(t)) == "tar"
    out = list(discover([t], _settings(tmp_path)))
    ok = [i for i in out if isinstance(i, Item)]
    assert [(i.member, i.data) for i in ok] == [("s/1.dcm", b"abc")]
    refused = [i for i in out if isinstance(i, Refused)]
    assert {r.reason for r in refused} == {QuarantineReason.UNSAFE_ARCHIVE}
    assert len(refused) == 2


def test_tar_expansion_limit(tmp_path: Path) -> None:
    t = tmp_path / "big.tar"
    with tarfile.open(t, "w") as tf:
        for i in range(3):
            ti = tarfile.TarInfo(f"{i}.dcm")
            ti.size = 1000
            tf.addfile(ti, io.BytesIO(b"x" * 1000))
    out = list(discover([t], _settings(tmp_path, archive_max_total_bytes=1500)))
    assert isinstance(out[-1], Refused) and out[-1].reason == QuarantineReason.ARCHIVE_LIMIT
    assert sum(isinstance(i, Item) for i in out) == 1


def test_truncated_tar_is_reported(tmp_path: Path) -> None:
    t = tmp_path / "cut.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        ti = tarfile.TarInfo("a.dcm")
        ti.size = 200_000
        tf.addfile(ti, io.BytesIO(os.urandom(200_000)))
    t.write_bytes(t.read_bytes()[:5000])
    out = list(discover([t], _settings(tmp_path)))
    assert isinstance(out[-1], Refused) and out[-1].reason == QuarantineReason.TRUNCATED
