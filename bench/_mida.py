"""Drive mida's own CLI exactly as a user would, and measure the ingest.

Contract relied on (the CLI is the only interface used, so the benchmark
measures what users get):

* ``mida init --institution CODE --name NAME`` prepares ``$MIDA_HOME``;
* ``mida ingest PATH... --collection NAME --workers N`` exits 0 when done
  (de-identification is always on);
* ``mida stats --json`` prints JSON with at least ``{"instances": N}``.

Only the wall clock of ``mida ingest`` is timed. Peak memory is the summed
RSS of the ingest process and all its children (worker processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _procmon import PeakRssSampler
from _result import MethodResult, die_with_parent, log_tail


class MidaError(RuntimeError):
    """The mida CLI failed; the message carries the tail of its output."""


def default_binary() -> str:
    """``mida`` next to the running interpreter (the venv), else on ``PATH``."""
    candidate = Path(sys.executable).parent / "mida"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("mida") or str(candidate)


def availability(binary: str) -> str | None:
    """``None`` when ``mida ingest --help`` works, else why it does not."""
    try:
        proc = subprocess.run(
            [binary, "ingest", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {binary}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"`mida ingest --help` exited {proc.returncode}: {last[0]}"
    return None


class MidaRunner:
    """One fresh ``MIDA_HOME`` under ``workdir``; deleted by :meth:`cleanup`."""

    def __init__(self, workdir: Path, binary: str, workers: int) -> None:
        self.workdir = workdir
        self.binary = binary
        self.workers = workers
        self.home = workdir / "home"
        # Wide, colourless console output keeps the logs (and error notes) readable.
        self.env = {**os.environ, "MIDA_HOME": str(self.home), "COLUMNS": "200", "NO_COLOR": "1"}

    def _run(self, args: list[str], log_name: str, timeout_s: float) -> str:
        """Run a short CLI command to completion and return its stdout."""
        log_path = self.workdir / log_name
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        log_path.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise MidaError(f"mida {args[0]} exited {proc.returncode}:\n{log_tail(log_path)}")
        return proc.stdout

    def init(self) -> None:
        """``mida init --institution BENCH --name Bench``."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._run(["init", "--institution", "BENCH", "--name", "Bench"], "init.log", 120)

    def ingest(self, corpus_dir: Path, timeout_s: float) -> tuple[float, int, float | None]:
        """Time ``mida ingest``.

        Returns ``(seconds, peak tree RSS bytes, pipeline seconds)``: the wall
        time of the whole command, and the time mida's own summary reports for
        the pipeline (without process start-up, i.e. imports).
        """
        cmd = [
            self.binary, "ingest", str(corpus_dir),
            "--collection", "bench", "--workers", str(self.workers), "--json",
        ]  # fmt: skip
        log_path = self.workdir / "ingest.log"
        out_path = self.workdir / "ingest.json"
        with log_path.open("wb") as log, out_path.open("wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=self.env,
                preexec_fn=die_with_parent,
            )
            with PeakRssSampler(proc.pid) as rss:
                rc = _wait_or_kill(proc, timeout_s)
            seconds = time.perf_counter() - start
        if rc != 0:
            raise MidaError(f"mida ingest exited {rc}:\n{log_tail(log_path)}")
        try:
            pipeline: float | None = float(json.loads(out_path.read_text())["seconds"])
        except (ValueError, KeyError, TypeError):
            pipeline = None
        return seconds, rss.peak_bytes, pipeline

    def stats_instances(self) -> int:
        """``instances`` from ``mida stats --json``."""
        out = self._run(["stats", "--json"], "stats.log", 120)
        try:
            return int(json.loads(out)["instances"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MidaError(f"`mida stats --json` gave no instance count: {out[:200]!r}") from exc

    def cleanup(self) -> None:
        """Delete the work directory (catalog, stored files, logs)."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait for ``proc``; on timeout terminate, then kill, and report -9."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        raise MidaError(f"mida ingest did not finish within {timeout_s:.0f} s") from None


def run_mida(
    corpus_dir: Path,
    expected: int,
    total_bytes: int,
    workdir: Path,
    binary: str,
    workers: int,
    timeout_s: float,
) -> MethodResult:
    """Init a fresh home, time the ingest, then check ``mida stats``."""
    config = {"command": f"mida ingest DIR --collection bench --workers {workers}"}
    reason = availability(binary)
    if reason is not None:
        return MethodResult("mida", "pending", expected, note=reason, config=config)
    runner = MidaRunner(workdir, binary, workers)
    try:
        runner.init()
        seconds, peak, pipeline = runner.ingest(corpus_dir, timeout_s)
        stored = runner.stats_instances()
    except (MidaError, OSError, subprocess.TimeoutExpired) as exc:
        return MethodResult("mida", "error", expected, note=str(exc), config=config)
    finally:
        runner.cleanup()
    status = "ok" if stored == expected else "invalid"
    note = "" if status == "ok" else f"mida stats reports {stored} of {expected} instances"
    if status == "ok" and pipeline:
        note = (f"pipeline {expected / pipeline:.1f} inst/s in {pipeline:.2f} s; "
                f"{seconds - pipeline:.1f} s of process start-up and shut-down")
        config["pipeline_seconds"] = round(pipeline, 3)
    return MethodResult("mida", status, expected, stored, seconds, total_bytes, peak, note, config)
