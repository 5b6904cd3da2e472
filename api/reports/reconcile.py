"""``gpuledger reconcile --sacct``: gpuledger's GPU-hours beside Slurm's accounting.

sacct's allocated GPU-hours are AllocTRES ``gres/gpu`` × Elapsed. Input is ``sacct --json``
(Slurm 21.08 and newer; numbers may come wrapped as ``{"set", "number"}`` from 23.02 on) or
its parsable output with a header line (``sacct -P -X --format=JobIDRaw,JobID,Cluster,User,
Account,Partition,State,Start,End,ElapsedRaw,AllocTRES,NodeList``). Job steps are left out:
they are inside their job's allocation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

REQUIRED_COLUMNS = ("JobIDRaw", "ElapsedRaw", "AllocTRES")


class SacctError(ValueError):
    """The input is neither sacct's JSON nor its parsable output; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class SacctJob:
    job_id: str  # JobIDRaw: the id the prolog, the agent and gpuledger use
    display_id: str  # JobID: 1234_5 for an array task
    cluster: str | None
    user: str | None
    account: str | None
    partition: str | None
    state: str | None
    start_s: float | None
    end_s: float | None
    elapsed_s: float
    alloc_gpus: int
    nodes: str | None

    @property
    def gpu_hours(self) -> float:
        return self.alloc_gpus * self.elapsed_s / 3600


def _number(value: Any) -> float | None:
    """A number, or Slurm 23.02+'s ``{"set": true, "number": n}``."""
    if isinstance(value, dict):
        return _number(value.get("number")) if value.get("set", True) and not value.get("infinite") else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _gpus_json(tres: list[dict[str, Any]]) -> int:
    return sum(int(_number(t.get("count")) or 0) for t in tres if t.get("type") == "gres" and t.get("name") == "gpu")


def _state(value: Any) -> str | None:
    current = value.get("current") if isinstance(value, dict) else value
    if isinstance(current, list):
        return ",".join(str(s) for s in current) or None
    return None if current is None else str(current)


def _from_json(data: dict[str, Any]) -> list[SacctJob]:
    if not isinstance(data.get("jobs"), list):
        raise SacctError("sacct --json input has no `jobs` list")
    jobs = []
    for raw in data["jobs"]:
        array, time_ = raw.get("array") or {}, raw.get("time") or {}
        task = _number(array.get("task_id"))
        array_job = _number(array.get("job_id"))
        display = f"{int(array_job)}_{int(task)}" if array_job and task is not None else str(raw.get("job_id"))
        start, end = _number(time_.get("start")), _number(time_.get("end"))
        jobs.append(SacctJob(
            job_id=str(raw.get("job_id")), display_id=display, cluster=raw.get("cluster"), user=raw.get("user"),
            account=raw.get("account"), partition=raw.get("partition"), state=_state(raw.get("state")),
            start_s=start or None, end_s=end or None, elapsed_s=_number(time_.get("elapsed")) or 0.0,
            alloc_gpus=_gpus_json((raw.get("tres") or {}).get("allocated") or []), nodes=raw.get("nodes"),
        ))
    return jobs


def _gpus_tres(text: str) -> int:
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu" and value.isdigit():
            return int(value)
    return 0


def _time(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None  # Unknown, None


def _from_parsable(text: str) -> list[SacctJob]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("|")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SacctError(f"sacct parsable output: header {lines[0]!r} lacks {', '.join(missing)} "
                         f"(run sacct -P --format={','.join(REQUIRED_COLUMNS)},...)")
    jobs = []
    for number, line in enumerate(lines[1:], start=2):
        row = dict(zip(header, line.split("|"), strict=False))
        if "." in row["JobIDRaw"]:
            continue  # a step
        if not row["ElapsedRaw"].isdigit():
            raise SacctError(f"sacct line {number}: ElapsedRaw = {row['ElapsedRaw']!r}: expected whole seconds")
        jobs.append(SacctJob(
            job_id=row["JobIDRaw"], display_id=row.get("JobID") or row["JobIDRaw"], cluster=row.get("Cluster") or None,
            user=row.get("User") or None, account=row.get("Account") or None, partition=row.get("Partition") or None,
            state=row.get("State") or None, start_s=_time(row.get("Start")), end_s=_time(row.get("End")),
            elapsed_s=float(row["ElapsedRaw"]), alloc_gpus=_gpus_tres(row["AllocTRES"]), nodes=row.get("NodeList") or None,
        ))
    return jobs


def parse_sacct(text: str) -> list[SacctJob]:
    """sacct's JSON or parsable output; jobs without GPUs are left out."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            jobs = _from_json(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise SacctError(f"sacct --json input is not valid JSON: {exc}") from exc
    else:
        jobs = _from_parsable(text)
    return [job for job in jobs if job.alloc_gpus > 0]


def _ts(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def cause(job: SacctJob, report: dict[str, Any] | None, tolerance_s_per_gpu: float, records_from_s: float | None) -> str:
    """Why gpuledger's GPU-hours differ from sacct's, or ``ok`` within the tolerance."""
    if report is None:
        if records_from_s is not None and job.end_s is not None and job.end_s < records_from_s:
            return "outside gpuledger's records: the job ended before its oldest job (retention window, or not yet deployed)"
        return f"not in gpuledger: no agent data and no prolog event (agent not running on {job.nodes or 'its nodes'}?)"
    diff_s = report["gpu_hours"] * 3600 - job.alloc_gpus * job.elapsed_s
    if abs(diff_s) <= tolerance_s_per_gpu * job.alloc_gpus:
        return "ok"
    if report.get("gpus", 0) < job.alloc_gpus:
        return (f"only {report.get('gpus', 0)} of {job.alloc_gpus} allocated GPUs have data: agent not running on "
                f"some of {job.nodes or 'its nodes'}, or GPUs idle-attributed (no job mapping: check the prolog "
                "and --job-mapping-dir)")
    if diff_s < 0:
        last_s = _ts(report.get("last_seen_at"))
        gap = f" (last data {job.end_s - last_s:.0f} s before Slurm's end)" if last_s and job.end_s and last_s < job.end_s else ""
        return f"data missing for part of the job: agent down or started late, or GPUs idle-attributed{gap}"
    return "more than allocated: GPUs attributed outside the allocation (stale job-mapping file, epilog not run?) or shared"


def reconcile_rows(jobs: list[SacctJob], reports: dict[str, dict[str, Any] | None],
                   tolerance_s_per_gpu: float, records_from_s: float | None) -> list[dict[str, Any]]:
    """One row per sacct job; ``reports`` by JobIDRaw, None for a job gpuledger does not have."""
    rows = []
    for job in jobs:
        report = reports.get(job.job_id)
        ours = None if report is None else report["gpu_hours"]
        rows.append({
            "job": job.display_id, "job_id_raw": job.job_id, "user": job.user, "account": job.account,
            "state": job.state, "alloc_gpus": job.alloc_gpus, "elapsed_s": job.elapsed_s,
            "sacct_gpu_hours": job.gpu_hours, "gpuledger_gpu_hours": ours,
            "difference_gpu_hours": None if ours is None else ours - job.gpu_hours,
            "cause": cause(job, report, tolerance_s_per_gpu, records_from_s),
        })
    return rows


def render_rows(rows: list[dict[str, Any]]) -> str:
    header = (f"{'job':<14} {'user':<10} {'account':<10} {'gpus':>4} {'sacct GPU-h':>12} {'gpuledger GPU-h':>15} "
              f"{'diff GPU-h':>11}  cause")
    lines = [header]
    for row in rows:
        ours = "-" if row["gpuledger_gpu_hours"] is None else f"{row['gpuledger_gpu_hours']:.4f}"
        diff = "-" if row["difference_gpu_hours"] is None else f"{row['difference_gpu_hours']:+.4f}"
        lines.append(f"{row['job']:<14} {row['user'] or '-':<10} {row['account'] or '-':<10} {row['alloc_gpus']:>4} "
                     f"{row['sacct_gpu_hours']:>12.4f} {ours:>15} {diff:>11}  {row['cause']}")
    differing = sum(row["cause"] != "ok" for row in rows)
    lines.append(f"{len(rows)} jobs with GPUs, {differing} differ beyond the tolerance")
    return "\n".join(lines)
