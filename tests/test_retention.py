"""Retention drops old raw intervals and batch identities; reports, built on rollups, don't change."""

import time

from sqlalchemy import func, select

from api.accounting.rates import LedgerConfig
from api.queries.jobs import get_job
from api.reports.job import build_reports
from collector.ingest import apply_batch
from collector.models import GpuInterval, IngestedBatch
from collector.retention import prune
from collector.schemas import BatchIn
from tests.conftest import BACKENDS
from tests.test_ingest import batch, interval

DAY = 86400.0


def count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


@BACKENDS
def test_retention_keeps_reports_exact(engine):
    now = time.time()
    for seq, age_days in enumerate((45, 40, 31, 29, 1)):
        start = now - age_days * DAY
        body = batch(seq=seq, intervals=[interval(start=start, end=start + 10, energy=1000.0 + seq)])
        apply_batch(engine, BatchIn.model_validate(body), start + 20)
    config = LedgerConfig()
    before = build_reports(engine, [get_job(engine, "c1/1")], config)
    assert (count(engine, GpuInterval), count(engine, IngestedBatch)) == (5, 5)

    pruned = prune(engine, now, raw_days=30)

    assert (pruned.intervals, pruned.batches) == (3, 3)
    assert (count(engine, GpuInterval), count(engine, IngestedBatch)) == (2, 2)
    assert build_reports(engine, [get_job(engine, "c1/1")], config) == before
    assert before[0]["gpu_hours"] == 50 / 3600 and before[0]["energy_kwh"] == 5010 / 3.6e6
