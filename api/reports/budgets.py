"""``/metrics`` for Prometheus: a collector that reads the ledger at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, or_, select

from api.accounting.rates import LedgerConfig
from api.reports.job import build_reports
from collector.models import RUNNING, Job

jobs_t = Job.__table__


class BudgetCollector(Collector):
    """Running jobs that carry a budget: spend, budget, and whether they are over it."""

    def __init__(self, engine: Engine, config: LedgerConfig) -> None:
        self.engine, self.config = engine, config

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["job_id", "account", "cluster"]
        over = GaugeMetricFamily("gpuledger_job_over_budget", "1 when the job's cost or CO2e exceeds its budget", labels=labels)
        forecast_over = GaugeMetricFamily(
            "gpuledger_job_forecast_over_budget", "1 when the job is forecast to end over its budget", labels=labels
        )
        budget = GaugeMetricFamily("gpuledger_job_budget_dollars", "The job's budget in USD", labels=labels)
        query = select(jobs_t).where(
            jobs_t.c.state == RUNNING, or_(jobs_t.c.budget_usd.is_not(None), jobs_t.c.budget_co2e_kg.is_not(None))
        )
        with self.engine.connect() as conn:
            jobs = [dict(row._mapping) for row in conn.execute(query)]
        for report in build_reports(self.engine, jobs, self.config) if jobs else []:
            values = [report["job_id"], report["account"] or "", report["cluster"]]
            over.add_metric(values, float(report["budget"]["over_budget"]))
            forecast_over.add_metric(values, float(report["budget"]["forecast_over_budget"]))
            if report["budget"]["budget_usd"] is not None:
                budget.add_metric(values, report["budget"]["budget_usd"])
        yield from (over, forecast_over, budget)
