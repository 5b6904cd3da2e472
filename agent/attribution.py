"""Which job owns each GPU, in DESIGN.md's order of precedence.

1. a dcgm-exporter compatible job-mapping directory (one file per GPU index, or
   ``<gpu>.<gpu_instance>`` for MIG, each line a job id), written by Slurm prolog/epilog;
2. the processes on the GPU: ``/proc/<pid>/environ`` then ``/proc/<pid>/cgroup``;
3. otherwise nobody: the GPU is unallocated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.gpu import GpuSample


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job as the node sees it; ``job_id`` is local to the cluster."""

    job_id: str
    name: str | None = None
    user: str | None = None
    account: str | None = None
    budget_usd: float | None = None
    budget_co2e_kg: float | None = None
    release: str | None = None  # GPULEDGER_RELEASE: groups jobs into a model card (e.g. llama-2)


Owners = tuple[JobRef, ...]  # several owners share the GPU equally; empty: unallocated


class OwnerSource(Protocol):
    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]: ...


_MAPPING_NAME = re.compile(r"^(\d+)(?:\.(\d+))?$")


class JobMappingDir:
    """dcgm-exporter's HPC job mapping, re-read at every collection; missing dir = no mapping."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        found: dict[int, list[JobRef]] = {}
        try:
            entries = list(self.root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return {}
        for path in sorted(entries):
            match = _MAPPING_NAME.match(path.name)
            if not match:
                continue
            try:
                lines = path.read_text().split()
            except OSError:
                continue  # removed by the epilog between listing and reading
            jobs = found.setdefault(int(match.group(1)), [])
            jobs.extend(JobRef(job_id) for job_id in lines if JobRef(job_id) not in jobs)
        return {index: tuple(jobs) for index, jobs in found.items() if jobs}


_SLURM_CGROUP = re.compile(r"/job_(\d+)(?:/|$)")
_KUBE_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def job_from_environ(env: Mapping[str, str]) -> JobRef | None:
    """A job from a process environment: GPULEDGER_JOB_ID, SLURM_JOB_ID, TORCHELASTIC_RUN_ID.

    Name and account come from the same family of variables as the id, never mixed.
    """
    user = env.get("GPULEDGER_JOB_USER") or env.get("SLURM_JOB_USER") or env.get("USER")
    budget = (_amount(env, "GPULEDGER_BUDGET_USD"), _amount(env, "GPULEDGER_BUDGET_CO2E_KG"))
    release = (env.get("GPULEDGER_RELEASE") or "").strip()[:256] or None
    if job_id := env.get("GPULEDGER_JOB_ID"):
        return JobRef(job_id, env.get("GPULEDGER_JOB_NAME"), user, env.get("GPULEDGER_JOB_ACCOUNT"), *budget, release)
    if job_id := env.get("SLURM_JOB_ID"):
        return JobRef(job_id, env.get("SLURM_JOB_NAME"), user, env.get("SLURM_JOB_ACCOUNT"), *budget, release)
    if job_id := env.get("TORCHELASTIC_RUN_ID"):
        return JobRef(job_id, None, user, None, *budget, release)
    return None


def _amount(env: Mapping[str, str], name: str) -> float | None:
    """A budget from the environment; anything but a finite number >= 0 is ignored."""
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def job_from_cgroup(text: str) -> JobRef | None:
    """A job from ``/proc/<pid>/cgroup``: Slurm's ``job_<id>`` or a Kubernetes pod uid."""
    if match := _SLURM_CGROUP.search(text):
        return JobRef(match.group(1))
    if match := _KUBE_POD.search(text):
        return JobRef("pod-" + match.group(1).replace("_", "-"))
    return None


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


class ProcessOwners:
    """Owners from the processes NVML lists on each GPU (host PIDs), through ``/proc``."""

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.proc_root = Path(proc_root)
        self._cache: dict[int, JobRef | None] = {}

    def job_of_pid(self, pid: int) -> JobRef | None:
        job = self._cache.get(pid)
        if job is None:  # not cached, or not a job yet (read between fork and exec): read again
            job = self._cache[pid] = self._read_job(pid)
        return job

    def _read_job(self, pid: int) -> JobRef | None:
        base = self.proc_root / str(pid)
        try:
            job = job_from_environ(parse_environ((base / "environ").read_bytes()))
        except OSError:
            job = None  # gone, or another user's process without CAP_SYS_PTRACE
        if job is None:
            try:
                job = job_from_cgroup((base / "cgroup").read_text())
            except OSError:
                job = None
        return job

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        result: dict[int, Owners] = {}
        live: set[int] = set()
        for sample in samples:
            live.update(sample.pids)
            jobs = {job for pid in sample.pids if (job := self.job_of_pid(pid)) is not None}
            if jobs:
                result[sample.index] = tuple(sorted(jobs, key=lambda j: j.job_id))
        for pid in self._cache.keys() - live:  # a PID that left may be reused
            del self._cache[pid]
        return result


class Attributor:
    """Asks each source in order; the first that names owners for a GPU wins."""

    def __init__(self, sources: Iterable[OwnerSource]) -> None:
        self.sources = list(sources)

    def owners(self, samples: list[GpuSample]) -> dict[int, Owners]:
        result: dict[int, Owners] = {}
        known: dict[str, JobRef] = {}  # the fullest metadata any source has for a job
        for source in self.sources:
            for index, jobs in source.owners(samples).items():
                result.setdefault(index, jobs)
                for job in jobs:
                    if job.job_id not in known or _richness(job) > _richness(known[job.job_id]):
                        known[job.job_id] = job
        return {index: tuple(known[j.job_id] for j in jobs) for index, jobs in result.items()}


def _richness(job: JobRef) -> int:
    return sum(value is not None for value in (job.name, job.user, job.account, job.budget_usd, job.budget_co2e_kg, job.release))
