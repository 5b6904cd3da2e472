"""Apply one batch, exactly once, in one transaction: batch identity, raw intervals (with
dimension keys), minute and hourly rollups, jobs and their GPUs. The statements are SQLAlchemy
Core; the claim, the hourly rollups, the jobs and their GPUs are compiled once per dialect
(``collector.prepared``) and run through the driver's ``executemany`` (pipelined on PostgreSQL)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine, case, func
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import OperationalError

from agent.energy import MEASURED
from collector import dims
from collector.db import insert_for
from collector.models import MINUTE_S, RUNNING, IngestedBatch, Job, JobGpu, JobHour, JobMinute, JobPod, RawInterval
from collector.network import write_network
from collector.pieces import UNALLOCATED, job_key, split_by_hour, split_by_step
from collector.prepared import Prepared, StatementCache, driver_errors
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
job_pods_t = JobPod.__table__
STATEMENTS = StatementCache()  # compiled SQL per dialect: derived from the table definitions, never from data


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


class SeenGpus:
    """The (job, node, GPU) rows of ``job_gpus`` this process has committed: a batch whose GPUs
    are all known skips that insert (it would change nothing). Bounded; cleared when full."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._known: set[tuple[str, str, str]] = set()

    def unseen(self, gpus: Iterable[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        return {gpu for gpu in gpus if gpu not in self._known}

    def add(self, gpus: Iterable[tuple[str, str, str]]) -> None:
        if len(self._known) > self.max_entries:
            self._known.clear()
        self._known.update(gpus)


def apply_batches(engine: Engine | Connection, batches: list[BatchIn], now_s: float,
                  seen: SeenGpus | None = None) -> list[IngestResult]:
    """Apply checked batches in one transaction (group commit), each exactly once. ``engine``
    may be a connection the caller keeps open (the group writer's)."""
    for attempt in range(RETRIES):
        try:
            return _apply(engine, batches, now_s, seen)
        except OperationalError as exc:  # another collector's transaction won a lock race
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _apply(engine: Engine | Connection, batches: list[BatchIn], now_s: float, seen: SeenGpus | None) -> list[IngestResult]:
    unique = list({identity(b): b for b in reversed(batches)}.values())[::-1]  # first of each identity
    with _transaction(engine) as conn:
        claimed = _claim(conn, unique, now_s)
        fresh = [b for b in unique if identity(b) in claimed]
        if any(b.intervals for b in fresh):
            _write_intervals(conn, fresh)
            _write_rollups(conn, fresh)
            gpus = _write_jobs(conn, fresh, seen)
        if any(b.network for b in fresh):
            write_network(conn, fresh)
    if seen is not None and any(b.intervals for b in fresh):
        seen.add(gpus)  # only once committed: a rolled-back row must be written again
    applied = {id(b) for b in fresh}
    return [IngestResult(applied=id(b) in applied, intervals=len(b.intervals)) for b in batches]


@contextmanager
def _transaction(target: Engine | Connection) -> Iterator[Connection]:
    """A transaction on an engine's pooled connection, or on a connection the caller keeps open
    (the group writer's: no pool checkout, no ping, per transaction)."""
    if isinstance(target, Connection):
        with target.begin():
            yield target
    else:
        with target.begin() as conn:
            yield conn


BATCH_KEYS = ("node", "boot_id", "seq", "received_at_s", "interval_count", "content_hash")
ROLLUP_SUMS = ("gpu_seconds", "busy_gpu_seconds", "energy_j", "energy_counter_j")
ROLLUP_KEYS = ("job_id", "hour_s", "datacenter", "gpu_model", *ROLLUP_SUMS)
JOB_KEYS = ("job_id", "cluster", "local_id", "name", "user", "account", "budget_usd", "budget_co2e_kg", "release",
            "namespace", "state", "first_seen_s", "last_seen_s", "ended_s")
JOB_GPU_KEYS = ("job_id", "node", "gpu_uuid")


def _claim_statement(dialect: Dialect) -> Prepared:
    stmt = insert_for(dialect, batches_t).on_conflict_do_nothing()
    if dialect.name == "postgresql":
        stmt = stmt.returning(batches_t.c.node, batches_t.c.boot_id, batches_t.c.seq)
    return Prepared.compile(stmt, dialect, BATCH_KEYS)


def _claim(conn: Connection, batches: list[BatchIn], now_s: float) -> set[Identity]:
    """Insert each batch's identity; the ones inserted now (not before) are this transaction's to apply."""
    prepared = STATEMENTS.get(conn.dialect, "claim", _claim_statement)
    rows = [prepared.params({"node": b.node, "boot_id": b.boot_id, "seq": b.seq, "received_at_s": now_s,
                             "interval_count": len(b.intervals), "content_hash": b.content_hash()}) for b in batches]
    cursor = conn.connection.cursor()
    try:
        with driver_errors(conn, prepared.sql):
            return _claimed_rows(conn.dialect, cursor, prepared.sql, batches, rows)
    finally:
        cursor.close()


def _claimed_rows(dialect: Dialect, cursor: Any, sql: str, batches: list[BatchIn], rows: list[Any]) -> set[Identity]:
    claimed: set[Identity] = set()
    if dialect.name == "postgresql":  # pipelined, one round trip; RETURNING names the new ones
        cursor.executemany(sql, rows, returning=True)
        while True:
            claimed.update((node, boot_id, seq) for node, boot_id, seq in cursor.fetchall())
            if not cursor.nextset():
                return claimed
    for batch, row in zip(batches, rows, strict=True):  # SQLite, in-process: a row count per insert is cheap
        cursor.execute(sql, row)
        if cursor.rowcount == 1:
            claimed.add(identity(batch))
    return claimed


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


def _rollup_statement(dialect: Dialect) -> Prepared:
    stmt = insert_for(dialect, hours_t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "hour_s", "datacenter", "gpu_model"],
        set_={name: hours_t.c[name] + stmt.excluded[name] for name in ROLLUP_SUMS},
    )
    return Prepared.compile(stmt, dialect, ROLLUP_KEYS)


def _write_rollups(conn: Connection, batches: list[BatchIn]) -> None:
    rows = [
        {"job_id": job, "hour_s": hour, "datacenter": dc, "gpu_model": model, **dict(zip(ROLLUP_SUMS, values, strict=True))}
        for (job, hour, dc, model), values in sorted(rollup(batches).items())
    ]
    STATEMENTS.get(conn.dialect, "rollups", _rollup_statement).run_many(conn, rows)


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
                    "namespace": info.namespace if info else None,
                    "release": info.release if info else None,
                    "state": RUNNING, "first_seen_s": i.start_s, "last_seen_s": i.end_s, "ended_s": None,
                }
            row["first_seen_s"] = min(cast(float, row["first_seen_s"]), i.start_s)
            row["last_seen_s"] = max(cast(float, row["last_seen_s"]), i.end_s)
    return [rows[key] for key in sorted(rows)]


def _job_statement(dialect: Dialect) -> Prepared:
    stmt = insert_for(dialect, jobs_t)
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
            "namespace": func.coalesce(jobs_t.c.namespace, new.namespace),
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
    return Prepared.compile(stmt, dialect, JOB_KEYS)


def _job_gpu_statement(dialect: Dialect) -> Prepared:
    return Prepared.compile(insert_for(dialect, job_gpus_t).on_conflict_do_nothing(), dialect, JOB_GPU_KEYS)


def _write_jobs(conn: Connection, batches: list[BatchIn], seen: SeenGpus | None) -> set[tuple[str, str, str]]:
    """Jobs and the GPUs they ran on; returns the (job, node, GPU) triples, for ``seen`` after commit."""
    STATEMENTS.get(conn.dialect, "jobs", _job_statement).run_many(conn, _job_rows(batches))
    gpus = {(job_key(b.cluster, i.job), b.node, i.gpu_uuid) for b in batches for i in b.intervals}
    new = sorted(gpus if seen is None else seen.unseen(gpus))
    STATEMENTS.get(conn.dialect, "job_gpus", _job_gpu_statement).run_many(
        conn, ({"job_id": job, "node": node, "gpu_uuid": uuid} for job, node, uuid in new))
    pods = {(job_key(b.cluster, j.id), pod) for b in batches for j in b.jobs for pod in j.pods}
    if pods:
        conn.execute(insert_for(conn, job_pods_t).on_conflict_do_nothing(),
                     [{"job_id": job, "pod": pod} for job, pod in sorted(pods)])
    return gpus
