"""Read queries for reports: jobs, their rollups summed per (datacenter, model), their GPUs.

Every query reads the hourly rollups or the jobs table; none scans raw intervals.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, func, select

from api.pricing import UsageRow
from collector.models import Job, JobGpu, JobHour, JobNetHour

jobs_t, hours_t, job_gpus_t = Job.__table__, JobHour.__table__, JobGpu.__table__
net_hours_t = JobNetHour.__table__


def list_jobs(
    engine: Engine, *, state: str | None, user: str | None, account: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of jobs, newest first, and how many match in all."""
    where = [
        column == value
        for column, value in ((jobs_t.c.state, state), (jobs_t.c.user, user), (jobs_t.c.account, account))
        if value is not None
    ]
    page = select(jobs_t).where(*where).order_by(jobs_t.c.first_seen_s.desc(), jobs_t.c.job_id).limit(limit).offset(offset)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(page)]
        total = conn.execute(select(func.count()).select_from(jobs_t).where(*where)).scalar_one()
    return rows, total


def get_job(engine: Engine, job_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(jobs_t).where(jobs_t.c.job_id == job_id)).first()
    return None if row is None else dict(row._mapping)


def usage(engine: Engine, job_ids: list[str]) -> dict[str, list[UsageRow]]:
    """Each job's rollups summed per (datacenter, GPU model)."""
    query = (
        select(
            hours_t.c.job_id, hours_t.c.datacenter, hours_t.c.gpu_model,
            func.sum(hours_t.c.gpu_seconds), func.sum(hours_t.c.busy_gpu_seconds),
            func.sum(hours_t.c.energy_j), func.sum(hours_t.c.energy_counter_j),
        )
        .where(hours_t.c.job_id.in_(job_ids))
        .group_by(hours_t.c.job_id, hours_t.c.datacenter, hours_t.c.gpu_model)
    )
    result: dict[str, list[UsageRow]] = defaultdict(list)
    with engine.connect() as conn:
        for job_id, *values in conn.execute(query):
            result[job_id].append(UsageRow(*values))
    return result


def placement(engine: Engine, job_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(nodes, gpus) each job has run on."""
    query = (
        select(job_gpus_t.c.job_id, func.count(func.distinct(job_gpus_t.c.node)), func.count())
        .where(job_gpus_t.c.job_id.in_(job_ids))
        .group_by(job_gpus_t.c.job_id)
    )
    with engine.connect() as conn:
        return {job_id: (nodes, gpus) for job_id, nodes, gpus in conn.execute(query)}


def network(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    """A job's RoCE rollups summed per node."""
    summed = ("seconds", "tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "cnp_sent", "cnp_handled",
              "ecn_marked_packets", "retransmits", "out_of_sequence", "timeouts", "apportioned_bytes",
              "link_down_port_seconds")
    peaks = ("ports", "peak_tx_gbps", "peak_rx_gbps", "peak_link_util_pct")
    query = (
        select(net_hours_t.c.node,
               *(func.sum(net_hours_t.c[n]).label(n) for n in summed),
               *(func.max(net_hours_t.c[n]).label(n) for n in peaks))
        .where(net_hours_t.c.job_id == job_id)
        .group_by(net_hours_t.c.node)
        .order_by(net_hours_t.c.node)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
