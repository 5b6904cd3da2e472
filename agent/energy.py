"""Energy of one GPU between two samples, by the ladder in DESIGN.md.

1. ``counter``: difference of NVML's total-energy counter (mJ since driver load). Exact.
2. ``power_integrated``: trapezoid over the two power readings (no counter, or it reset).
3. ``power_instant``: the one power reading there is, times the elapsed time.
4. ``none``: no reading at all; the time is counted, the energy is unknown (0 J).

``counter_gap`` marks energy measured by the counter across a stretch the agent itself was
down, attributed to the jobs that held the GPU both before and after it (else unallocated).
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
METHODS: Final = (COUNTER, POWER_INTEGRATED, POWER_INSTANT, NONE, COUNTER_GAP)
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
    if prev.power_mw is not None and cur.power_mw is not None:
        energy_j = (prev.power_mw + cur.power_mw) / 2000 * seconds
        return EnergyStep(seconds, energy_j, POWER_INTEGRATED, reset)
    power_mw = cur.power_mw if cur.power_mw is not None else prev.power_mw
    if power_mw is not None:
        return EnergyStep(seconds, power_mw / 1000 * seconds, POWER_INSTANT, reset)
    return EnergyStep(seconds, 0.0, NONE, reset)
