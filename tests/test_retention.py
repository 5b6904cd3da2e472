"""Tiered retention: after each prune (raw intervals at 2 days, minute rollups at 35) a job's
report is unchanged to the last bit and its series carries the same totals, on both backends;
on PostgreSQL whole day partitions go."""

import pytest
from sqlalchemy import func, select

from api.accounting.rates import LedgerConfig
from api.queries.jobs import get_job
from api.reports.job import build_reports
from api.reports.series import fine_window, gpu_series
from collector.ingest import apply_batch
from collector.lifecycle import end_silent_jobs
from collector.models import IngestedBatch, JobMinute, RawInterval
from collector.partitions import TIERS, ensure_partitions, partition_name
from collector.retention import prune
from collector.schemas import BatchIn
from tests.conftest import BACKENDS
from tests.test_ingest import batch, interval

DAY = 86400
T = 3600 * 490_000  # the job's last data (an hour boundary)
START = T - 3 * 3600 + 5  # 10 s intervals that cross minute and hour boundaries
NODES = ("node-a", "node-b")


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _intervals(node: str, gpu: int, first: int) -> list[dict]:
    """60 intervals of one GPU from START + 10 s × first; on node-b's GPU 1 one merged 150 s interval."""
    rows = []
    k = first
    while k < first + 60:
        width = 15 if (node, gpu, k) == ("node-b", 1, 300) else 1  # a spool-merged interval
        start, end = START + 10 * k, START + 10 * (k + width)
        method = "power_integrated" if (k + gpu) % 7 == 0 else "counter"
        rows.append(interval(uuid=f"{node}-GPU-{gpu}", gpu_index=gpu, start=start, end=end,
                             energy=(400.0 + gpu * 50 + k % 13) * (end - start), method=method))
        k += width
    return rows


def _ingest(engine) -> None:
    for seq, first in enumerate(range(0, 3 * 360, 60)):
        for node in NODES:
            body = batch(seq=seq, node=node, intervals=_intervals(node, 0, first) + _intervals(node, 1, first))
            apply_batch(engine, BatchIn.model_validate(body), START + 10 * (first + 60) + 1)
    end_silent_jobs(engine, T + 600, 300)


def _series(engine, config, now_s: float, step_s: int) -> tuple[str, dict]:
    job = get_job(engine, "c1/1")
    window = fine_window(job, now_s, config.retention.raw_days, step_s, config.retention.minute_days)
    return window.tier if window.fine_from_s is not None else "hourly", gpu_series(engine, config, job, window)


def _approx(columns: dict) -> dict:
    return {name: pytest.approx(values, rel=1e-9, abs=1e-12) for name, values in columns.items()}


@BACKENDS
def test_every_prune_keeps_the_report_and_the_series_totals(engine):
    ensure_partitions(engine, T - DAY, ahead_days=2)  # PostgreSQL: the job's days get partitions
    _ingest(engine)
    config = LedgerConfig()  # raw 2 days, minutes 35 days
    report = build_reports(engine, [get_job(engine, "c1/1")], config)
    assert report[0]["gpu_hours"] == pytest.approx(12.0, rel=1e-12)
    before = {step: _series(engine, config, T + 60, step) for step in (60, 300)}
    assert {step: tier for step, (tier, _) in before.items()} == {60: "raw", 300: "raw"}
    raw_rows = count(engine, RawInterval)
    assert raw_rows == 4 * 1080 - 14

    pruned = prune(engine, T + 3 * DAY, config.retention.raw_days, config.retention.minute_days)

    assert count(engine, RawInterval) == 0 and count(engine, IngestedBatch.__table__) == 0
    assert count(engine, JobMinute.__table__) > 0
    if engine.dialect.name == "postgresql":
        assert partition_name(TIERS[0], T // DAY * DAY) in pruned.dropped and pruned.intervals == 0
    else:
        assert pruned.intervals == raw_rows and pruned.chunks >= 3
    assert build_reports(engine, [get_job(engine, "c1/1")], config) == report
    for step, (_, columns) in before.items():
        tier, after = _series(engine, config, T + 3 * DAY, step)
        assert tier == "minute"
        assert after == _approx(columns)

    pruned = prune(engine, T + 40 * DAY, config.retention.raw_days, config.retention.minute_days)

    assert count(engine, JobMinute.__table__) == 0
    assert build_reports(engine, [get_job(engine, "c1/1")], config) == report
    tier, hourly = _series(engine, config, T + 40 * DAY, 300)
    assert tier == "hourly" and len(hourly["start_s"]) == 4  # the job touches four hours
    fine = before[300][1]
    for name in ("gpu_energy_kwh", "cost_usd", "co2e_kg"):
        for hour_start, value in zip(hourly["start_s"], hourly[name], strict=True):
            hour = hour_start // 3600 * 3600
            in_hour = [v for s, v in zip(fine["start_s"], fine[name], strict=True) if hour <= s < hour + 3600]
            assert value == pytest.approx(sum(in_hour), rel=1e-9)
    assert hourly["cumulative_cost_usd"][-1] == pytest.approx(report[0]["cost_usd"], rel=1e-12)
    assert hourly["cumulative_co2e_kg"][-1] == pytest.approx(report[0]["co2e_kg"], rel=1e-12)


@BACKENDS
def test_prune_in_chunks_keeps_what_is_recent(engine):
    _ingest(engine)
    kept_from = START + 10 * 600  # rows ending after this stay
    expected = count(engine, RawInterval) - sum(
        1 for node in NODES for gpu in (0, 1) for k in range(0, 1080, 60)
        for i in _intervals(node, gpu, k) if i["end_s"] < kept_from)

    pruned = prune(engine, kept_from + 2 * DAY, raw_days=2, minute_days=35)

    assert count(engine, RawInterval) == expected
    assert pruned.intervals == 4 * 1080 - 14 - expected
    assert pruned.longest_chunk_s > 0
