"""The server application: ingest, reports, health; periodic work on APScheduler."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI
from sqlalchemy import Engine, text

from agent import __version__
from api import errors
from api.deps import EngineDep
from api.rates import LedgerConfig
from api.routes import ingest, jobs
from collector.lifecycle import end_silent_jobs
from collector.retention import prune


def create_app(engine: Engine, config: LedgerConfig, scheduler: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sched = BackgroundScheduler(timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True})
        if scheduler:
            sched.add_job(
                lambda: end_silent_jobs(engine, time.time(), config.jobs.silence_s),
                "interval", seconds=config.jobs.sweep_interval_s, id="end_silent_jobs",
            )
            sched.add_job(
                lambda: prune(engine, time.time(), config.retention.raw_days),
                "interval", seconds=config.retention.prune_interval_s, id="prune_raw_intervals",
            )
            sched.start()
        yield
        if sched.running:
            sched.shutdown(wait=False)

    app = FastAPI(title="gpuledger", version=__version__, lifespan=lifespan,
                  description="Live GPU-hours, energy, dollars and CO2e per training job.")
    app.state.engine, app.state.config = engine, config
    errors.install(app)
    app.include_router(ingest.router)
    app.include_router(jobs.router)

    @app.get("/healthz", tags=["health"])
    def healthz(engine: EngineDep) -> dict[str, str]:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    return app
