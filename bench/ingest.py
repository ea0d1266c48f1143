"""Ingest benchmark: mida against Orthanc, same run, same generated corpora.

For each corpus (``ct``: 2,000 512x512 CT slices; ``small``: 10,000 64x64 MR
images) the bench measures, in this order:

``sha256-limit``
    read + SHA-256 of every file, one process: the practical limit.
``orthanc-storescu``
    a fresh Orthanc fed by DCMTK ``storescu`` over one association.
``orthanc-rest-N``
    a fresh Orthanc fed by ``POST /instances`` from N concurrent clients.
``mida``
    ``mida init`` then the timed ``mida ingest --workers W`` (de-identifying).

Each row reports wall time, instances/s, MB/s (10^6 bytes of DICOM files),
peak RSS (MiB) of the server, or of mida's whole process tree, and the
ratio to the faster Orthanc path. A row whose peer does not hold every
instance afterwards is marked ``invalid`` and the bench exits non-zero.

Run ``python bench/ingest.py --help`` for the options; ``make bench`` runs
the full benchmark.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import _corpus
import _mida
import _orthanc
from _procmon import PeakRssSampler
from _result import MethodResult, machine_info

BENCH_DIR = Path(__file__).resolve().parent
THROUGHPUT_TARGET = 1.5  # mida inst/s over the faster Orthanc path
MEMORY_TARGET_BYTES = 1024**3  # mida peak tree RSS on the small corpus
ORTHANC_METHODS = ("orthanc-storescu", "orthanc-rest")
ALL_METHODS = ("sha256", *ORTHANC_METHODS, "mida")


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    corpora: tuple[str, ...]
    scale: float
    methods: tuple[str, ...]
    workers: int
    rest_clients: int
    cache_dir: Path | None
    results_dir: Path
    output: Path | None
    tmp_dir: Path | None
    timeout_s: float | None
    mida: str
    orthanc: str
    storescu: str
    quiet: bool
    strict: bool


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the module docstring's layout."""


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line into :class:`Options`."""
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--corpus", choices=["ct", "small", "all"], default="all")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the full corpora (0.1 = quick run)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help=f"comma-separated subset of {','.join(ALL_METHODS)}",
    )
    parser.add_argument("--workers", type=int, default=2, help="mida ingest --workers")
    parser.add_argument("--rest-clients", type=int, default=4, help="concurrent REST clients")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=BENCH_DIR / ".cache",
        help="where generated corpora are kept between runs",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="generate corpora in the temp dir, then delete"
    )
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON result path; None means --results-dir/ingest-<date>[-suffix].json",
    )
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the temporary work directory; None means the system temp dir",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed per method and corpus; None means 300 s + 0.25 s per instance",
    )
    parser.add_argument("--mida", default=_mida.default_binary(), help="mida executable")
    parser.add_argument("--orthanc", default="Orthanc", help="Orthanc executable")
    parser.add_argument("--storescu", default="storescu", help="DCMTK storescu executable")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress or table; only write the JSON file"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless every target is met (a pending mida counts as not met)",
    )
    ns = parser.parse_args(argv)
    methods = tuple(m.strip() for m in ns.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {','.join(ALL_METHODS)}")
    if not 0 < ns.scale <= 10:
        parser.error("--scale must be in (0, 10]")
    return Options(
        corpora=("ct", "small") if ns.corpus == "all" else (ns.corpus,),
        scale=ns.scale,
        methods=methods,
        workers=ns.workers,
        rest_clients=ns.rest_clients,
        cache_dir=None if ns.no_cache else ns.cache_dir,
        results_dir=ns.results_dir,
        output=ns.output,
        tmp_dir=ns.tmp_dir,
        timeout_s=ns.timeout,
        mida=ns.mida,
        orthanc=ns.orthanc,
        storescu=ns.storescu,
        quiet=ns.quiet,
        strict=ns.strict,
    )


class Bench:
    """Runs the selected methods over the selected corpora inside ``workroot``."""

    def __init__(self, opts: Options, workroot: Path) -> None:
        self.opts = opts
        self.workroot = workroot
        self.versions: dict[str, str] = {}

    def log(self, message: str) -> None:
        """Progress line on stderr (stdout carries only the table)."""
        if not self.opts.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def timeout_for(self, corpus: _corpus.Corpus) -> float:
        """Per-method time limit: generous, but the bench always ends."""
        if self.opts.timeout_s is not None:
            return self.opts.timeout_s
        return 300.0 + 0.25 * len(corpus.files)

    def run_corpus(self, name: str) -> dict[str, Any]:
        """Generate (or reuse) one corpus and run every selected method on it."""
        spec = _corpus.SPECS[name]
        cache = self.opts.cache_dir or self.workroot / "corpora"
        self.log(f"corpus {name}: preparing {spec.size_at(self.opts.scale)} instances")
        corpus = _corpus.ensure_corpus(spec, self.opts.scale, cache)
        _warm_page_cache(corpus)
        runners: dict[str, Callable[[_corpus.Corpus], MethodResult]] = {
            "sha256": sha256_limit,
            "orthanc-storescu": self.orthanc_storescu,
            "orthanc-rest": self.orthanc_rest,
            "mida": self.mida,
        }
        rows = []
        for method in ALL_METHODS:
            if method in self.opts.methods:
                _settle()
                self.log(f"corpus {name}: {method} ...")
                row = runners[method](corpus)
                self.log(
                    f"corpus {name}: {method} {row.status} {_rate(row)} {_last_line(row.note)}"
                )
                rows.append(row)
        return corpus_report(corpus, rows)

    def _run_orthanc(self, method: str, corpus: _corpus.Corpus, rest: bool) -> MethodResult:
        """Fresh Orthanc, feed it one way, verify ``CountInstances``."""
        expected = len(corpus.files)
        workdir = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=self.workroot))
        server = _orthanc.OrthancServer(workdir / "orthanc", self.opts.orthanc)
        config = _orthanc_row_config(server, self.opts, rest)
        try:
            with server:
                self.versions["orthanc"] = server.version()
                with PeakRssSampler(server.pid) as rss:
                    start = time.perf_counter()
                    errors = self._feed(server, corpus, rest, workdir)
                    seconds = time.perf_counter() - start
                stored = server.count_instances()
        except (_orthanc.OrthancError, OSError, TimeoutError) as exc:
            return MethodResult(method, "error", expected, note=str(exc), config=config)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        status = "ok" if stored == expected and not errors else "invalid"
        note = "" if status == "ok" else f"Orthanc holds {stored}/{expected}; {errors[:3]}"
        return MethodResult(
            method, status, expected, stored, seconds, corpus.total_bytes, rss.peak_bytes,
            note, config,
        )  # fmt: skip

    def _feed(
        self, server: _orthanc.OrthancServer, corpus: _corpus.Corpus, rest: bool, workdir: Path
    ) -> list[str]:
        timeout_s = self.timeout_for(corpus)
        if rest:
            return _orthanc.feed_rest(
                server.http_port, corpus.files, self.opts.rest_clients, timeout_s
            )
        try:
            _orthanc.feed_storescu(
                self.opts.storescu, server.dicom_port, corpus.dicom_dir,
                workdir / "storescu.log", timeout_s,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return [f"storescu did not finish within {timeout_s:.0f} s"]
        return []

    def orthanc_storescu(self, corpus: _corpus.Corpus) -> MethodResult:
        """Orthanc fed by one storescu association."""
        return self._run_orthanc("orthanc-storescu", corpus, rest=False)

    def orthanc_rest(self, corpus: _corpus.Corpus) -> MethodResult:
        """Orthanc fed by concurrent ``POST /instances``."""
        return self._run_orthanc(f"orthanc-rest-{self.opts.rest_clients}", corpus, rest=True)

    def mida(self, corpus: _corpus.Corpus) -> MethodResult:
        """mida's CLI in a fresh ``MIDA_HOME``."""
        workdir = Path(tempfile.mkdtemp(prefix="mida-", dir=self.workroot))
        return _mida.run_mida(
            corpus.dicom_dir, len(corpus.files), corpus.total_bytes, workdir,
            self.opts.mida, self.opts.workers, self.timeout_for(corpus),
        )  # fmt: skip


def _orthanc_row_config(
    server: _orthanc.OrthancServer, opts: Options, rest: bool
) -> dict[str, Any]:
    """What the report states about how this Orthanc was configured and fed."""
    keys = (
        "StorageCompression", "KeepAlive", "TcpNoDelay", "SaveJobs", "StorageAccessOnFind",
        "DicomAlwaysAllowStore", "DicomCheckCalledAet", "RemoteAccessAllowed",
        "AuthenticationEnabled", "MaximumPduLength", "Plugins",
    )  # fmt: skip
    config: dict[str, Any] = {k: server.config[k] for k in keys}
    config["index"] = "SQLite (built-in) in the temp dir"
    config["env"] = {"TCP_NODELAY": "1"}
    if rest:
        config["feeder"] = (
            f"{opts.rest_clients} threads, http.client keep-alive, TCP_NODELAY, "
            "POST /instances, Accept-Encoding: identity"
        )
    else:
        cmd = _orthanc.storescu_command("storescu", 0, Path("DIR"))
        config["feeder"] = " ".join(cmd).replace(" 0 DIR", " PORT DIR") + " (TCP_NODELAY=1)"
    return config


def sha256_limit(corpus: _corpus.Corpus) -> MethodResult:
    """Read and hash every file in one process: the practical upper bound."""
    start = time.perf_counter()
    for path in corpus.files:
        hashlib.sha256(path.read_bytes()).digest()
    seconds = time.perf_counter() - start
    return MethodResult(
        "sha256-limit", "ok", len(corpus.files), len(corpus.files), seconds,
        corpus.total_bytes, None, "single process, files in page cache",
        {"hash": "hashlib.sha256 over Path.read_bytes()"},
    )  # fmt: skip


def _warm_page_cache(corpus: _corpus.Corpus) -> None:
    """Read every file once, untimed, so each method starts from the same cache."""
    for path in corpus.files:
        path.read_bytes()


def _settle() -> None:
    """Flush the previous method's dirty pages so it is not billed to the next."""
    os.sync()
    time.sleep(1.0)


def _last_line(text: str, width: int = 160) -> str:
    """The line of a (multi-line) note that names the error, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    picked = (errors or lines or [""])[-1]
    return picked[:width]


def _rate(row: MethodResult) -> str:
    return "" if row.inst_per_s is None else f"{row.inst_per_s:.1f} inst/s"


def corpus_report(corpus: _corpus.Corpus, rows: list[MethodResult]) -> dict[str, Any]:
    """Rows plus the ratio to the faster Orthanc path and the target checks."""
    orthanc = [
        r for r in rows if r.method.startswith("orthanc-") and r.status == "ok" and r.inst_per_s
    ]
    best = max(orthanc, key=lambda r: r.inst_per_s or 0.0, default=None)
    json_rows = []
    for row in rows:
        item = row.to_json()
        ratio = None
        if best is not None and best.inst_per_s and row.inst_per_s and row.status == "ok":
            ratio = round(row.inst_per_s / best.inst_per_s, 2)
        item["vs_faster_orthanc"] = ratio
        json_rows.append(item)
    mida = next((r for r in json_rows if r["method"] == "mida"), None)
    return {
        "corpus": corpus.name,
        "description": corpus.description,
        "instances": len(corpus.files),
        "total_bytes": corpus.total_bytes,
        "faster_orthanc_path": None if best is None else best.method,
        "rows": json_rows,
        "checks": _checks(corpus.name, mida),
    }


def _checks(corpus_name: str, mida: dict[str, Any] | None) -> dict[str, Any]:
    """``pass``/``fail``/``pending`` for the issue's targets on this corpus."""
    checks: dict[str, Any] = {}
    if mida is None:
        return checks
    ok = mida["status"] == "ok"
    ratio = mida["vs_faster_orthanc"]
    checks[f"throughput >= {THROUGHPUT_TARGET}x faster Orthanc"] = (
        "pending" if not ok or ratio is None else "pass" if ratio >= THROUGHPUT_TARGET else "fail"
    )
    if corpus_name == "small":
        peak = mida["peak_rss_mib"]
        limit_mib = MEMORY_TARGET_BYTES / 1024**2
        checks["mida peak RSS < 1 GiB"] = (
            "pending" if not ok or peak is None else "pass" if peak < limit_mib else "fail"
        )
    return checks




def software_versions(opts: Options) -> dict[str, str]:
    """Versions of everything measured."""
    versions = {
        "storescu": _orthanc.tool_version(opts.storescu),
        "orthanc_binary": _orthanc.tool_version(opts.orthanc),
    }
    for dist in ("mida", "pydicom", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def mida_revision() -> str:
    """``git`` HEAD of the checkout, ``+dirty`` if ``src/`` has uncommitted edits.

    The bench measures the installed (editable) working tree, so this says
    which code the mida row measured.
    """
    repo = BENCH_DIR.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def print_table(report: dict[str, Any]) -> None:
    """The human-readable table for one corpus."""
    mb = report["total_bytes"] / 1e6
    print(f"\n== {report['corpus']}: {report['description']} ({mb:.1f} MB) ==")
    header = (
        f"{'method':<18}{'status':<9}{'seconds':>9}{'inst/s':>10}{'MB/s':>9}"
        f"{'peak RSS MiB':>14}{'x faster Orthanc':>18}"
    )
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        print(
            f"{row['method']:<18}{row['status']:<9}{_fmt(row['seconds'], 2):>9}"
            f"{_fmt(row['inst_per_s'], 1):>10}{_fmt(row['mb_per_s'], 1):>9}"
            f"{_fmt(row['peak_rss_mib'], 0):>14}{_fmt(row['vs_faster_orthanc'], 2):>18}"
        )
        if row["note"] and (row["status"] != "ok" or row["method"] == "mida"):
            print(f"    note: {_last_line(row['note'])}")
    for check, verdict in report["checks"].items():
        print(f"  target {check}: {verdict.upper()}")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def result_path(opts: Options, today: dt.date) -> Path:
    """``bench/results/ingest-<date>.json``; partial runs get a suffix."""
    if opts.output is not None:
        return opts.output
    suffix = ""
    if opts.scale != 1.0:
        suffix += f"-scale{opts.scale:g}"
    if opts.corpora != ("ct", "small"):
        suffix += f"-{'-'.join(opts.corpora)}"
    return opts.results_dir / f"ingest-{today.isoformat()}{suffix}.json"


def exit_code(reports: list[dict[str, Any]], strict: bool) -> int:
    """2 if any row failed or was invalid; with ``strict``, 1 if a target was missed."""
    statuses = {row["status"] for rep in reports for row in rep["rows"]}
    if statuses & {"error", "invalid"}:
        return 2
    verdicts = {v for rep in reports for v in rep["checks"].values()}
    if strict and verdicts - {"pass"}:
        return 1
    return 0


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit code."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    revision = mida_revision()
    workroot = Path(tempfile.mkdtemp(prefix="mida-bench-", dir=opts.tmp_dir))
    try:
        bench = Bench(opts, workroot)
        reports = [bench.run_corpus(name) for name in opts.corpora]
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    document = {
        "benchmark": "ingest",
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scale": opts.scale,
        "mida_workers": opts.workers,
        "rest_clients": opts.rest_clients,
        "machine": {**machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": {**software_versions(opts), **bench.versions, "mida_git": revision},
        "corpora": reports,
    }
    out = result_path(opts, started.date())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    if not opts.quiet:
        for report in reports:
            print_table(report)
        print(f"\nresults: {out}")
    return exit_code(reports, opts.strict)


if __name__ == "__main__":
    sys.exit(main())
