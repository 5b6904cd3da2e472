"""Running the server: one process, or ``--workers N`` processes on one port (PostgreSQL only).

With N > 1, uvicorn's supervisor binds the port once and N worker processes accept on it
(each a whole collector and API: its own event loop, group writer and connection pool).
Each worker builds its app with ``app_from_env`` from what the command line put in the
environment. Their ingest counters are kept in a folder of memory-mapped files
(prometheus_client's multiprocess mode) so that /metrics, whichever worker answers it,
shows the sums; the periodic jobs run in one process (``collector.lease``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI

ENV_DB, ENV_CONFIG = "GPULEDGER_DB", "GPULEDGER_CONFIG"
ENV_REQUIRE_AUTH, ENV_OPEN_PATHS = "GPULEDGER_REQUIRE_AUTH", "GPULEDGER_OPEN_PATHS"
ENV_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name: read when it is imported
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
HEALTHCHECK_S = 60  # a worker importing the app on a busy machine may take tens of seconds to answer


NAMES = {"sqlite": "SQLite"}


class WorkersError(ValueError):
    """--workers asked for what the database cannot do."""


def check_workers(workers: int, db_url: str) -> None:
    """--workers N for the database at ``db_url``: N > 1 needs PostgreSQL."""
    backend = db_url.partition(":")[0].partition("+")[0]
    if workers < 1:
        raise WorkersError(f"--workers {workers}: expected 1 or more")
    if workers > 1 and backend != "postgresql":
        raise WorkersError(f"--workers {workers} needs PostgreSQL: {NAMES.get(backend, backend)} allows one writing process; "
                           "run one server process on it, or use --db postgresql+psycopg://…")


def app_from_env() -> FastAPI:
    """A worker's app (uvicorn calls this in each worker process)."""
    import prometheus_client

    from api.accounting.rates import load_config
    from api.http.app import create_app
    from api.http.auth import AuthSettings
    from collector.db import make_engine

    _die_with_parent()
    prometheus_client.disable_created_metrics()
    config = os.environ.get(ENV_CONFIG)
    auth = AuthSettings(required=os.environ.get(ENV_REQUIRE_AUTH) == "1",
                        open_paths=[p for p in os.environ.get(ENV_OPEN_PATHS, "").split(",") if p])
    return create_app(make_engine(os.environ[ENV_DB]), load_config(Path(config) if config else None), auth=auth,
                      multiprocess_dir=os.environ[ENV_METRICS_DIR])


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the supervisor dies (even by SIGKILL), so that no
    orphan keeps the port open when systemd, or a test, starts the server again."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(workers: int, db: str, config: Path | None, auth: Any, uvicorn_kwargs: dict[str, Any]) -> None:
    """Serve with ``workers`` processes until stopped; the counters' folder is removed afterwards."""
    import uvicorn

    metrics_dir = tempfile.mkdtemp(prefix="gpuledger-metrics-")
    os.environ.update({ENV_DB: db, ENV_METRICS_DIR: metrics_dir, ENV_REQUIRE_AUTH: "1" if auth.required else "0",
                       ENV_OPEN_PATHS: ",".join(auth.open_paths)})
    if config is not None:
        os.environ[ENV_CONFIG] = str(config.resolve())
    try:
        uvicorn.run("api.cli.serve:app_from_env", factory=True, workers=workers, timeout_worker_healthcheck=HEALTHCHECK_S,
                    **uvicorn_kwargs)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
