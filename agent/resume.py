"""Carry the energy counters across the agent's own restarts.

At every push the agent saves, per GPU, its last reading and owners (``CounterState``, and
inside the spooled batch). After a restart, the first reading of each GPU is differenced with
the saved one: the energy spent while the agent was down is accounted from the counter, to
the jobs that held the GPU both before and after (else to unallocated), marked
``counter_gap``. Where the energy cannot be known (no counter, a reboot or driver reload in
between) it is not invented: the agent warns and the gap stays unaccounted.
"""

from __future__ import annotations

from agent.attribution import JobRef, Owners
from agent.energy import COUNTER_GAP, EnergyStep
from agent.gpu import GpuInfo, GpuSample
from agent.state import SavedGpu, gap_step


def saved_readings(
    gpus: dict[int, GpuInfo], prev: dict[int, GpuSample], owners: dict[int, Owners], epoch: str | None
) -> list[SavedGpu]:
    return [
        SavedGpu(gpus[index].uuid, sample.time_s, sample.energy_mj, [j.job_id for j in owners.get(index, ())], epoch)
        for index, sample in sorted(prev.items())
    ]


def gap_steps(
    saved: dict[str, SavedGpu], gpu: GpuInfo, cur: GpuSample, owners_now: Owners, epoch: str | None
) -> list[tuple[float, Owners, EnergyStep]]:
    """(start_s, owners, step) pieces, each at most an hour, from the saved reading to ``cur``."""
    if gpu.uuid not in saved:
        return []
    now_ids = [job.job_id for job in owners_now]
    step = gap_step(saved[gpu.uuid], cur.time_s, cur.energy_mj, now_ids, now_epoch=epoch)
    if step is None:
        return []
    by_id: dict[str, JobRef] = {job.job_id: job for job in owners_now}
    owners = tuple(by_id[job_id] for job_id in step.owners)
    return [
        (start_s, owners, EnergyStep(seconds, energy_j, COUNTER_GAP))
        for start_s, seconds, energy_j in step.pieces(saved[gpu.uuid].time_s)
    ]
