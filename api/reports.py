"""Assemble job reports from the jobs table, the rollups and the rate tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from api import reads
from api.pricing import price
from api.rates import LedgerConfig


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def build_reports(engine: Engine, jobs: list[dict[str, Any]], config: LedgerConfig) -> list[dict[str, Any]]:
    ids = [job["job_id"] for job in jobs]
    usage, placement = reads.usage(engine, ids), reads.placement(engine, ids)
    reports = []
    for job in jobs:
        nodes, gpus = placement.get(job["job_id"], (0, 0))
        reports.append({
            "job_id": job["job_id"], "cluster": job["cluster"], "name": job["name"], "user": job["user"],
            "account": job["account"], "state": job["state"], "started_at": _at(job["first_seen_s"]),
            "last_seen_at": _at(job["last_seen_s"]), "ended_at": _at(job["ended_s"]),
            "nodes": nodes, "gpus": gpus, **price(usage.get(job["job_id"], []), config),
        })
    return reports


def now() -> datetime:
    return datetime.now(UTC)
