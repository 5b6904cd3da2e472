"""Read queries for reports: jobs, their rollups summed per (datacenter, model), their GPUs.

Every query reads the hourly rollups or the jobs table; none scans raw intervals.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, bindparam, case, func, literal, select

from api.accounting.pricing import GroupedUsage, UsageRow
from collector.models import GridIntensity, GridMarginalIntensity, Job, JobGpu, JobHour, JobNetHour, JobPod
from collector.pieces import UNALLOCATED

jobs_t, hours_t, job_gpus_t = Job.__table__, JobHour.__table__, JobGpu.__table__
net_hours_t, grid_t = JobNetHour.__table__, GridIntensity.__table__
job_pods_t = JobPod.__table__
marginal_t = GridMarginalIntensity.__table__
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
_JOB = select(jobs_t).where(jobs_t.c.job_id == bindparam("job_id"))  # the reads' statements are built once
_IDS: Any = bindparam("job_ids", expanding=True)


def get_job(engine: Engine, job_id: str) -> dict[str, Any] | None:
    """The job's row; None for an unknown id, and without a query for one no job can have."""
    if not JOB_ID.match(job_id):
        return None
    with engine.connect() as conn:
        row = conn.execute(_JOB, {"job_id": job_id}).first()
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


def usage_grouped(
    engine: Engine, job_ids: list[str], boundaries: list[int], regions: dict[str, str], other_region: str
) -> dict[str, list[GroupedUsage]]:
    """Each job's hourly rollups summed in SQL per (datacenter, GPU model, period between two
    ``boundaries``), the stored hourly intensity of the datacenter's region applied in the sums
    (no join at all while no region of the configuration has an hourly series)."""
    region_items = tuple(sorted(regions.items()))
    result: dict[str, list[GroupedUsage]] = defaultdict(list)
    with engine.connect() as conn:
        series = conn.execute(_any_intensity(tuple(sorted({*regions.values(), other_region})))).first() is not None
        query = _grouped(tuple(boundaries), region_items, other_region) if series else _summed(tuple(boundaries))
        for job_id, *values in conn.execute(query, {"job_ids": job_ids}):
            result[job_id].append(GroupedUsage(*values))
    return result


def _period(boundaries: tuple[int, ...]) -> Any:
    return sum((case((hours_t.c.hour_s >= b, 1), else_=0) for b in boundaries), literal(0))


@lru_cache(maxsize=16)
def _any_intensity(regions: tuple[str, ...]) -> Any:
    return select(grid_t.c.hour_s).where(grid_t.c.region.in_(regions)).limit(1)


@lru_cache(maxsize=16)
def _grouped(boundaries: tuple[int, ...], regions: tuple[tuple[str, str], ...], other_region: str) -> Any:
    h, g = hours_t.c, grid_t.c
    region = (case(*((h.datacenter == name, literal(r)) for name, r in regions), else_=literal(other_region))
              if regions else literal(other_region))
    has = g.g_per_kwh.is_not(None)
    return (
        select(h.job_id, func.min(h.hour_s), h.datacenter, h.gpu_model, func.sum(h.gpu_seconds),
               func.sum(h.busy_gpu_seconds), func.sum(h.energy_j), func.sum(h.energy_counter_j),
               func.sum(h.energy_declared_j), func.sum(h.energy_estimated_j), func.count(),
               func.sum(case((has, h.gpu_seconds), else_=0.0)), func.sum(case((has, h.energy_j), else_=0.0)),
               func.coalesce(func.sum(h.gpu_seconds * g.g_per_kwh), 0.0), func.coalesce(func.sum(h.energy_j * g.g_per_kwh), 0.0),
               func.count(g.g_per_kwh), func.min(g.g_per_kwh), func.max(g.g_per_kwh))
        .select_from(hours_t.outerjoin(grid_t, (g.region == region) & (g.hour_s == h.hour_s)))
        .where(h.job_id.in_(_IDS))
        .group_by(h.job_id, h.datacenter, h.gpu_model, _period(boundaries))
    )


@lru_cache(maxsize=16)
def _summed(boundaries: tuple[int, ...]) -> Any:
    h = hours_t.c
    return (
        select(h.job_id, func.min(h.hour_s), h.datacenter, h.gpu_model, func.sum(h.gpu_seconds),
               func.sum(h.busy_gpu_seconds), func.sum(h.energy_j), func.sum(h.energy_counter_j),
               func.sum(h.energy_declared_j), func.sum(h.energy_estimated_j), func.count())
        .where(h.job_id.in_(_IDS))
        .group_by(h.job_id, h.datacenter, h.gpu_model, _period(boundaries))
    )


def hourly_intensity(engine: Engine, regions: set[str], first_hour_s: int, last_hour_s: int) -> dict[tuple[str, int], float]:
    """The stored hourly series of ``regions`` over [first_hour_s, last_hour_s]."""
    if not regions:
        return {}
    query = select(grid_t.c.region, grid_t.c.hour_s, grid_t.c.g_per_kwh).where(
        grid_t.c.region.in_(sorted(regions)), grid_t.c.hour_s.between(first_hour_s, last_hour_s)
    )
    with engine.connect() as conn:
        return {(region, hour): g for region, hour, g in conn.execute(query)}


def hourly_marginal_intensity(engine: Engine, regions: set[str], first_hour_s: int, last_hour_s: int) -> dict[tuple[str, int], float]:
    """The stored hourly *marginal* series (WattTime co2_moer) of ``regions`` over [first_hour_s, last_hour_s]."""
    if not regions:
        return {}
    query = select(marginal_t.c.region, marginal_t.c.hour_s, marginal_t.c.g_per_kwh).where(
        marginal_t.c.region.in_(sorted(regions)), marginal_t.c.hour_s.between(first_hour_s, last_hour_s)
    )
    with engine.connect() as conn:
        return {(region, hour): g for region, hour, g in conn.execute(query)}


def placement(engine: Engine, job_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(nodes, gpus) each job has run on."""
    with engine.connect() as conn:
        return {job_id: (nodes, gpus) for job_id, nodes, gpus in conn.execute(_PLACEMENT, {"job_ids": job_ids})}


_PLACEMENT = (
    select(job_gpus_t.c.job_id, func.count(func.distinct(job_gpus_t.c.node)), func.count())
    .where(job_gpus_t.c.job_id.in_(_IDS))
    .group_by(job_gpus_t.c.job_id)
)


def pods(engine: Engine, job_ids: list[str]) -> dict[str, list[str]]:
    """The Kubernetes pods each job has run in, sorted; jobs without any are left out."""
    query = select(job_pods_t.c.job_id, job_pods_t.c.pod).where(job_pods_t.c.job_id.in_(job_ids))
    result: dict[str, list[str]] = defaultdict(list)
    with engine.connect() as conn:
        for job_id, pod in conn.execute(query.order_by(job_pods_t.c.job_id, job_pods_t.c.pod)):
            result[job_id].append(pod)
    return dict(result)


def network(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    """A job's RoCE rollups summed per node."""
    return network_by_job(engine, [job_id]).get(job_id, [])


_NET_SUMMED = ("seconds", "tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "cnp_sent", "cnp_handled",
               "ecn_marked_packets", "retransmits", "out_of_sequence", "timeouts", "apportioned_bytes",
               "link_down_port_seconds", "unknown_seconds")
_NET_PEAKS = ("ports", "peak_tx_gbps", "peak_rx_gbps", "peak_link_util_pct")
_NETWORK = (
    select(net_hours_t.c.job_id, net_hours_t.c.node,
           *(func.sum(net_hours_t.c[n]).label(n) for n in _NET_SUMMED),
           *(func.max(net_hours_t.c[n]).label(n) for n in _NET_PEAKS))
    .where(net_hours_t.c.job_id.in_(_IDS))
    .group_by(net_hours_t.c.job_id, net_hours_t.c.node)
    .order_by(net_hours_t.c.job_id, net_hours_t.c.node)
)


def network_by_job(engine: Engine, job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each job's RoCE rollups summed per node, in one query; jobs without any are left out."""
    result: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(_NETWORK, {"job_ids": job_ids}):
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
