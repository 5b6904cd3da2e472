"""Assemble job reports from the jobs table, the rollups and the rate tables. The rollups are
summed in SQL per period of constant rates, so a report's cost does not grow with the job."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from api.accounting.forecast import budget_status
from api.accounting.pricing import UsageRow, price_grouped, rate_boundaries, regions
from api.accounting.rates import LedgerConfig
from api.queries import jobs as reads


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def intensity_for(engine: Engine, rows: list[UsageRow], config: LedgerConfig) -> dict[tuple[str, int], float]:
    """The hourly intensity series the rows need, in one query."""
    if not rows:
        return {}
    regions = {config.datacenter(row.datacenter).region for row in rows}
    return reads.hourly_intensity(engine, regions, min(r.hour_s for r in rows), max(r.hour_s for r in rows))


def build_reports(engine: Engine, jobs: list[dict[str, Any]], config: LedgerConfig) -> list[dict[str, Any]]:
    ids = [job["job_id"] for job in jobs]
    usage = reads.usage_grouped(engine, ids, rate_boundaries(config), *regions(config))
    placement = reads.placement(engine, ids)
    reports = []
    for job in jobs:
        nodes, gpus = placement.get(job["job_id"], (0, 0))
        priced = price_grouped(usage.get(job["job_id"], []), config, job["cluster"])
        reports.append({
            "job_id": job["job_id"], "cluster": job["cluster"], "name": job["name"], "user": job["user"],
            "account": job["account"], "release": job.get("release"), "source": job.get("source") or "agent",
            "state": job["state"], "started_at": _at(job["first_seen_s"]),
            "last_seen_at": _at(job["last_seen_s"]), "ended_at": _at(job["ended_s"]),
            "nodes": nodes, "gpus": gpus, **priced, "budget": budget_status(job, priced, time.time()),
            "scheduler": scheduler_info(job),
        })
    return reports


SCHEDULER_FIELDS = ("partition", "qos", "array_job_id", "array_task_id", "het_job_id", "het_job_offset",
                    "node_list", "alloc_gpus", "exit_code")


def scheduler_info(job: dict[str, Any]) -> dict[str, Any] | None:
    """The scheduler's metadata of a job row, or None when no scheduler reported it."""
    if not job.get("scheduler"):
        return None
    return {"name": job["scheduler"], **{name: job.get(name) for name in SCHEDULER_FIELDS},
            "state": job.get("scheduler_state"), "started_at": _at(job.get("scheduler_started_s")),
            "ended_at": _at(job.get("scheduler_ended_s"))}


def now() -> datetime:
    return datetime.now(UTC)
