"""Schemathesis hooks for tests/test_fuzz.py (loaded with SCHEMATHESIS_HOOKS=tests.fuzz_hooks).

``rejections_store_nothing``: a request the server refuses (4xx) leaves the database as it
was just before that request: every table's row count, the rollups' GPU-seconds and energy,
and every job's metadata. Requests are sequential (one worker) and nothing else writes, so the
state after one response is the state before the next request: one snapshot per response.
The database is the one in GPULEDGER_FUZZ_DB (the server under test)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import schemathesis
from sqlalchemy import Engine, func, inspect, literal, select, table, union_all

from collector.db import make_engine
from collector.models import Job, JobHour

_state: dict[str, Any] = {}


def _engine() -> Engine:
    if "engine" not in _state:
        _state["engine"] = make_engine(os.environ["GPULEDGER_FUZZ_DB"])
    return _state["engine"]


_tables: dict[str, list[str]] = {}


def snapshot(engine: Engine) -> dict[str, Any]:
    url = str(engine.url)
    if url not in _tables:
        _tables[url] = [name for name in inspect(engine).get_table_names() if name != "alembic_version"]
    counts_query = union_all(*[select(literal(name).label("t"), func.count().label("n")).select_from(table(name))
                               for name in _tables[url]])
    with engine.connect() as conn:
        counts = {str(name): int(n) for name, n in conn.execute(counts_query).all()}
        hours = JobHour.__table__
        sums = tuple(conn.execute(select(func.sum(hours.c.gpu_seconds), func.sum(hours.c.energy_j))).one())
        jobs = Job.__table__
        rows = conn.execute(select(jobs).order_by(jobs.c.job_id)).all()
    digest = hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()
    return counts | {"rollup_sums": sums, "jobs_digest": digest}


@schemathesis.check
def rejections_store_nothing(ctx: Any, response: Any, case: Any) -> bool | None:
    before = _state.get("last")
    after = _state["last"] = snapshot(_engine())
    if before is None or not 400 <= response.status_code < 500:
        return None
    if after != before:
        changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
        raise AssertionError(f"a request answered {response.status_code} changed the database: {changed}")
    return True


if "GPULEDGER_FUZZ_DB" in os.environ:
    _state["last"] = snapshot(_engine())  # before the first request
