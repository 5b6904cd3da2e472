"""Which job owns each GPU, in DESIGN.md's order of precedence.

1. a dcgm-exporter compatible job-mapping directory (one file per GPU index, or
   ``<gpu>.<gpu_instance>`` for MIG, each line a job id), written by Slurm prolog/epilog;
2. on Kubernetes, the kubelet's pod-resources API and the pods' owner labels
   (``agent.kubernetes.owners.KubernetesOwners``);
3. the processes on the GPU: ``/proc/<pid>/environ`` then ``/proc/<pid>/cgroup``;
4. otherwise nobody: the GPU is unallocated.
Each source is optional; ``agent/cli.py`` puts the configured ones in this order.

On a MIG-enabled GPU the owners are per GPU instance (``JobRef.gpu_instance``), and the
precedence holds per instance. How a GPU is shared among its owners is ``agent.split``'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from agent.cgroup import kube_pod_uid, parse_cgroup, slurm_job_id
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
    namespace: str | None = None  # Kubernetes: the job's namespace, and its pods on this node
    pods: tuple[str, ...] = ()
    release: str | None = None  # GPULEDGER_RELEASE: groups jobs into a model card (e.g. llama-2)
    gpu_instance: int | None = None  # the MIG GPU instance it owns; None: the whole GPU


Owners = tuple[JobRef, ...]  # several owners share the GPU (agent.split); empty: unallocated


class OwnerSource(Protocol):
    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]: ...


_MAPPING_NAME = re.compile(r"^(\d+)(?:\.(\d+))?$")


class JobMappingDir:
    """dcgm-exporter's HPC job mapping, re-read at every collection; missing dir = no mapping.

    As dcgm-exporter (internal/pkg/transformation/hpc.go) keys it: ``<gpu>`` for a whole GPU,
    ``<gpu>.<gpu_instance>`` for a MIG instance, matched as the exact decimal strings (``02``
    is no GPU's name); an instance file applies only to a MIG-enabled GPU that has that
    instance. Directories and unreadable entries are skipped; each non-blank line is a job id.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        instances = {s.index: {i.gpu_instance for i in s.mig.instances} for s in samples if s.mig is not None}
        found: dict[int, list[JobRef]] = {}
        try:
            entries = list(self.root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return {}
        for path in sorted(entries):
            match = _MAPPING_NAME.match(path.name)
            if not match or any(str(int(part)) != part for part in match.groups() if part is not None):
                continue
            index = int(match.group(1))
            gpu_instance = None if match.group(2) is None else int(match.group(2))
            if gpu_instance is not None and gpu_instance not in instances.get(index, ()):
                continue  # no MIG on that GPU, or no such instance: dcgm-exporter ignores it too
            try:
                lines = [line.strip() for line in path.read_text().splitlines()]
            except OSError:
                continue  # removed by the epilog between listing and reading, or a directory
            jobs = found.setdefault(index, [])
            jobs.extend(job for job in (JobRef(j, gpu_instance=gpu_instance) for j in lines if j) if job not in jobs)
        return {index: tuple(jobs) for index, jobs in found.items() if jobs}




def job_from_environ(env: Mapping[str, str]) -> JobRef | None:
    """A job from a process environment: GPULEDGER_JOB_ID, SLURM_JOB_ID, TORCHELASTIC_RUN_ID.

    Name and account come from the same family of variables as the id, never mixed.
    """
    user = env.get("GPULEDGER_JOB_USER") or env.get("SLURM_JOB_USER") or env.get("USER")
    budget = (_amount(env, "GPULEDGER_BUDGET_USD"), _amount(env, "GPULEDGER_BUDGET_CO2E_KG"))
    release = (env.get("GPULEDGER_RELEASE") or "").strip()[:256] or None
    if job_id := env.get("GPULEDGER_JOB_ID"):
        return JobRef(job_id, env.get("GPULEDGER_JOB_NAME"), user, env.get("GPULEDGER_JOB_ACCOUNT"), *budget, release=release)
    if job_id := env.get("SLURM_JOB_ID"):
        return JobRef(job_id, env.get("SLURM_JOB_NAME"), user, env.get("SLURM_JOB_ACCOUNT"), *budget, release=release)
    if job_id := env.get("TORCHELASTIC_RUN_ID"):
        return JobRef(job_id, None, user, None, *budget, release=release)
    return None


def _amount(env: Mapping[str, str], name: str) -> float | None:
    """A budget from the environment; anything but a finite number >= 0 is ignored."""
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def job_from_cgroup(text: str) -> JobRef | None:
    """A job from ``/proc/<pid>/cgroup``, parsed per line (v1, v2, hybrid; ``agent.cgroup``):
    Slurm's ``job_<id>``, else a Kubernetes pod uid as ``pod-<uid>``."""
    lines = parse_cgroup(text)
    if job_id := slurm_job_id(lines):
        return JobRef(job_id)
    if uid := kube_pod_uid(lines):
        return JobRef("pod-" + uid)
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
            instances = sample.pid_instances if sample.mig is not None else ()
            jobs = {
                replace(job, gpu_instance=instances[n] if n < len(instances) else None)
                for n, pid in enumerate(sample.pids) if (job := self.job_of_pid(pid)) is not None
            }
            if jobs:
                result[sample.index] = tuple(sorted(jobs, key=lambda j: (j.job_id, j.gpu_instance or -1)))
        for pid in self._cache.keys() - live:  # a PID that left may be reused
            del self._cache[pid]
        return result


class Attributor:
    """Asks each source in order; the first that names owners for a GPU wins."""

    def __init__(self, sources: Iterable[OwnerSource]) -> None:
        self.sources = list(sources)

    def owners(self, samples: list[GpuSample]) -> dict[int, Owners]:
        """Per GPU (per GPU instance on MIG), the owners of the first source that names any."""
        result: dict[tuple[int, int | None], list[JobRef]] = {}
        known: dict[str, JobRef] = {}  # the fullest metadata any source has for a job
        for source in self.sources:
            named: dict[tuple[int, int | None], list[JobRef]] = {}
            for index, owned in source.owners(samples).items():
                for job in owned:
                    named.setdefault((index, job.gpu_instance), []).append(job)
                    if job.job_id not in known or _richness(job) > _richness(known[job.job_id]):
                        known[job.job_id] = job
            for key, listed in named.items():
                result.setdefault(key, listed)
        out: dict[int, list[JobRef]] = {}
        for (index, _instance), listed in sorted(result.items(), key=lambda kv: (kv[0][0], kv[0][1] is not None, kv[0][1] or 0)):
            out.setdefault(index, []).extend(replace(known[j.job_id], gpu_instance=j.gpu_instance) for j in listed)
        return {index: tuple(listed) for index, listed in out.items()}

    def job_of_pid(self, pid: int) -> JobRef | None:
        """The job of a process, from the first source that knows processes."""
        for source in self.sources:
            lookup = getattr(source, "job_of_pid", None)
            if lookup is not None and (job := lookup(pid)) is not None:
                return job
        return None


def _richness(job: JobRef) -> int:
    fields = (job.name, job.user, job.account, job.budget_usd, job.budget_co2e_kg, job.release, job.namespace)
    return sum(value is not None for value in fields) + bool(job.pods)
