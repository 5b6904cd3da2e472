"""Carry the energy counters across the agent's own restarts.

At every push the agent saves, per GPU, its last reading and owners (``CounterState``, and
inside the spooled batch). After a restart, the first reading of each GPU is differenced with
the saved one: the energy spent while the agent was down is accounted from the counter, to
the jobs that held the GPU both before and after (else to unallocated), marked
``counter_gap``. No gap of up to ``MAX_GAP_S`` is dropped: where the counter cannot bridge it
(it reset meanwhile: a driver reload or a reboot; or the GPU has none), the GPU-seconds are
still counted exactly, the energy since the reset is the counter's (``counter_gap``), and the
stretch before the reset is estimated from the power read at both ends (``power_gap``). The
reset time is not known: it is placed where the counter's energy at that power would start.
"""

from __future__ import annotations

import logging

from agent.attribution import JobRef, Owners
from agent.energy import COUNTER_GAP, NONE, POWER_GAP, EnergyStep
from agent.gpu import GpuInfo, GpuSample
from agent.state import MAX_GAP_S, MAX_POWER_W, GapStep, SavedGpu, gap_step

log = logging.getLogger(__name__)
GapPart = tuple[float, float, float, str]  # (start_s, seconds, energy_j, method)


def saved_readings(
    gpus: dict[int, GpuInfo], anchors: dict[int, GpuSample], owners: dict[int, Owners], epoch: str | None
) -> list[SavedGpu]:
    return [
        SavedGpu(gpus[index].uuid, sample.time_s, sample.energy_mj, list(dict.fromkeys(j.job_id for j in owners.get(index, ()))),
                 epoch, sample.power_mw)
        for index, sample in sorted(anchors.items())
    ]


def gap_steps(
    saved: dict[str, SavedGpu], gpu: GpuInfo, cur: GpuSample, owners_now: Owners, epoch: str | None
) -> list[tuple[float, Owners, EnergyStep]]:
    """(start_s, owners, step) pieces, each at most an hour, from the saved reading to ``cur``."""
    if gpu.uuid not in saved:
        return []
    before = saved[gpu.uuid]
    now_ids = [job.job_id for job in owners_now]
    step = gap_step(before, cur.time_s, cur.energy_mj, now_ids, now_epoch=epoch)
    if step is not None:
        parts: list[GapPart] = [(before.time_s, step.seconds, step.energy_j, COUNTER_GAP)]
        owner_ids = step.owners
    elif 0 < cur.time_s - before.time_s <= MAX_GAP_S:
        parts = estimated_gap(before, cur, epoch)
        owner_ids = [job for job in dict.fromkeys(before.owners) if job in now_ids]
    else:
        return []
    by_id: dict[str, JobRef] = {job.job_id: job for job in owners_now}
    owners = tuple(by_id[job_id] for job_id in owner_ids)
    return [
        (start_s, owners, EnergyStep(seconds, energy_j, method))
        for part_start_s, part_s, part_j, method in parts
        for start_s, seconds, energy_j in GapStep(part_s, part_j, owner_ids, method, True).pieces(part_start_s)
    ]


def estimated_gap(before: SavedGpu, cur: GpuSample, epoch: str | None) -> list[GapPart]:
    """A gap the counter alone cannot measure: the counter since its reset, the rest from power."""
    gap_s = cur.time_s - before.time_s
    powers_w = [p / 1000 for p in (before.power_mw, cur.power_mw) if p is not None]
    power_w = sum(powers_w) / len(powers_w) if powers_w else None
    since_reset_j = _since_reset_j(before, cur, epoch, gap_s)
    if since_reset_j is None:
        if power_w is None:
            log.warning("GPU %s: %g s gap with no counter and no power reading: its time is counted, its energy is "
                        "unknown (0 J, method none)", before.uuid, gap_s)
            return [(before.time_s, gap_s, 0.0, NONE)]
        log.warning("GPU %s: %g s gap estimated from power (%.1f W, %s)", before.uuid, gap_s, power_w, POWER_GAP)
        return [(before.time_s, gap_s, power_w * gap_s, POWER_GAP)]
    # The reset's estimated time, as a timestamp first: both parts' spans are then exact differences
    # of timestamps (the collector checks gpu_seconds against end_s - start_s).
    reset_s = cur.time_s - (gap_s if not power_w else min(gap_s, since_reset_j / power_w))
    estimated_s, measured_s = reset_s - before.time_s, cur.time_s - reset_s
    log.warning("GPU %s: the energy counter reset during the %g s gap: %.1f J measured since the reset, %g s before it "
                "estimated from power (%s)", before.uuid, gap_s, since_reset_j, estimated_s, POWER_GAP)
    parts: list[GapPart] = []
    if estimated_s > 0 and power_w is not None:
        parts.append((before.time_s, estimated_s, power_w * estimated_s, POWER_GAP))
    parts.append((reset_s, measured_s, since_reset_j, COUNTER_GAP))
    return parts


def _since_reset_j(before: SavedGpu, cur: GpuSample, epoch: str | None, gap_s: float) -> float | None:
    """The counter's energy since it restarted from 0 in the gap, where it did and is plausible."""
    if before.energy_mj is None or cur.energy_mj is None:
        return None
    rebooted = before.epoch is not None and epoch is not None and before.epoch != epoch
    if not rebooted and cur.energy_mj >= before.energy_mj:
        return None  # it did not restart: the reading itself is implausible (gap_step said why)
    since_j = cur.energy_mj / 1000
    return since_j if since_j <= MAX_POWER_W * gap_s else None
