"""Run a queued job in its own process: ``python -m mida jobs run ID``.

The API answers ``202 Accepted`` at once and the work goes on in a detached
process that holds the job's row: it writes progress, honours a cancel
request, and records its end. A server restart does not stop it; a killed job
is marked ``interrupted`` by the next job that starts (its pid is gone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from mida.config import Settings

#: A pull's query may carry identifiers (PatientID=...): it travels to the job's process in
#: this environment variable; the job record keeps only the query's keys.
QUERY_ENV = "MIDA_JOB_QUERY"


def private_query(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a pull's params into what the job record keeps and what only the process sees."""
    query = str(params.get("query") or "")
    keys = sorted({part.split("=", 1)[0] for part in query.split() if "=" in part})
    return {**params, "query": None, "query_keys": keys}, {QUERY_ENV: query}


def settings_env(settings: Settings) -> dict[str, str]:
    """``MIDA_*`` variables that rebuild ``settings`` in another process."""
    env: dict[str, str] = {}
    for key, value in settings.model_dump(mode="json").items():
        name = f"MIDA_{key.upper()}"
        env[name] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


def spawn_job(settings: Settings, job_id: int, private: dict[str, str] | None = None) -> int:
    """Start ``mida jobs run job_id`` detached; returns its pid.

    ``private`` values (e.g. a PACS query that may name a patient) reach the job's
    process through its environment only, never the catalog, logs or job view.
    """
    env = {**os.environ, **settings_env(settings), **(private or {})}
    log_dir = settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"job-{job_id}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mida", "jobs", "run", str(job_id)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )
    return proc.pid


__all__ = ["QUERY_ENV", "private_query", "settings_env", "spawn_job"]
