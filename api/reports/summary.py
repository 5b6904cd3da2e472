"""A job's cost in a few lines of text, as ``seff`` shows efficiency: what the Slurm epilog
appends to the job's output file and ``gpuledger summary JOB`` prints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from api.accounting.network import network_report
from api.accounting.rates import LedgerConfig
from api.queries import jobs as reads
from api.reports.job import build_reports, now

RULE = "-" * 24
HEADER = f"{RULE} gpuledger job summary {RULE}"
FOOTER = "-" * len(HEADER)


def job_report(engine: Engine, config: LedgerConfig, job: dict[str, Any]) -> dict[str, Any]:
    """The job's report with its network verdict and the time it was computed."""
    (report,) = build_reports(engine, [job], config)
    network = network_report(reads.network(engine, job["job_id"]))
    return {**report, "network": network, "network_congestion": None if network is None else network["congestion"],
            "as_of": now()}


def _time(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(start: datetime | str | None, end: datetime | str | None) -> str:
    if start is None or end is None:
        return ""
    start_dt = datetime.fromisoformat(start.replace("Z", "+00:00")) if isinstance(start, str) else start
    end_dt = datetime.fromisoformat(end.replace("Z", "+00:00")) if isinstance(end, str) else end
    seconds = max(round((end_dt - start_dt).total_seconds()), 0)
    return f" ({seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d})"


def _who(report: dict[str, Any], scheduler: dict[str, Any]) -> str:
    parts = [f"user {report.get('user') or '-'}", f"account {report.get('account') or '-'}"]
    if scheduler.get("partition"):
        parts.append(f"partition {scheduler['partition']}")
    if scheduler.get("qos"):
        parts.append(f"QOS {scheduler['qos']}")
    return ", ".join(parts)


def _job_line(report: dict[str, Any], scheduler: dict[str, Any]) -> str:
    line = report["job_id"] + (f" ({report['name']})" if report.get("name") else "")
    if scheduler.get("array_job_id") and scheduler.get("array_task_id") is not None:
        line += f", array {scheduler['array_job_id']}_{scheduler['array_task_id']}"
    if scheduler.get("het_job_id"):
        line += f", het job {scheduler['het_job_id']}+{scheduler.get('het_job_offset') or 0}"
    return line


def render_summary(report: dict[str, Any], page_url: str) -> str:
    """The block of text, ending with a newline; ``report`` as ``job_report`` or the API's JSON."""
    scheduler = report.get("scheduler") or {}
    gpu_hours, busy = report["gpu_hours"], report["busy_gpu_hours"]
    busy_share = f"{100 * busy / gpu_hours:.1f} %" if gpu_hours else "-"
    state = scheduler.get("state") or report["state"]
    if scheduler.get("exit_code"):
        state += f", exit code {scheduler['exit_code']}"
    started = scheduler.get("started_at") or report["started_at"]
    ended = scheduler.get("ended_at") or report.get("ended_at")
    allocated = f"{scheduler['alloc_gpus']} allocated, " if scheduler.get("alloc_gpus") is not None else ""
    lines = [
        HEADER,
        f"Job:             {_job_line(report, scheduler)}",
        f"Owner:           {_who(report, scheduler)}",
        f"State:           {state}",
        f"Time:            {_time(started)} to {_time(ended)}{_span(started, ended)}",
        f"GPUs:            {allocated}{report['gpus']} measured on {report['nodes']} node(s)",
        f"GPU-hours:       {gpu_hours:.4f}",
        f"GPU busy share:  {busy_share} ({busy:.4f} busy GPU-hours)",
        f"Energy:          {report['energy_kwh']:.4f} kWh (facility {report['facility_energy_kwh']:.4f} kWh)",
        f"Cost:            ${report['cost_usd']:.2f}",
        f"Emissions:       {report['co2e_kg']:.4f} kg CO2e",
        f"Network:         {report.get('network_congestion') or 'no NIC data'}",
        f"Report:          {page_url}",
        f"As of {_time(report.get('as_of'))}; data still in flight from the agents lands on the page within a minute.",
        FOOTER,
    ]
    return "\n".join(lines) + "\n"
