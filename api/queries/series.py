"""Read a job's raw intervals or minute rollups in time buckets, and its network rollups hour by
hour, for charts.

Each raw interval is split between the buckets it spans in proportion to time, as the collector
splits it between hours; so a bucket's sums add up, hour by hour, to the job's rollups. The
database splits the intervals no longer than a bucket (nearly all: an agent cuts its intervals
at every push); the few longer ones (merged by an agent's spool) are split here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, Float, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from agent.energy import MEASURED
from api.accounting.pricing import UsageRow
from collector.dims import METHOD_CODE
from collector.models import GpuKey, JobKey, JobMinute, JobNetHour, Place, RawInterval

intervals_t, net_hours_t, minutes_t = RawInterval, JobNetHour.__table__, JobMinute.__table__
keys_t, gpus_t, places_t = JobKey.__table__, GpuKey.__table__, Place.__table__
MEASURED_CODES = sorted(METHOD_CODE[m] for m in MEASURED)
Sums = list[float]  # gpu_seconds, busy_gpu_seconds, energy_j, energy_counter_j
BucketKey = tuple[int, str, str]  # bucket start (Unix s), datacenter, GPU model


class floor_nonnegative(FunctionElement):  # noqa: N801 (an SQL function's name)
    """floor(x) for x >= 0 on both backends: SQLite may be built without its math functions."""

    type = Float()
    name = "floor_nonnegative"
    inherit_cache = True


@compiles(floor_nonnegative)
def _floor(element: floor_nonnegative, compiler: SQLCompiler, **kw: Any) -> str:
    return f"floor({compiler.process(element.clauses, **kw)})"


@compiles(floor_nonnegative, "sqlite")
def _floor_sqlite(element: floor_nonnegative, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"  # truncation is floor for x >= 0


def _values() -> list[Any]:
    c = intervals_t.c
    return [c.gpu_seconds, c.busy_gpu_seconds, c.energy_j, case((c.method.in_(MEASURED_CODES), c.energy_j), else_=0.0)]


def _key_of(job_id: str) -> Any:
    """The job's dimension key, as a scalar subquery."""
    return select(keys_t.c.id).where(keys_t.c.job_id == job_id).scalar_subquery()


def _raw_with_places() -> Any:
    """Raw intervals joined to their GPU's place (node, datacenter, model)."""
    return intervals_t.join(gpus_t, gpus_t.c.id == intervals_t.c.gpu_key).join(places_t, places_t.c.id == gpus_t.c.place_id)


def _short_intervals(engine: Engine, job_id: str, from_s: float, step_s: int) -> dict[BucketKey, Sums]:
    """Intervals no longer than a bucket touch at most two: the one their end is in, and the one before."""
    c = intervals_t.c
    span_s = c.end_s - c.start_s
    index = floor_nonnegative(c.end_s / float(step_s))
    in_end_s = c.end_s - index * float(step_s)  # seconds from the end bucket's start to the interval's end
    end_share = case((span_s <= 0, 1.0), (in_end_s >= span_s, 1.0), else_=in_end_s / span_s)
    sums = [func.sum(v * end_share) for v in _values()] + [func.sum(v * (1.0 - end_share)) for v in _values()]
    p = places_t.c
    query = (
        select(index, p.datacenter, p.gpu_model, *sums).select_from(_raw_with_places())
        .where(c.job_key == _key_of(job_id), c.end_s > from_s, span_s <= step_s)
        .group_by(index, p.datacenter, p.gpu_model)
    )
    result: dict[BucketKey, Sums] = defaultdict(lambda: [0.0] * 4)
    with engine.connect() as conn:
        for bucket, datacenter, model, *values in conn.execute(query):
            start_s = round(bucket) * step_s
            for offset_s, part in ((0, values[:4]), (-step_s, values[4:])):
                row = result[(start_s + offset_s, datacenter, model)]
                for i, value in enumerate(part):
                    row[i] += value or 0.0
    return result


def bucket_pieces(start_s: float, end_s: float, step_s: int) -> list[tuple[int, float]]:
    """(bucket start, fraction of the interval) for every bucket of ``step_s`` the interval spans."""
    first = math.floor(start_s / step_s) * step_s
    if end_s <= start_s:
        return [(math.floor(end_s / step_s) * step_s, 1.0)]
    pieces, bucket = [], first
    while bucket < end_s:
        overlap_s = min(end_s, bucket + step_s) - max(start_s, bucket)
        if overlap_s > 0:
            pieces.append((bucket, overlap_s / (end_s - start_s)))
        bucket += step_s
    return pieces


def _long_intervals(engine: Engine, job_id: str, from_s: float, step_s: int, into: dict[BucketKey, Sums]) -> None:
    c, p = intervals_t.c, places_t.c
    query = select(c.start_s, c.end_s, p.datacenter, p.gpu_model, *_values()).select_from(_raw_with_places()).where(
        c.job_key == _key_of(job_id), c.end_s > from_s, c.end_s - c.start_s > step_s)
    with engine.connect() as conn:
        for start_s, end_s, datacenter, model, *values in conn.execute(query):
            for bucket, fraction in bucket_pieces(start_s, end_s, step_s):
                row = into[(bucket, datacenter, model)]
                for i, value in enumerate(values):
                    row[i] += value * fraction


def fine_usage(engine: Engine, job_id: str, from_s: int, step_s: int) -> dict[int, list[UsageRow]]:
    """The job's raw intervals from ``from_s`` (a whole hour) on, summed per bucket of ``step_s``
    seconds (which divides an hour), datacenter and GPU model; buckets with nothing are left out."""
    sums = _short_intervals(engine, job_id, from_s, step_s)
    _long_intervals(engine, job_id, from_s, step_s, sums)
    result: dict[int, list[UsageRow]] = defaultdict(list)
    for (bucket, datacenter, model), values in sorted(sums.items()):
        if bucket >= from_s and any(values):
            result[bucket].append(UsageRow(bucket // 3600 * 3600, datacenter, model, *values))
    return dict(result)


def minute_usage(engine: Engine, job_id: str, from_s: int, step_s: int) -> dict[int, list[UsageRow]]:
    """The job's minute rollups from ``from_s`` (a whole hour) on, summed per bucket of ``step_s``
    seconds (a multiple of a minute that divides an hour), datacenter and GPU model."""
    m, p = minutes_t.c, places_t.c
    bucket = m.minute_s // step_s
    query = (
        select(bucket, p.datacenter, p.gpu_model, func.sum(m.gpu_seconds), func.sum(m.busy_gpu_seconds),
               func.sum(m.energy_j), func.sum(m.energy_counter_j))
        .select_from(minutes_t.join(places_t, places_t.c.id == m.place_key))
        .where(m.job_key == _key_of(job_id), m.minute_s >= from_s)
        .group_by(bucket, p.datacenter, p.gpu_model)
        .order_by(bucket, p.datacenter, p.gpu_model)
    )
    result: dict[int, list[UsageRow]] = defaultdict(list)
    with engine.connect() as conn:
        for index, datacenter, model, *values in conn.execute(query):
            start_s = int(index) * step_s
            if any(values):
                result[start_s].append(UsageRow(start_s // 3600 * 3600, datacenter, model, *values))
    return dict(result)


def nodes_latest_end(engine: Engine, job_id: str, since_s: float) -> dict[str, float]:
    """The latest interval end of each node that has sent the job's data since ``since_s``."""
    c, p = intervals_t.c, places_t.c
    query = (select(p.node, func.max(c.end_s)).select_from(_raw_with_places())
             .where(c.job_key == _key_of(job_id), c.end_s > since_s).group_by(p.node))
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


NET_SUMMED = ("tx_bytes", "rx_bytes", "cnp_handled", "retransmits")


def network_hours(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    """The job's RoCE rollups summed over its nodes, hour by hour: counters, node-seconds, the
    longest node's seconds (the hour's covered wall time) and the nodes' peaks."""
    c = net_hours_t.c
    query = (
        select(c.hour_s, func.sum(c.seconds).label("node_seconds"), func.max(c.seconds).label("wall_seconds"),
               *(func.sum(c[name]).label(name) for name in NET_SUMMED),
               func.max(c.peak_tx_gbps).label("peak_tx_gbps"), func.max(c.peak_rx_gbps).label("peak_rx_gbps"))
        .where(c.job_id == job_id)
        .group_by(c.hour_s)
        .order_by(c.hour_s)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
