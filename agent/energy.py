"""Energy of one GPU between two samples, by the ladder in DESIGN.md.

1. ``counter``: difference of NVML's total-energy counter (mJ since driver load). Exact.
2. ``power_integrated``: trapezoid over the two power readings (no counter, or it reset).
3. ``power_instant``: the one power reading there is, times the elapsed time.
4. ``none``: no reading at all; the time is counted, the energy is unknown (0 J).

``counter_gap`` marks energy measured by the counter across a stretch the agent itself was
down, attributed to the jobs that held the GPU both before and after it (else unallocated).
``power_gap`` marks the part of such a stretch the counter cannot cover (it reset while the
agent was down, or the GPU has none): estimated from the power read at both ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.gpu import GpuSample

COUNTER: Final = "counter"
POWER_INTEGRATED: Final = "power_integrated"
POWER_INSTANT: Final = "power_instant"
NONE: Final = "none"
COUNTER_GAP: Final = "counter_gap"  # counter delta across the agent's own downtime, attribution inferred
POWER_GAP: Final = "power_gap"  # part of the agent's downtime estimated from power (counter reset meanwhile)
METHODS: Final = (COUNTER, POWER_INTEGRATED, POWER_INSTANT, NONE, COUNTER_GAP, POWER_GAP)
MEASURED: Final = (COUNTER, COUNTER_GAP)


@dataclass(frozen=True, slots=True)
class EnergyStep:
    seconds: float
    energy_j: float
    method: str
    counter_reset: bool = False


def energy_step(prev: GpuSample, cur: GpuSample) -> EnergyStep:
    """Energy spent by one GPU from ``prev`` to ``cur`` (both of the same GPU)."""
    seconds = cur.time_s - prev.time_s
    reset = False
    if prev.energy_mj is not None and cur.energy_mj is not None:
        if cur.energy_mj >= prev.energy_mj:
            return EnergyStep(seconds, (cur.energy_mj - prev.energy_mj) / 1000, COUNTER)
        reset = True  # the driver reloaded: a counter that went down is a reset
    return power_step(seconds, prev.power_mw, cur.power_mw, reset)


def power_step(seconds: float, start_mw: int | None, end_mw: int | None, reset: bool = False) -> EnergyStep:
    """Energy from the power read at both ends of a step (trapezoid), else at one of them."""
    if start_mw is not None and end_mw is not None:
        return EnergyStep(seconds, (start_mw + end_mw) / 2000 * seconds, POWER_INTEGRATED, reset)
    power_mw = end_mw if end_mw is not None else start_mw
    if power_mw is not None:
        return EnergyStep(seconds, power_mw / 1000 * seconds, POWER_INSTANT, reset)
    return EnergyStep(seconds, 0.0, NONE, reset)
