"""The server application: ingest, reports, health; periodic work on APScheduler."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, text

from agent import __version__
from api.accounting.rates import LedgerConfig
from api.http import errors
from api.http.auth import AuthSettings, require_reader, require_unscoped_reader
from api.http.bodylimit import BodySizeLimit
from api.http.deps import EngineDep
from api.http.routes import declared, ingest, jobs, ledger, releases, series, usage
from api.http.routes import scheduler as scheduler_events
from api.http.web.routes import install as install_web
from api.intensity.feeds import refresh
from api.reports.budgets import BudgetCollector
from api.reports.jobmetrics import JobCollector
from collector.lease import SchedulerLease
from collector.lifecycle import end_silent_jobs
from collector.partitions import ensure_partitions
from collector.retention import maintain
from collector.stats import IngestStats
from collector.writer import GroupWriter


def create_app(engine: Engine, config: LedgerConfig, scheduler: bool = True, auth: AuthSettings | None = None,
               multiprocess_dir: str | None = None) -> FastAPI:
    """The server. ``multiprocess_dir``: several processes serve this app (``--workers``); their
    ingest counters live in that folder (prometheus_client's multiprocess mode) and /metrics
    sums them; the periodic jobs run in whichever process holds the scheduler lease."""
    lease = SchedulerLease(engine)

    def once(job: Callable[..., object], *args: object) -> Callable[[], object]:
        return lambda: None if not lease.held() else job(*args)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.writer.start()
        sched = BackgroundScheduler(timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True})
        if scheduler:
            ensure_partitions(engine, time.time(), config.retention.partitions_ahead_days)  # before the first batch
            sched.add_job(
                once(lambda: end_silent_jobs(engine, time.time(), config.jobs.silence_s)),
                "interval", seconds=config.jobs.sweep_interval_s, id="end_silent_jobs",
            )
            sched.add_job(
                once(lambda: maintain(engine, time.time(), config.retention.raw_days, config.retention.minute_days,
                                      config.retention.partitions_ahead_days)),
                "interval", seconds=config.retention.prune_interval_s, id="storage_tiers",
            )
            for n, provider in enumerate(config.intensity_providers):
                sched.add_job(once(refresh, engine, provider), "interval", seconds=provider.interval_s,
                              id=f"intensity_{n}_{provider.kind}", next_run_time=datetime.now(UTC))
            sched.start()
        yield
        if sched.running:
            sched.shutdown(wait=False)
        lease.release()
        app.state.writer.close()

    app = FastAPI(title="gpuledger", version=__version__, lifespan=lifespan,
                  description="Live GPU-hours, energy, dollars and CO2e per training job.")
    app.state.engine, app.state.config = engine, config
    app.state.auth = auth or AuthSettings()
    app.state.writer = GroupWriter(engine)
    app.add_middleware(BodySizeLimit)
    errors.install(app)
    app.include_router(ingest.router)
    app.include_router(ledger.router)  # before jobs: their former /v1/jobs/{id}/... paths must match first
    app.include_router(series.router)
    app.include_router(scheduler_events.router)  # before jobs, as ledger (the former /v1/jobs/{id}/summary.txt)
    app.include_router(jobs.router)
    app.include_router(declared.router)  # before usage: /v1/usage/declared
    app.include_router(usage.router)
    app.include_router(releases.router)
    install_web(app)  # the web page at /, its files under /static
    registry = CollectorRegistry(auto_describe=False)
    app.state.ingest_stats = IngestStats(registry)
    if multiprocess_dir is not None:  # expose every process's counters, summed, instead of this one's
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=multiprocess_dir)
    registry.register(BudgetCollector(engine, config))
    job_metrics = JobCollector(engine, config)  # writes its own exposition: see api.reports.jobmetrics

    # Every job's series, of every account: a reader scoped to one account gets 403 here.
    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse, dependencies=[Depends(require_unscoped_reader)])
    def metrics() -> PlainTextResponse:
        body = generate_latest(registry) + job_metrics.exposition().encode()
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["health"], dependencies=[Depends(require_reader)])
    def healthz(engine: EngineDep) -> dict[str, str]:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    return app
