"""Cut samples into per (GPU, job, energy method) intervals between two pushes.

The step from one sample to the next belongs to whoever owned the GPU at the earlier
sample: a job that starts at t owns [t, t_next), one that ends at t owns nothing after t.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.attribution import JobRef, Owners
from agent.energy import EnergyStep
from agent.gpu import GpuInfo


@dataclass(slots=True)
class OpenInterval:
    gpu: GpuInfo
    job: JobRef | None
    method: str
    start_s: float
    end_s: float
    gpu_seconds: float = 0.0
    busy_gpu_seconds: float = 0.0
    energy_j: float = 0.0
    max_memory_used_bytes: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "gpu_uuid": self.gpu.uuid,
            "gpu_index": self.gpu.index,
            "gpu_model": self.gpu.name,
            "job": None if self.job is None else self.job.job_id,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "gpu_seconds": self.gpu_seconds,
            "busy_gpu_seconds": self.busy_gpu_seconds,
            "energy_j": self.energy_j,
            "energy_method": self.method,
            "max_memory_used_bytes": self.max_memory_used_bytes,
        }


@dataclass(slots=True)
class IntervalCutter:
    gpus: dict[int, GpuInfo]
    _open: dict[tuple[int, str | None, str], OpenInterval] = field(default_factory=dict)
    _jobs: dict[str, JobRef] = field(default_factory=dict)

    def add(
        self,
        index: int,
        owners: Owners,
        start_s: float,
        step: EnergyStep,
        util_gpu_pct: int | None,
        memory_used_bytes: int | None,
    ) -> None:
        """Account one step of one GPU to its owners, shared equally."""
        share = 1 / len(owners) if owners else 1.0
        for job in owners or (None,):
            key = (index, None if job is None else job.job_id, step.method)
            interval = self._open.get(key)
            if interval is None:
                interval = OpenInterval(self.gpus[index], job, step.method, start_s, start_s)
                self._open[key] = interval
            if job is not None:
                self._jobs[job.job_id] = job
            interval.end_s = start_s + step.seconds
            interval.gpu_seconds += step.seconds * share
            interval.energy_j += step.energy_j * share
            if util_gpu_pct is not None:
                interval.busy_gpu_seconds += step.seconds * share * util_gpu_pct / 100
            if memory_used_bytes is not None:
                interval.max_memory_used_bytes = max(interval.max_memory_used_bytes or 0, memory_used_bytes)

    def cut(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Close every open interval; return (intervals, jobs) in wire form."""
        intervals = [i.to_wire() for i in self._open.values() if i.gpu_seconds > 0]
        jobs = [
            {"id": j.job_id, "name": j.name, "user": j.user, "account": j.account}
            | ({"budget_usd": j.budget_usd} if j.budget_usd is not None else {})
            | ({"budget_co2e_kg": j.budget_co2e_kg} if j.budget_co2e_kg is not None else {})
            | ({"release": j.release} if j.release is not None else {})
            for j in self._jobs.values()
        ]
        self._open.clear()
        self._jobs.clear()
        return intervals, jobs
