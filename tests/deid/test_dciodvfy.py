"""De-identified files stay valid: no new dciodvfy errors, pixel data bit-identical.

dciodvfy (Debian dicom3tools) is the field's IOD validator. For each original
the test records the errors dciodvfy reports, de-identifies the file, and
asserts that the output's errors are a subset of the original's (errors are
compared by message with element values stripped, since values change).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from mida.deid import Deidentifier, get_profile
from mida.dicom.sample import generate
from mida.dicom.write import encode
from tests.conftest import SHARED_DATA

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy is not installed (.ci/run installs dicom3tools)"
)
# Values change under de-identification; element paths and messages do not.
_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|value[^-]*")


def _errors(path: Path) -> set[str]:
    assert DCIODVFY is not None
    out = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True,
                         errors="replace",
                         timeout=60, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return {_VALUE.sub("_", ln.strip()) for ln in lines if "Error" in ln}


def _check(src: Path, tmp: Path, profile: str) -> None:
    ds = pydicom.dcmread(src)
    original_pixels = ds.get("PixelData")
    Deidentifier(b"v" * 32, get_profile(profile)).apply(ds)
    out = tmp / f"{src.stem}-deid.dcm"
    out.write_bytes(encode(ds))
    new = _errors(out) - _errors(src)
    assert new == set(), f"{src.name}: new dciodvfy errors under {profile}: {sorted(new)}"
    again = pydicom.dcmread(io.BytesIO(out.read_bytes()))
    assert again.get("PixelData") == original_pixels, "pixel data must be bit-identical"


@pytest.mark.parametrize("profile", ["basic", "default"])
def test_sample_studies_stay_valid(tmp_path: Path, profile: str) -> None:
    manifest = generate(tmp_path / "in", 1, ct_slices=1, ct_size=64, mr_slices=1, mr_size=32)
    checked = 0
    for rel in manifest.files:
        p = tmp_path / "in" / rel
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == "US":
            continue  # burned-in text: pixels are redacted, not kept bit-identical
        _check(p, tmp_path, profile)
        checked += 1
    assert checked >= 3


@pytest.mark.shared_data
def test_shared_files_stay_valid(tmp_path: Path) -> None:
    root = SHARED_DATA / "phi" / "deid_data"
    if not root.exists():
        pytest.skip(f"{root} is absent: shared corpora exist only in CI and dev machines")
    files = sorted(root.rglob("*.dcm"))
    files = [f for f in files if "ultrasounds" not in f.parts]
    assert files
    for f in files:
        _check(f, tmp_path, "default")
