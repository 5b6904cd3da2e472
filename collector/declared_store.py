"""Store declared usage: its rows (one per identity, replaced on re-import), the jobs, and the
hourly rollups derived from the rows, in one transaction. Reports read only the rollups, so
declared usage is priced exactly like measured usage."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, case, delete, func, select
from sqlalchemy.engine import Connection

from collector.db import insert_for
from collector.declared import DeclaredRow
from collector.models import ENDED, DeclaredUsage, Job, JobHour
from collector.pieces import split_by_hour

declared_t, jobs_t, hours_t = DeclaredUsage.__table__, Job.__table__, JobHour.__table__
DECLARED, TDP_ESTIMATE, SOURCE = "declared", "tdp_estimate", "declared"
VALUES = ("datacenter", "gpu_model", "start_s", "end_s", "gpu_seconds", "energy_j", "energy_source", "power_w")


class MeasuredJobConflict(ValueError):
    """Declared usage for a job the agents measure: the two would be summed."""


@dataclass
class ImportResult:
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    jobs: list[str] = field(default_factory=list)
    energy_sources: dict[str, int] = field(default_factory=lambda: {DECLARED: 0, TDP_ESTIMATE: 0})


def _record(row: DeclaredRow, tdp_w: Callable[[str], float], now_s: float) -> dict[str, object]:
    gpu_seconds = row.gpu_seconds
    if row.energy_kwh is not None:
        energy_j, source, power_w = row.energy_kwh * 3.6e6, DECLARED, None
    else:
        power_w = row.power_w if row.power_w is not None else tdp_w(row.gpu_model)
        energy_j, source = gpu_seconds * power_w, TDP_ESTIMATE
    return {"row_key": row.key, "job_id": row.job_id, "datacenter": row.datacenter, "gpu_model": row.gpu_model,
            "start_s": row.start.timestamp(), "end_s": row.end.timestamp(), "gpu_seconds": gpu_seconds,
            "energy_j": energy_j, "energy_source": source, "power_w": power_w, "imported_at_s": now_s}


def store_declared(engine: Engine, rows: list[DeclaredRow], tdp_w: Callable[[str], float], now_s: float) -> ImportResult:
    """Upsert ``rows``; ``tdp_w(gpu_model)`` gives the power of the estimate where a row has no energy."""
    records = {r.key: _record(r, tdp_w, now_s) for r in rows}  # the last of duplicate rows wins
    result = ImportResult(rows=len(rows))
    job_ids = sorted({str(rec["job_id"]) for rec in records.values()})
    with engine.begin() as conn:
        measured = [j for (j,) in conn.execute(
            select(jobs_t.c.job_id).where(jobs_t.c.job_id.in_(job_ids), jobs_t.c.source != SOURCE))]
        if measured:
            raise MeasuredJobConflict(
                f"job(s) {', '.join(measured[:5])} are measured by agents: declared usage would be added to "
                "their measurements; import it under another job id")
        before = {r.row_key: dict(r._mapping) for r in conn.execute(
            select(declared_t).where(declared_t.c.row_key.in_(list(records))))}
        for key, rec in records.items():
            old = before.get(key)
            if old is None:
                result.added += 1
            elif all(old[name] == rec[name] for name in VALUES):
                result.unchanged += 1
            else:
                result.updated += 1
            result.energy_sources[str(rec["energy_source"])] += 1
        stmt = insert_for(conn, declared_t)
        replaced = {n: stmt.excluded[n] for n in (*VALUES, "imported_at_s")}
        stmt = stmt.on_conflict_do_update(index_elements=["row_key"], set_=replaced)
        conn.execute(stmt, list(records.values()))
        _write_jobs(conn, rows)
        _rebuild_rollups(conn, job_ids)
    result.jobs = job_ids
    return result


def _write_jobs(conn: Connection, rows: list[DeclaredRow]) -> None:
    meta: dict[str, dict[str, object]] = {}
    for r in rows:
        row = meta.setdefault(r.job_id, {"job_id": r.job_id, "cluster": r.cluster, "local_id": r.job, "source": SOURCE,
                                         "state": ENDED, "first_seen_s": r.start.timestamp(), "last_seen_s": r.end.timestamp()})
        for name in ("name", "user", "account", "release"):
            if getattr(r, name) is not None:
                row[name] = getattr(r, name)
    records = [{"name": None, "user": None, "account": None, "release": None, **m} for m in meta.values()]
    for rec in records:
        rec["ended_s"] = rec["last_seen_s"]
    stmt = insert_for(conn, jobs_t)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(index_elements=["job_id"], set_={
        **{n: func.coalesce(new[n], jobs_t.c[n]) for n in ("name", "user", "account", "release")},
    })
    conn.execute(stmt, records)
    span = (select(declared_t.c.job_id, func.min(declared_t.c.start_s).label("first"), func.max(declared_t.c.end_s).label("last"))
            .where(declared_t.c.job_id.in_(list(meta))).group_by(declared_t.c.job_id))
    for job_id, first, last in conn.execute(span).all():
        conn.execute(jobs_t.update().where(jobs_t.c.job_id == job_id).values(
            first_seen_s=first, last_seen_s=last, ended_s=case((jobs_t.c.state == ENDED, last), else_=jobs_t.c.ended_s)))


def _rebuild_rollups(conn: Connection, job_ids: list[str]) -> None:
    """The jobs' hourly rollups, derived again from all their declared rows."""
    sums: dict[tuple[str, int, str, str], list[float]] = defaultdict(lambda: [0.0] * 4)
    for rec in conn.execute(select(declared_t).where(declared_t.c.job_id.in_(job_ids))):
        declared = rec.energy_j if rec.energy_source == DECLARED else 0.0
        values = [rec.gpu_seconds, rec.energy_j, declared, rec.energy_j - declared]
        for hour, share in split_by_hour(rec.start_s, rec.end_s, values):
            acc = sums[(rec.job_id, hour, rec.datacenter, rec.gpu_model)]
            for i in range(4):
                acc[i] += share[i]
    conn.execute(delete(hours_t).where(hours_t.c.job_id.in_(job_ids)))
    if sums:
        conn.execute(hours_t.insert(), [
            {"job_id": job, "hour_s": hour, "datacenter": dc, "gpu_model": model, "gpu_seconds": v[0],
             "busy_gpu_seconds": 0.0, "energy_j": v[1], "energy_counter_j": 0.0, "energy_declared_j": v[2],
             "energy_estimated_j": v[3]}
            for (job, hour, dc, model), v in sorted(sums.items())
        ])
