"""Apply one batch, exactly once, in one transaction: batch identity, raw intervals (with
dimension keys), minute and hourly rollups, jobs and their GPUs. SQLAlchemy Core bulk statements throughout."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine, case, func
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from agent.energy import MEASURED
from collector import dims
from collector.db import insert_for
from collector.models import MINUTE_S, RUNNING, IngestedBatch, Job, JobGpu, JobHour, JobMinute, RawInterval
from collector.network import write_network
from collector.pieces import UNALLOCATED, job_key, split_by_hour, split_by_step
from collector.schemas import BatchIn, IntervalIn

FUTURE_TOLERANCE_S = 900.0  # agents' clocks may be off by minutes; not by a quarter of an hour
RETRIES = 5
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected

batches_t = IngestedBatch.__table__
intervals_t = RawInterval
minutes_t = JobMinute.__table__
ADDED = ("gpu_seconds", "busy_gpu_seconds", "energy_j", "energy_counter_j")
jobs_t = Job.__table__
hours_t = JobHour.__table__
job_gpus_t = JobGpu.__table__


class BatchRejected(ValueError):
    """A batch that validates field by field but not as a whole; nothing of it is stored."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    applied: bool  # False: this (node, boot_id, seq) was applied before
    intervals: int


Identity = tuple[str, str, int]  # (node, boot_id, seq)


def identity(batch: BatchIn) -> Identity:
    return (batch.node, batch.boot_id, batch.seq)


def rollup(batches: list[BatchIn]) -> dict[tuple[str, int, str, str], list[float]]:
    """Sum per (job, hour, datacenter, GPU model): [gpu_seconds, busy, energy_j, energy_counter_j]."""
    sums: dict[tuple[str, int, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for batch in batches:
        for interval in batch.intervals:
            job = job_key(batch.cluster, interval.job)
            for hour, share in split_by_hour(interval.start_s, interval.end_s, _values(interval)):
                row = sums[(job, hour, batch.datacenter, interval.gpu_model)]
                for i in range(4):
                    row[i] += share[i]
    return sums


def _values(interval: IntervalIn) -> list[float]:
    counter_j = interval.energy_j if interval.energy_method in MEASURED else 0.0
    return [interval.gpu_seconds, interval.busy_gpu_seconds, interval.energy_j, counter_j]


def check(batch: BatchIn, now_s: float) -> None:
    """What validates only against the collector's clock; raises BatchRejected."""
    latest_s = max((i.end_s for i in batch.intervals), default=0.0)
    if latest_s > now_s + FUTURE_TOLERANCE_S:
        raise BatchRejected(f"intervals end_s = {latest_s} is {latest_s - now_s:.0f} s in the future (clock skew?)")


def apply_batch(engine: Engine, batch: BatchIn, now_s: float) -> IngestResult:
    check(batch, now_s)
    return apply_batches(engine, [batch], now_s)[0]


def apply_batches(engine: Engine, batches: list[BatchIn], now_s: float) -> list[IngestResult]:
    """Apply checked batches in one transaction (group commit), each exactly once."""
    for attempt in range(RETRIES):
        try:
            return _apply(engine, batches, now_s)
        except OperationalError as exc:  # another collector's transaction won a lock race
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _apply(engine: Engine, batches: list[BatchIn], now_s: float) -> list[IngestResult]:
    unique = list({identity(b): b for b in reversed(batches)}.values())[::-1]  # first of each identity
    with engine.begin() as conn:
        claimed = {
            (node, boot_id, seq) for node, boot_id, seq in conn.execute(
                insert_for(conn, batches_t).on_conflict_do_nothing().returning(
                    batches_t.c.node, batches_t.c.boot_id, batches_t.c.seq, sort_by_parameter_order=True),
                [{"node": b.node, "boot_id": b.boot_id, "seq": b.seq, "received_at_s": now_s,
                  "interval_count": len(b.intervals), "content_hash": b.content_hash()} for b in unique],
            )
        }
        fresh = [b for b in unique if identity(b) in claimed]
        if any(b.intervals for b in fresh):
            _write_intervals(conn, fresh)
            _write_rollups(conn, fresh)
            _write_jobs(conn, fresh)
        if any(b.network for b in fresh):
            write_network(conn, fresh)
    applied = {id(b) for b in fresh}
    return [IngestResult(applied=id(b) in applied, intervals=len(b.intervals)) for b in batches]


def _write_intervals(conn: Connection, batches: list[BatchIn]) -> None:
    """Raw intervals with dimension keys, and their per-minute rollup per (job, place)."""
    jobs = dims.job_keys(conn, (job_key(b.cluster, i.job) for b in batches for i in b.intervals))
    places = dims.place_keys(conn, ((b.node, b.datacenter, i.gpu_model) for b in batches for i in b.intervals))
    gpus = dims.gpu_keys(conn, ((places[(b.node, b.datacenter, i.gpu_model)], i.gpu_uuid)
                                for b in batches for i in b.intervals))
    rows, minutes = [], minute_rollup(batches, jobs, places)
    for b in batches:
        for i in b.intervals:
            place = places[(b.node, b.datacenter, i.gpu_model)]
            rows.append({"gpu_key": gpus[(place, i.gpu_uuid)], "job_key": jobs[job_key(b.cluster, i.job)],
                         "start_s": i.start_s, "end_s": i.end_s, "gpu_seconds": i.gpu_seconds,
                         "busy_gpu_seconds": i.busy_gpu_seconds, "energy_j": i.energy_j,
                         "method": dims.METHOD_CODE[i.energy_method], "max_memory_used_bytes": i.max_memory_used_bytes})
    conn.execute(intervals_t.insert(), rows)
    stmt = insert_for(conn, minutes_t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_key", "minute_s", "place_key"],
        set_={name: minutes_t.c[name] + stmt.excluded[name] for name in ADDED},
    )
    conn.execute(stmt, [{"job_key": j, "minute_s": m, "place_key": p, **dict(zip(ADDED, values, strict=True))}
                        for (j, m, p), values in sorted(minutes.items())])


MinuteKey = tuple[int, int, int]  # job key, minute start, place key


def minute_rollup(
    batches: list[BatchIn], jobs: dict[str, int], places: dict[dims.PlaceName, int]
) -> dict[MinuteKey, list[float]]:
    """Sum per (job key, minute, place key), split as the hourly rollup is (so minutes add up to hours)."""
    sums: dict[MinuteKey, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for batch in batches:
        for interval in batch.intervals:
            job = jobs[job_key(batch.cluster, interval.job)]
            place = places[(batch.node, batch.datacenter, interval.gpu_model)]
            for minute, share in split_by_step(interval.start_s, interval.end_s, _values(interval), MINUTE_S):
                row = sums[(job, minute, place)]
                for n in range(4):
                    row[n] += share[n]
    return sums


def _write_rollups(conn: Connection, batches: list[BatchIn]) -> None:
    stmt = insert_for(conn, hours_t)
    added = ADDED
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "hour_s", "datacenter", "gpu_model"],
        set_={name: hours_t.c[name] + stmt.excluded[name] for name in added},
    )
    rows = [
        {"job_id": job, "hour_s": hour, "datacenter": dc, "gpu_model": model, **dict(zip(added, values, strict=True))}
        for (job, hour, dc, model), values in sorted(rollup(batches).items())
    ]
    conn.execute(stmt, rows)


def _job_rows(batches: list[BatchIn]) -> list[dict[str, object]]:
    """One row per job of the batches: its span, and the fullest metadata any batch carried."""
    rows: dict[str, dict[str, object]] = {}
    for batch in batches:
        meta = {j.id: j for j in batch.jobs}
        for i in batch.intervals:
            key = job_key(batch.cluster, i.job)
            row = rows.get(key)
            if row is None:
                info = meta.get(i.job) if i.job else None
                row = rows[key] = {
                    "job_id": key, "cluster": batch.cluster, "local_id": i.job or UNALLOCATED,
                    "name": info.name if info else (UNALLOCATED if i.job is None else None),
                    "user": info.user if info else None, "account": info.account if info else None,
                    "budget_usd": info.budget_usd if info else None,
                    "budget_co2e_kg": info.budget_co2e_kg if info else None,
                    "release": info.release if info else None,
                    "state": RUNNING, "first_seen_s": i.start_s, "last_seen_s": i.end_s, "ended_s": None,
                }
            row["first_seen_s"] = min(cast(float, row["first_seen_s"]), i.start_s)
            row["last_seen_s"] = max(cast(float, row["last_seen_s"]), i.end_s)
    return [rows[key] for key in sorted(rows)]


def _write_jobs(conn: Connection, batches: list[BatchIn]) -> None:
    stmt = insert_for(conn, jobs_t)
    new = stmt.excluded
    # Metadata a scheduler reported (collector.scheduler) is never changed by an agent; a job
    # the scheduler ended stays ended, whatever data arrives after (the last pushes lag).
    by_scheduler, ended_by_scheduler = jobs_t.c.scheduler.is_not(None), jobs_t.c.scheduler_ended_s.is_not(None)
    revived = new.last_seen_s > jobs_t.c.last_seen_s
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id"],
        set_={
            # First writer wins: an agent only fills a gap, and never changes what the scheduler set
            # (collector.integrity counts the conflicts; collector.jobmeta sets an admin's values).
            **{name: case((by_scheduler, jobs_t.c[name]), else_=func.coalesce(jobs_t.c[name], new[name]))
               for name in ("name", "user", "account")},
            "budget_usd": func.coalesce(jobs_t.c.budget_usd, new.budget_usd),
            "budget_co2e_kg": func.coalesce(jobs_t.c.budget_co2e_kg, new.budget_co2e_kg),
            "release": func.coalesce(jobs_t.c.release, new.release),  # an admin's label is kept
            "first_seen_s": case((new.first_seen_s < jobs_t.c.first_seen_s, new.first_seen_s), else_=jobs_t.c.first_seen_s),
            "last_seen_s": case((new.last_seen_s > jobs_t.c.last_seen_s, new.last_seen_s), else_=jobs_t.c.last_seen_s),
            # Only data newer than any seen revives an ended job; a late replay does not.
            "state": case((ended_by_scheduler, jobs_t.c.state), (revived, RUNNING), else_=jobs_t.c.state),
            "ended_s": case((ended_by_scheduler, jobs_t.c.ended_s), (revived, None), else_=jobs_t.c.ended_s),
        },
    )
    conn.execute(stmt, _job_rows(batches))
    gpus = {(job_key(b.cluster, i.job), b.node, i.gpu_uuid) for b in batches for i in b.intervals}
    conn.execute(
        insert_for(conn, job_gpus_t).on_conflict_do_nothing(),
        [{"job_id": job, "node": node, "gpu_uuid": uuid} for job, node, uuid in sorted(gpus)],
    )
