"""DICOMweb benchmark: mida against Orthanc's DICOMweb plugin, same archive, same run.

The archive is the ``web`` corpus (100,000 MR images of 32x32 pixels, 1,000
patients x 1 study x 4 series x 25 images; ``--scale`` shrinks it), loaded
into a fresh mida (``mida ingest``, de-identifying) and a fresh Orthanc
(``POST /instances`` from 4 clients, the fastest path measured here). Then,
against each server over HTTP keep-alive on loopback:

``qido-ohif``
    OHIF's study list request, verbatim:
    ``/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060``.
``qido-date``
    ``/studies?StudyDate=<a quarter>&ModalitiesInStudy=MR&limit=101``.
``qido-patient``
    ``/studies?PatientID=<an ID the server holds>`` (each server's own IDs).
``wado-series-metadata``
    ``/studies/{s}/series/{x}/metadata`` for a fixed sample of series (each
    server's own UIDs), 25 instances each.

Each is repeated (``--repeat``, after 3 warm-up calls) and reported as median
and p95 milliseconds, with the ratio Orthanc / mida (above 1: mida faster).
Answers are checked: the study list must hold 101 studies and every series'
metadata 25 instances, else the row is ``invalid``.

Configurations, stated in the results: Orthanc 1.10 (Debian) with its
DICOMweb plugin (Debian ``orthanc-dicomweb``), the Orthanc Book's performance
settings (see ``_orthanc.py``) with ``LimitFindResults 0`` so QIDO's own
``limit`` applies, and the plugin's default ``"SeriesMetadata": "Full"``
(complete metadata, what a viewer needs; ``MainDicomTags`` would answer
faster but leave out pixel spacing, positions and orientation). mida runs
``mida serve`` as shipped: SQLite catalog, one uvicorn process, every request
authenticated with a Bearer token and written (fsynced) to the audit trail.

Run ``python bench/dicomweb.py --help`` for the options; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _corpus
import _mida
import _orthanc
from _result import die_with_parent, log_tail

BENCH_DIR = Path(__file__).resolve().parent
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
OHIF_QUERY = "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060"
TARGET = 1.0  # Orthanc time / mida time: above 1 means mida is faster


class Server:
    """One DICOMweb origin over a keep-alive connection."""

    def __init__(self, name: str, port: int, root: str, headers: dict[str, str]) -> None:
        self.name = name
        self.root = root.rstrip("/")
        self.headers = {"Accept-Encoding": "identity", **headers}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def get(self, path: str, accept: str = "application/dicom+json") -> tuple[int, bytes]:
        headers = {**self.headers, "Accept": accept}
        try:
            self.conn.request("GET", self.root + path, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # reconnect once (a server may close an idle keep-alive)
            self.conn.request("GET", self.root + path, headers=headers)
            resp = self.conn.getresponse()
        return resp.status, resp.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        if status == 204 or not body:
            return []
        if status != 200:
            raise RuntimeError(f"{self.name}: GET {path} -> {status}: {body[:200]!r}")
        return json.loads(body)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    for _ in range(3):
        last = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        last = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, last


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2),
            "n": len(ordered)}


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def measure(server: Server, repeat: int, n_series: int,
            per_series: int | None) -> dict[str, Any]:
    """The four measurements against one server."""
    out: dict[str, Any] = {}
    times, studies = timed(lambda: server.json(OHIF_QUERY), repeat)
    out["qido-ohif"] = {**summary(times), "valid": len(studies) == 101}
    dates = sorted(d for d in (_value(s, "00080020") for s in studies) if d)
    lo, hi = dates[0], dates[len(dates) // 4]
    q = f"/studies?StudyDate={lo}-{hi}&ModalitiesInStudy=MR&limit=101"
    times, found = timed(lambda: server.json(q), repeat)
    out["qido-date"] = {**summary(times), "valid": len(found) >= 1, "matches": len(found)}
    pid = _value(studies[len(studies) // 2], "00100020")
    times, found = timed(lambda: server.json(f"/studies?PatientID={pid}"), repeat)
    out["qido-patient"] = {**summary(times), "valid": len(found) == 1}
    # a fixed sample of series: every n-th study's first series
    sample: list[tuple[str, str]] = []
    step = max(1, len(studies) // n_series)
    for st in studies[::step][:n_series]:
        uid = _value(st, "0020000D")
        series = server.json(f"/studies/{uid}/series")
        sample.append((uid, _value(series[0], "0020000E")))
    times = []
    valid = True
    for _ in range(max(1, repeat // len(sample))):
        for st_uid, se_uid in sample:
            path = f"/studies/{st_uid}/series/{se_uid}/metadata"
            t0 = time.perf_counter()
            meta = server.json(path)
            times.append((time.perf_counter() - t0) * 1000)
            count_ok = len(meta) == per_series if per_series else len(meta) > 0
            valid = valid and count_ok and all("00280030" in m for m in meta)
    out["wado-series-metadata"] = {**summary(times), "valid": valid,
                                   "series_sampled": len(sample)}
    return out


def start_mida(workdir: Path, binary: str, corpus: _corpus.Corpus, workers: int,
               timeout_s: float) -> tuple[subprocess.Popen[bytes], Server, dict[str, Any]]:
    runner = _mida.MidaRunner(workdir, binary, workers)
    runner.init()
    seconds, _rss, _pipe = runner.ingest(corpus.dicom_dir, timeout_s)
    stored = runner.stats_instances()
    runner._run(["users", "add", "bench", "--role", "admin"], "users.log", 120)
    token = json.loads(runner._run(["tokens", "create", "--user", "bench", "--scope", "read",
                                    "--expires", "1d", "--json"], "token.log", 120))["token"]
    port = _orthanc.free_port()
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen([binary, "serve", "--port", str(port)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=runner.env,
                            preexec_fn=die_with_parent)
    server = Server("mida", port, "/dicomweb", {"Authorization": f"Bearer {token}"})
    for _ in range(600):
        try:
            if server.get("/studies?limit=1")[0] == 200:
                break
        except OSError:
            server.conn.close()
        if proc.poll() is not None:
            raise RuntimeError(f"mida serve exited:\n{log_tail(workdir / 'serve.log')}")
        time.sleep(0.1)
    return proc, server, {"ingest_seconds": round(seconds, 1), "stored": stored}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/dicomweb.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 100,000 images")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--series", type=int, default=25, help="series sampled for metadata")
    parser.add_argument("--workers", type=int, default=2, help="mida ingest --workers")
    parser.add_argument("--cache-dir", type=Path, default=BENCH_DIR / ".cache")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--tmp-dir", type=Path, default=None)
    parser.add_argument("--mida", default=_mida.default_binary())
    ns = parser.parse_args(argv)
    if not Path(PLUGIN).is_file():
        print(f"bench: the Orthanc DICOMweb plugin is missing ({PLUGIN}): "
              "apt-get install orthanc-dicomweb", file=sys.stderr)
        return 2
    corpus = _corpus.ensure_corpus(_corpus.WEB, ns.scale, ns.cache_dir)
    n = len(corpus.files)
    per_series = _corpus.WEB.instances_per_series if ns.scale >= 1 else None
    timeout_s = 600 + 0.5 * n
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "corpus": corpus.description,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "repeat": ns.repeat,
    }
    with tempfile.TemporaryDirectory(prefix="mida-bench-web-", dir=ns.tmp_dir) as tmp:
        tmp_path = Path(tmp)
        orthanc = _orthanc.OrthancServer(tmp_path / "orthanc")
        orthanc.config.update({
            "Plugins": [PLUGIN], "LimitFindResults": 0, "LimitFindInstances": 0,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "SeriesMetadata": "Full",
                         "StudiesMetadata": "Full"},
        })
        with orthanc:
            t0 = time.perf_counter()
            _orthanc.feed_rest(orthanc.http_port, corpus.files, 4, timeout_s)
            o_load = time.perf_counter() - t0
            o_count = orthanc.count_instances()
            o_server = Server("orthanc", orthanc.http_port, "/dicom-web", {})
            print(f"bench: Orthanc holds {o_count} instances ({o_load:.0f} s); measuring",
                  file=sys.stderr)
            o_res = measure(o_server, ns.repeat, ns.series, per_series)
            results["orthanc"] = {"version": orthanc.version(), "instances": o_count,
                                  "load_seconds": round(o_load, 1), "config": {
                                      k: orthanc.config[k] for k in
                                      ("DicomWeb", "StorageAccessOnFind", "LimitFindResults",
                                       "StorageCompression", "KeepAlive", "TcpNoDelay")},
                                  **o_res}
        proc, m_server, m_info = start_mida(tmp_path / "mida", ns.mida, corpus, ns.workers,
                                            timeout_s)
        try:
            print(f"bench: mida holds {m_info['stored']} instances "
                  f"({m_info['ingest_seconds']} s); measuring", file=sys.stderr)
            m_res = measure(m_server, ns.repeat, ns.series, per_series)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        results["mida"] = {**m_info, "config": "SQLite catalog, one uvicorn worker, Bearer "
                           "token, fsynced audit entry per request", **m_res}
    ratios = {}
    ok = True
    for key in ("qido-ohif", "qido-date", "qido-patient", "wado-series-metadata"):
        o, m = results["orthanc"][key], results["mida"][key]
        ratios[key] = {"median": round(o["median_ms"] / m["median_ms"], 2),
                       "p95": round(o["p95_ms"] / m["p95_ms"], 2)}
        ok = ok and o["valid"] and m["valid"]
    results["ratio_orthanc_over_mida"] = ratios
    results["valid"] = ok
    ns.results_dir.mkdir(parents=True, exist_ok=True)
    out = ns.results_dir / f"dicomweb-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'measurement':24} {'orthanc med/p95 ms':>20} {'mida med/p95 ms':>18} "
          f"{'ratio med':>9}")
    for key, r in ratios.items():
        o, m = results["orthanc"][key], results["mida"][key]
        print(f"{key:24} {o['median_ms']:>9.1f}/{o['p95_ms']:<9.1f} "
              f"{m['median_ms']:>8.1f}/{m['p95_ms']:<8.1f} {r['median']:>9.2f}")
    print(f"results: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
