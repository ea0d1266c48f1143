"""De-identification benchmark: mida against deid, dicognito and Orthanc, one corpus, one run.

The corpus is the public PHI test files in ``../shared/data/phi`` (``deid_data``
and ``deid_examples``; skipped with a message when absent) plus a synthetic
archive from :func:`mida.dicom.sample.generate` (Taiwanese PHI in names, IDs,
free text, private tags and nested sequences; ``--scale`` sizes it). Images
whose pixels may carry burned-in text (US, SC, DX, XA, BurnedInAnnotation
YES) are left out and counted: mida OCRs and blanks every frame of them
(seconds per frame, :mod:`mida.deid.pixels`) while no peer looks at pixels at
all, so timing them would compare unequal work.

Every tool de-identifies the same input files into its own output folder:

``mida``
    ``mida deid run CORPUS --out DIR --key-file K --workers W`` when the
    command exists, else :func:`mida.ingest.deid_run.run_deid` (the engine of
    that command, ``workers=W``) in a subprocess (row ``mida-api``).
``deid``
    pydicom/deid with its default recipe (``get_identifiers`` then
    ``replace_identifiers``), a pool of W processes, one file per task.
``dicognito``
    ``Anonymizer(seed=...).anonymize(ds)``, a pool of W processes.
``orthanc``
    a fresh Orthanc 1.10 on loopback; the files are uploaded first with
    ``POST /instances`` (untimed), then ``POST /instances/{id}/anonymize`` with
    body ``{}`` (Orthanc's default: the basic profile of the newest table it
    knows, 2021b in 1.10) from N concurrent keep-alive clients, each answer
    (the anonymized file) written to disk: timed.

For each tool the bench reports instances/s (wall clock of the timed part),
the leaks that mida's verifier (:func:`mida.deid.verify.find_leaks`, the
search behind ``mida deid verify``) finds in its outputs against the
identifiers of all inputs, and the share of research attributes retained
(:data:`_deid_peers.RESEARCH_ATTRIBUTES` and the vendor private attributes of
:data:`_deid_peers.RESEARCH_PRIVATE`, counted where the input had them).

Run ``python bench/deid.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import _deid_peers
import _mida
import _orthanc
from _result import die_with_parent, log_tail, machine_info

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PHI_DIR = REPO.parent / "shared" / "data" / "phi"
PHI_SETS = ("deid_data", "deid_examples")
ALL_TOOLS = ("mida", "deid", "dicognito", "orthanc")
#: Synthetic patients at --scale 1 (each: CT series of 24 slices, 2nd CT study for even
#: patients, MR, CR; US every 3rd patient, left out as burned-in).
PATIENTS_AT_SCALE_1 = 20


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    scale: float
    tools: tuple[str, ...]
    workers: int
    clients: int
    timeout_s: float | None
    results_dir: Path
    output: Path | None
    tmp_dir: Path | None
    mida: str
    orthanc: str
    quiet: bool
    verify_max: int


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the module docstring's layout."""


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line into :class:`Options`."""
    parser = argparse.ArgumentParser(
        prog="bench/deid.py", description=__doc__, formatter_class=_HelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0,
        help=f"synthetic corpus size: {PATIENTS_AT_SCALE_1} patients at 1.0 (0.1 = quick run)",
    )  # fmt: skip
    parser.add_argument(
        "--tools", default=",".join(ALL_TOOLS), help=f"comma-separated subset of {ALL_TOOLS}"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes per Python tool")
    parser.add_argument("--clients", type=int, default=4, help="concurrent Orthanc clients")
    parser.add_argument(
        "--timeout", type=float, default=None,
        help="seconds allowed per tool; None means 120 s + 1 s per instance",
    )  # fmt: skip
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: dated)")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="parent of the work dir")
    parser.add_argument("--mida", default=_mida.default_binary(), help="mida executable")
    parser.add_argument("--orthanc", default="Orthanc", help="Orthanc executable")
    parser.add_argument("--quiet", action="store_true", help="no progress or table; JSON only")
    parser.add_argument(
        "--verify-max", type=int, default=60,
        help="outputs per tool searched for leaks (an even sample; the verifier takes "
        "seconds per file here); 0 = all",
    )  # fmt: skip
    ns = parser.parse_args(argv)
    tools = tuple(t.strip() for t in ns.tools.split(",") if t.strip())
    unknown = sorted(set(tools) - set(ALL_TOOLS))
    if unknown:
        parser.error(f"unknown tool(s) {unknown}; choose from {','.join(ALL_TOOLS)}")
    if not 0 < ns.scale <= 10:
        parser.error("--scale must be in (0, 10]")
    return Options(
        scale=ns.scale, tools=tools, workers=ns.workers, clients=ns.clients,
        timeout_s=ns.timeout, results_dir=ns.results_dir, output=ns.output,
        tmp_dir=ns.tmp_dir, mida=ns.mida, orthanc=ns.orthanc, quiet=ns.quiet,
        verify_max=ns.verify_max,
    )  # fmt: skip


# -- corpus --------------------------------------------------------------------
@dataclass
class Corpus:
    """The input files (all under ``root``) and what was left out."""

    root: Path
    files: list[Path]
    sources: dict[str, int]
    burned_in_excluded: dict[str, int]
    notes: list[str]

    @property
    def total_bytes(self) -> int:
        """Sum of the input file sizes."""
        return sum(p.stat().st_size for p in self.files)


def _is_dicom(data: bytes) -> bool:
    return data[128:132] == b"DICM"


def build_corpus(root: Path, scale: float, log: Any) -> Corpus:
    """Copy the PHI test files and generate the synthetic set into ``root``."""
    from mida.deid.verify import pixel_risk
    from mida.dicom.sample import generate

    notes: list[str] = []
    sources: dict[str, int] = {}
    excluded: dict[str, int] = {}
    staged: list[tuple[str, Path, Path]] = []  # (source, file, destination)
    for name in PHI_SETS:
        src = PHI_DIR / name
        if not src.is_dir():
            notes.append(f"{src} is absent: that corpus is skipped")
            log(notes[-1])
            continue
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            staged.append((name, path, root / name / path.relative_to(src)))
    patients = max(1, round(PATIENTS_AT_SCALE_1 * scale))
    synth = root.parent / "synthetic-gen"
    log(f"generating the synthetic set: {patients} patients")
    manifest = generate(
        synth, patients, seed=7, ct_slices=24, ct_size=256, mr_slices=8, mr_size=256
    )
    (synth / "phi_manifest.json").unlink(missing_ok=True)  # the planted PHI is not an input
    for rel in manifest.files:
        staged.append(("synthetic", synth / rel, root / "synthetic" / rel))
    files: list[Path] = []
    for source, path, dest in staged:
        data = path.read_bytes()
        if not _is_dicom(data):
            continue
        ds = _deid_peers._read(data)
        if pixel_risk(ds):
            key = f"{source}:{ds.get('Modality', '?')}"
            excluded[key] = excluded.get(key, 0) + 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        files.append(dest)
        sources[source] = sources.get(source, 0) + 1
    shutil.rmtree(synth, ignore_errors=True)
    return Corpus(root, files, sources, excluded, notes)


# -- runners -------------------------------------------------------------------
@dataclass
class Run:
    """What one tool did: timing, outputs, and the measures."""

    tool: str
    status: str
    instances: int
    seconds: float | None = None
    written: int = 0
    refused: int = 0
    note: str = ""
    config: dict[str, Any] | None = None
    leaks: dict[str, Any] | None = None
    retention: dict[str, Any] | None = None

    @property
    def inst_per_s(self) -> float | None:
        """Input instances per second of the timed part."""
        if not self.seconds:
            return None
        return self.instances / self.seconds

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        rate = self.inst_per_s
        return {
            "tool": self.tool, "status": self.status, "instances": self.instances,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "inst_per_s": None if rate is None else round(rate, 1),
            "written": self.written, "refused": self.refused, "note": self.note,
            "config": self.config or {}, "leaks": self.leaks, "retention": self.retention,
        }  # fmt: skip


def mida_cli_available(binary: str) -> bool:
    """Whether ``mida deid run --help`` works (the command is being built)."""
    try:
        proc = subprocess.run(
            [binary, "deid", "run", "--help"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class Bench:
    """Runs the selected tools over one corpus inside ``workroot``."""

    def __init__(self, opts: Options, workroot: Path) -> None:
        self.opts = opts
        self.workroot = workroot
        self.versions: dict[str, str] = {}

    def log(self, message: str) -> None:
        """Progress line on stderr."""
        if not self.opts.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def timeout_for(self, corpus: Corpus) -> float:
        """Per-tool time limit: generous, but bounded."""
        if self.opts.timeout_s is not None:
            return self.opts.timeout_s
        return 120.0 + 1.0 * len(corpus.files)

    def _harness(self, tool: str, arg: Path, out: Path, timeout_s: float) -> dict[str, Any]:
        cmd = [
            sys.executable,
            str(BENCH_DIR / "_deid_peers.py"),
            tool,
            str(arg),
            str(out),
            "--workers",
            str(self.opts.workers),
        ]
        log_path = out.parent / f"{tool}.log"
        with log_path.open("wb") as log:
            proc = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout_s,
                check=False,
                preexec_fn=die_with_parent,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} harness exited {proc.returncode}:\n{log_tail(log_path)}")
        return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))

    def run_python_tool(self, tool: str, corpus: Corpus, out: Path) -> Run:
        """deid or dicognito in the timed harness."""
        listing = out.parent / f"{tool}-inputs.txt"
        listing.write_text("".join(f"{p}\n" for p in corpus.files))
        config = {
            "parallelism": f"fork pool of {self.opts.workers} processes, one file/task",
            "timed": "de-identify + write every file (imports and corpus untimed)",
        }
        if tool == "deid":
            config["recipe"] = "deid's default (deid.dicom), get_identifiers + replace_identifiers"
        else:
            config["call"] = "Anonymizer(seed='mida-bench').anonymize(ds); ds.save_as(...)"
        try:
            res = self._harness(tool, listing, out, self.timeout_for(corpus))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            return Run(tool, "error", len(corpus.files), note=str(exc)[-600:], config=config)
        note = "; ".join(res.get("errors", [])[:3])
        return Run(
            tool,
            "ok" if not res.get("error_count") else "partial",
            len(corpus.files),
            res["seconds"],
            res["written"],
            res.get("error_count", 0),
            note,
            config,
        )

    def run_mida(self, corpus: Corpus, out: Path) -> Run:
        """``mida deid run`` when it exists, else its engine through the harness."""
        key_file = out.parent / "mida.key"
        key_file.write_text(os.urandom(32).hex())  # `mida deid run` reads hex text
        if mida_cli_available(self.opts.mida):
            cmd = [
                self.opts.mida,
                "deid",
                "run",
                str(corpus.root),
                "--out",
                str(out),
                "--key-file",
                str(key_file),
                "--workers",
                str(self.opts.workers),
            ]
            config = {
                "command": " ".join(cmd[1:3]) + " CORPUS --out DIR --key-file K "
                f"--workers {self.opts.workers}",
                "profile": "default",
                "timed": "the whole command (interpreter start-up included)",
            }
            log_path = out.parent / "mida.log"
            start = time.perf_counter()
            try:
                with log_path.open("wb") as log:
                    proc = subprocess.run(
                        cmd,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=self.timeout_for(corpus),
                        check=False,
                        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
                        preexec_fn=die_with_parent,
                    )
            except subprocess.TimeoutExpired as exc:
                return Run("mida", "error", len(corpus.files), note=str(exc), config=config)
            seconds = time.perf_counter() - start
            written = sum(1 for _ in out.rglob("*.dcm"))
            refused = len(corpus.files) - written
            # mida deid run exits non-zero when it refused inputs; that is reported, not fatal.
            status = "ok" if written else "error"
            note = "" if proc.returncode == 0 else f"exit {proc.returncode}: "
            note += log_tail(log_path, 3) if proc.returncode else ""
            return Run("mida", status, len(corpus.files), seconds, written, refused, note, config)
        config = {
            "call": "mida.ingest.deid_run.run_deid(CORPUS, DIR, key, 'default', "
            f"workers={self.opts.workers})",
            "profile": "default",
            "timed": "run_deid (imports untimed)",
            "why": "`mida deid run` is not in the CLI yet; this is its engine",
        }
        try:
            res = self._harness("mida-api", corpus.root, out, self.timeout_for(corpus))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            return Run("mida-api", "error", len(corpus.files), note=str(exc)[-600:], config=config)
        note = "" if not res["refused"] else f"refused: {res.get('refused_reasons')}"
        return Run(
            "mida-api",
            "ok",
            len(corpus.files),
            res["seconds"],
            res["written"],
            res["refused"],
            note,
            config,
        )

    def run_orthanc(self, corpus: Corpus, out: Path) -> Run:
        """Fresh Orthanc: untimed upload, timed concurrent ``/anonymize``."""
        server = _orthanc.OrthancServer(out.parent / "orthanc-home", self.opts.orthanc)
        body = b"{}"
        config = {
            "request": "POST /instances/{id}/anonymize, body {} (Orthanc's default profile)",
            "profile": "PS3.15 basic profile, table 2021b (the newest Orthanc 1.10 knows)",
            "clients": f"{self.opts.clients} threads, keep-alive, TCP_NODELAY, "
                       "Accept-Encoding: identity",
            "timed": "anonymize calls + writing each answer (the file) to disk; "
                     "upload via POST /instances untimed",
            "orthanc": {k: server.config[k] for k in ("StorageCompression", "KeepAlive",
                                                       "TcpNoDelay", "SaveJobs")},
        }  # fmt: skip
        timeout_s = self.timeout_for(corpus)
        try:
            with server:
                self.versions["orthanc"] = server.version()
                errors = _orthanc.feed_rest(
                    server.http_port, corpus.files, self.opts.clients, timeout_s
                )
                if errors:
                    raise _orthanc.OrthancError(f"upload failed: {errors[:3]}")
                ids = _deid_peers.orthanc_instance_ids(server.http_port)
                seconds, errs = _deid_peers.orthanc_anonymize(
                    server.http_port, ids, out, self.opts.clients, timeout_s, body
                )
        except (_orthanc.OrthancError, OSError, RuntimeError) as exc:
            return Run("orthanc", "error", len(corpus.files), note=str(exc)[-600:], config=config)
        written = len(ids) - len(errs)
        note = f"{len(ids)} instances held after upload; {errs[:3]}" if errs else ""
        return Run(
            "orthanc",
            "ok" if not errs else "partial",
            len(corpus.files),
            seconds,
            written,
            len(errs),
            note,
            config,
        )

    def run(self, corpus: Corpus) -> list[Run]:
        """Every selected tool, then the measures on each output."""
        index = _deid_peers.InputIndex(corpus.files)
        runs: list[Run] = []
        for tool in ALL_TOOLS:
            if tool not in self.opts.tools:
                continue
            out = self.workroot / "out" / tool / "files"
            out.mkdir(parents=True)
            os.sync()
            time.sleep(0.5)
            self.log(f"{tool} ...")
            if tool == "mida":
                run = self.run_mida(corpus, out)
            elif tool == "orthanc":
                run = self.run_orthanc(corpus, out)
            else:
                run = self.run_python_tool(tool, corpus, out)
            outputs = sorted(p for p in out.rglob("*") if p.is_file())
            if outputs:
                cap = self.opts.verify_max or len(outputs)
                step = max(1, -(-len(outputs) // cap))
                sample = outputs[::step]
                run.leaks = _deid_peers.leak_scan(index, sample)
                run.leaks["files_checked"] = len(sample)
                run.retention = _deid_peers.retention(index, outputs)
            rate = run.inst_per_s
            self.log(
                f"{run.tool}: {run.status} "
                f"{'' if rate is None else f'{rate:.1f} inst/s'} {run.note[:200]}"
            )
            runs.append(run)
            shutil.rmtree(out.parent, ignore_errors=True)
        return runs


# -- report --------------------------------------------------------------------
def checks(runs: list[Run]) -> dict[str, str]:
    """The issue's targets for mida: zero leaks, full retention, throughput >= each peer."""
    mida = next((r for r in runs if r.tool.startswith("mida")), None)
    if mida is None or mida.status != "ok":
        return {"mida": "not measured"}
    out: dict[str, str] = {}
    leaks = (mida.leaks or {}).get("leaks")
    out["zero leaks"] = "pass" if leaks == 0 else "fail"
    ret = mida.retention or {}
    full = ret.get("attributes_present") == ret.get("attributes_retained")
    out["full retention"] = "pass" if full else "fail"
    for peer in runs:
        if peer is mida or peer.inst_per_s is None:
            continue
        ok = (mida.inst_per_s or 0) >= peer.inst_per_s
        out[f"throughput >= {peer.tool}"] = "pass" if ok else "fail"
    return out


def table(runs: list[Run]) -> str:
    """Markdown table of the rows."""
    lines = [
        "| tool | inst/s | written / refused | leaks (files with leaks / checked) "
        "| research attrs retained |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        rate = "—" if r.inst_per_s is None else f"{r.inst_per_s:.1f}"
        leaks = (
            "—"
            if r.leaks is None
            else (
                f"{r.leaks['leaks']} ({r.leaks['files_with_leaks']} / {r.leaks['files_checked']})"
            )
        )
        share = (r.retention or {}).get("retained_share")
        kept = "—" if share is None else f"{100 * share:.1f} %"
        lines.append(f"| {r.tool} | {rate} | {r.written} / {r.refused} | {leaks} | {kept} |")
    return "\n".join(lines)




def versions(extra: dict[str, str]) -> dict[str, str]:
    """Versions of the measured tools."""
    out: dict[str, str] = {}
    for dist in ("mida", "deid", "dicognito", "pydicom"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return {**out, **extra}


def main(argv: list[str] | None = None) -> int:
    """Build the corpus, run the tools, print the table and write the JSON."""
    opts = parse_args(argv)
    machine = machine_info()
    workroot = Path(tempfile.mkdtemp(prefix="mida-deid-bench-", dir=opts.tmp_dir))
    bench = Bench(opts, workroot)
    try:
        corpus = build_corpus(workroot / "corpus", opts.scale, bench.log)
        bench.log(
            f"corpus: {len(corpus.files)} instances {corpus.sources}; burned-in left "
            f"out: {corpus.burned_in_excluded}"
        )
        runs = bench.run(corpus)
        result = {
            "benchmark": "deid",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "scale": opts.scale,
            "machine": machine,
            "versions": versions(bench.versions),
            "corpus": {"instances": len(corpus.files), "total_bytes": corpus.total_bytes,
                       "sources": corpus.sources,
                       "burned_in_excluded": corpus.burned_in_excluded, "notes": corpus.notes},
            "research_attributes": [*_deid_peers.RESEARCH_ATTRIBUTES,
                                    *(f"({g:04X},{c},{e:02X})"
                                      for c, g, e in _deid_peers.RESEARCH_PRIVATE)],
            "verifier": "mida.deid.verify.find_leaks against the union of all inputs' "
                        "identifiers (as `mida deid verify`)",
            "rows": [r.to_json() for r in runs],
            "checks": checks(runs),
        }  # fmt: skip
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    out = opts.output
    if out is None:
        suffix = "" if opts.scale == 1.0 else f"-scale{opts.scale:g}"
        out = opts.results_dir / f"deid-{dt.date.today().isoformat()}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if not opts.quiet:
        print(table(runs))
        print()
        for r in runs:
            lk, rt = r.leaks or {}, r.retention or {}
            print(f"{r.tool}: leaks by kind {lk.get('by_kind')}, places {lk.get('top_places')}")
            print(f"{' ' * len(r.tool)}  dropped {rt.get('dropped')}, changed {rt.get('changed')}")
        print(f"\nchecks: {result['checks']}\nresult: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
