"""Peak memory stays under 1 GiB while ingesting 10,000 instances."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from pydicom.uid import generate_uid

from tests.factories import make_dataset

GIB = 1024**3


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


@pytest.mark.slow
def test_peak_memory_under_one_gib_for_10000_instances(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    ds = make_dataset()
    for series in range(100):
        d = corpus / f"{series:03d}"
        d.mkdir(parents=True)
        ds.SeriesInstanceUID = generate_uid()
        if series % 10 == 0:
            ds.StudyInstanceUID = generate_uid()
            ds.PatientID = f"A1{series:08d}"
        for i in range(100):
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            ds.save_as(d / f"{i:03d}.dcm", enforce_file_format=True)
    env = {**os.environ, "MIDA_HOME": str(tmp_path / "node"), "MIDA_WORKERS": "2"}
    mida = [sys.executable, "-m", "mida.cli.main"]
    subprocess.run([*mida, "init", "--institution", "M", "--name", "M"], env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen([*mida, "ingest", str(corpus), "--collection", "c", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watcher = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(watcher))
        time.sleep(0.05)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.returncode == 0, out
    assert '"stored": 10000' in out
    assert 0 < peak < GIB, f"peak resident memory {peak / 2**20:.0f} MiB"
