"""Read queries for reports: jobs, their rollups summed per (datacenter, model), their GPUs.

Every query reads the hourly rollups or the jobs table; none scans raw intervals.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, case, func, literal, select

from api.accounting.pricing import UsageRow
from collector.models import GridIntensity, Job, JobGpu, JobHour, JobNetHour
from collector.pieces import UNALLOCATED

jobs_t, hours_t, job_gpus_t = Job.__table__, JobHour.__table__, JobGpu.__table__
net_hours_t, grid_t = JobNetHour.__table__, GridIntensity.__table__
IDLE_GROUP, NO_GROUP = "(unallocated)", "(none)"


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


JOB_ID = re.compile(r"^[\x21-\x7e]{1,300}$")  # "<cluster>/<local id>", as ingest accepts them


def get_job(engine: Engine, job_id: str) -> dict[str, Any] | None:
    """The job's row; None for an unknown id, and without a query for one no job can have."""
    if not JOB_ID.match(job_id):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(jobs_t).where(jobs_t.c.job_id == job_id)).first()
    return None if row is None else dict(row._mapping)


def usage(engine: Engine, job_ids: list[str]) -> dict[str, list[UsageRow]]:
    """Each job's hourly rollups."""
    query = select(
        hours_t.c.job_id, hours_t.c.hour_s, hours_t.c.datacenter, hours_t.c.gpu_model, hours_t.c.gpu_seconds,
        hours_t.c.busy_gpu_seconds, hours_t.c.energy_j, hours_t.c.energy_counter_j,
        hours_t.c.energy_declared_j, hours_t.c.energy_estimated_j,
    ).where(hours_t.c.job_id.in_(job_ids))
    result: dict[str, list[UsageRow]] = defaultdict(list)
    with engine.connect() as conn:
        for job_id, *values in conn.execute(query):
            result[job_id].append(UsageRow(*values))
    return result


def hourly_intensity(engine: Engine, regions: set[str], first_hour_s: int, last_hour_s: int) -> dict[tuple[str, int], float]:
    """The stored hourly series of ``regions`` over [first_hour_s, last_hour_s]."""
    if not regions:
        return {}
    query = select(grid_t.c.region, grid_t.c.hour_s, grid_t.c.g_per_kwh).where(
        grid_t.c.region.in_(sorted(regions)), grid_t.c.hour_s.between(first_hour_s, last_hour_s)
    )
    with engine.connect() as conn:
        return {(region, hour): g for region, hour, g in conn.execute(query)}


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
    return network_by_job(engine, [job_id]).get(job_id, [])


def network_by_job(engine: Engine, job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each job's RoCE rollups summed per node, in one query; jobs without any are left out."""
    summed = ("seconds", "tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "cnp_sent", "cnp_handled",
              "ecn_marked_packets", "retransmits", "out_of_sequence", "timeouts", "apportioned_bytes",
              "link_down_port_seconds")
    peaks = ("ports", "peak_tx_gbps", "peak_rx_gbps", "peak_link_util_pct")
    query = (
        select(net_hours_t.c.job_id, net_hours_t.c.node,
               *(func.sum(net_hours_t.c[n]).label(n) for n in summed),
               *(func.max(net_hours_t.c[n]).label(n) for n in peaks))
        .where(net_hours_t.c.job_id.in_(job_ids))
        .group_by(net_hours_t.c.job_id, net_hours_t.c.node)
        .order_by(net_hours_t.c.job_id, net_hours_t.c.node)
    )
    result: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(query):
            values = dict(row._mapping)
            result[values.pop("job_id")].append(values)
    return dict(result)


def usage_by_group(engine: Engine, group_by: str, from_s: float, to_s: float) -> dict[tuple[str, str], list[UsageRow]]:
    """Hourly rollups in [from_s, to_s) summed per (group, cluster); the idle account is its own group."""
    idle = jobs_t.c.local_id == UNALLOCATED
    group = case((idle, literal(IDLE_GROUP)), else_=func.coalesce(jobs_t.c[group_by], literal(NO_GROUP)))
    query = (
        select(group, jobs_t.c.cluster, hours_t.c.hour_s, hours_t.c.datacenter, hours_t.c.gpu_model,
               func.sum(hours_t.c.gpu_seconds), func.sum(hours_t.c.busy_gpu_seconds),
               func.sum(hours_t.c.energy_j), func.sum(hours_t.c.energy_counter_j),
               func.sum(hours_t.c.energy_declared_j), func.sum(hours_t.c.energy_estimated_j))
        .join(jobs_t, jobs_t.c.job_id == hours_t.c.job_id)
        .where(hours_t.c.hour_s >= int(from_s // 3600 * 3600), hours_t.c.hour_s < to_s)
        .group_by(group, jobs_t.c.cluster, hours_t.c.hour_s, hours_t.c.datacenter, hours_t.c.gpu_model)
    )
    result: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    with engine.connect() as conn:
        for name, cluster, *values in conn.execute(query):
            result[(name, cluster)].append(UsageRow(*values))
    return result


def series_regions(engine: Engine) -> list[str]:
    """Regions with a stored hourly intensity series."""
    with engine.connect() as conn:
        return [region for (region,) in conn.execute(select(grid_t.c.region).distinct())]


def release_jobs(engine: Engine, release: str, account: str | None = None) -> list[dict[str, Any]]:
    """The jobs under a release label, oldest first (account-scoped readers see their account's)."""
    where = [jobs_t.c.release == release] + ([jobs_t.c.account == account] if account is not None else [])
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(jobs_t).where(*where))]
    return sorted(rows, key=lambda job: (job["first_seen_s"], _natural(job["job_id"])))


def _natural(text: str) -> list[tuple[int, int | str]]:
    """``llama-2-7b`` before ``llama-2-13b``: digit runs compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def releases(engine: Engine, account: str | None = None) -> list[dict[str, Any]]:
    """Every release label with its job count."""
    where = [jobs_t.c.release.is_not(None)] + ([jobs_t.c.account == account] if account is not None else [])
    query = select(jobs_t.c.release, func.count()).where(*where).group_by(jobs_t.c.release).order_by(jobs_t.c.release)
    with engine.connect() as conn:
        return [{"release": name, "jobs": count} for name, count in conn.execute(query)]
