"""How one GPU's time and energy are shared among its owners, and by which method.

- ``whole``: one owner, or nobody (unallocated), has the whole GPU;
- ``mig_slices``: a MIG-enabled GPU; each GPU instance gets its compute slices' share of the
  GPU (slices no instance holds are idle capacity, unallocated); the owners of an instance are
  the jobs keyed ``<gpu>.<gpu_instance>`` (mapping file, or processes in that instance), else
  the GPU's whole-GPU owners, else nobody. Owners keyed to an instance on a GPU without MIG
  were dropped by attribution: a ``2.1`` mapping file does not apply to a non-MIG GPU 2;
- ``process_utilization``: several jobs time-slice (or MPS-share) a GPU and NVML gives
  per-process SM utilisation: each job's share is its processes' share of the SM use;
- ``equal``: several jobs and no per-process utilisation: equal shares.

The method is recorded on every interval (wire field ``split``). A MIG instance's intervals
carry its size in their GPU model (``NVIDIA H100 80GB HBM3 MIG 3/7 slices``), so a job report's
breakdown by GPU model says which share of which GPU it was charged, and by what rule; rates
keyed by a part of the model name (H100) still apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agent.attribution import JobRef, Owners
from agent.gpu import GpuSample, MigLayout

WHOLE: Final = "whole"
MIG_SLICES: Final = "mig_slices"
PROCESS_UTILIZATION: Final = "process_utilization"
EQUAL: Final = "equal"
SPLITS: Final = (WHOLE, MIG_SLICES, PROCESS_UTILIZATION, EQUAL)


@dataclass(frozen=True, slots=True)
class Share:
    job: JobRef | None  # None: unallocated
    weight: float  # fraction of the GPU's time and energy
    gpu_instance: int | None = None
    mig_slices: str | None = None  # "3/7": the instance's compute slices of the GPU's


@dataclass(frozen=True, slots=True)
class Split:
    method: str
    shares: tuple[Share, ...]


UNALLOCATED = Split(WHOLE, (Share(None, 1.0),))


def split_gpu(sample: GpuSample, owners: Owners, job_of_pid: Callable[[int], JobRef | None] | None = None) -> Split:
    if sample.mig is not None:
        return mig_split(sample.mig, owners)
    owners = tuple(o for o in owners if o.gpu_instance is None)
    if not owners:
        return UNALLOCATED
    if len(owners) == 1:
        return Split(WHOLE, (Share(owners[0], 1.0),))
    weights = utilization_weights(sample, owners, job_of_pid)
    if weights is not None:
        return Split(PROCESS_UTILIZATION, weights)
    return Split(EQUAL, tuple(Share(job, 1 / len(owners)) for job in owners))


def mig_split(layout: MigLayout, owners: Owners) -> Split:
    whole = [o for o in owners if o.gpu_instance is None]
    shares: list[Share] = []
    for instance in layout.instances:
        mine: list[JobRef | None] = [o for o in owners if o.gpu_instance == instance.gpu_instance] or list(whole) or [None]
        weight = instance.slices / layout.total_slices
        slices = f"{instance.slices}/{layout.total_slices}"
        shares.extend(Share(job, weight / len(mine), instance.gpu_instance, slices) for job in mine)
    idle = layout.total_slices - sum(i.slices for i in layout.instances)
    if idle > 0 or not layout.instances:
        shares.append(Share(None, idle / layout.total_slices if layout.instances else 1.0))
    return Split(MIG_SLICES, tuple(shares))


def utilization_weights(
    sample: GpuSample, owners: Owners, job_of_pid: Callable[[int], JobRef | None] | None
) -> tuple[Share, ...] | None:
    """Shares by the owners' processes' SM utilisation; None where that cannot be known."""
    if not sample.pid_sm_util or job_of_pid is None:
        return None
    by_id = {o.job_id: o for o in owners}
    used: dict[str | None, float] = {}
    for pid, sm_pct in sample.pid_sm_util:
        if pid not in sample.pids:
            continue  # a process that has left
        job = job_of_pid(pid)
        key = job.job_id if job is not None and job.job_id in by_id else None
        used[key] = used.get(key, 0.0) + sm_pct
    total = sum(used.values())
    if total <= 0:
        return None
    return tuple(Share(None if key is None else by_id[key], value / total) for key, value in sorted(
        used.items(), key=lambda kv: (kv[0] is None, kv[0] or "")) if value > 0)
