"""Steps of one GPU between two readings of its energy counter.

The counter costs ~3 ms a read on an H200, so the agent reads it only where it is needed: at
every push boundary and whenever a GPU's owners change (and at start). Between two readings
the owners are the same by construction, so the counter delta over the segment is exact for
them; it is spread over the segment's steps in proportion to the power read at each step (for
the per-step shares of a GPU split by per-process utilisation), by time where power is missing.
A GPU without a counter, or a segment whose counter went down (driver reload), is accounted
step by step from power, as ``agent.energy`` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.energy import COUNTER, EnergyStep, power_step
from agent.gpu import GpuSample
from agent.split import Split


@dataclass(frozen=True, slots=True)
class Piece:
    start_s: float
    seconds: float
    start_power_mw: int | None
    end_power_mw: int | None
    util_gpu_pct: int | None
    memory_used_bytes: int | None
    split: Split


@dataclass(slots=True)
class Segments:
    anchors: dict[int, GpuSample] = field(default_factory=dict)  # per GPU: the last counter reading's sample
    pieces: dict[int, list[Piece]] = field(default_factory=dict)

    def open(self, cur: GpuSample) -> None:
        self.anchors[cur.index] = cur
        self.pieces.pop(cur.index, None)

    def counterless(self, index: int) -> bool:
        """True when the segment has no counter reading to start from: close it every step."""
        anchor = self.anchors.get(index)
        return anchor is None or anchor.energy_mj is None

    def add(self, prev: GpuSample, cur: GpuSample, split: Split) -> None:
        piece = Piece(prev.time_s, cur.time_s - prev.time_s, prev.power_mw, cur.power_mw, cur.util_gpu_pct,
                      cur.memory_used_bytes, split)
        self.pieces.setdefault(cur.index, []).append(piece)

    def close(self, cur: GpuSample) -> list[tuple[Piece, EnergyStep]]:
        """The segment's pieces with their energy, ending at ``cur``; ``cur`` starts the next."""
        anchor, pieces = self.anchors.get(cur.index), self.pieces.pop(cur.index, [])
        self.anchors[cur.index] = cur
        start_mj = None if anchor is None else anchor.energy_mj
        if start_mj is not None and cur.energy_mj is not None and cur.energy_mj >= start_mj:
            return list(zip(pieces, _spread(pieces, (cur.energy_mj - start_mj) / 1000), strict=True))
        reset = start_mj is not None and cur.energy_mj is not None  # it went down: the driver reloaded
        return [(p, power_step(p.seconds, p.start_power_mw, p.end_power_mw, reset)) for p in pieces]

    def drop(self, index: int) -> list[tuple[Piece, EnergyStep]]:
        """A GPU lost mid-segment: its steps so far, estimated from power."""
        self.anchors.pop(index, None)
        return [(p, power_step(p.seconds, p.start_power_mw, p.end_power_mw)) for p in self.pieces.pop(index, [])]


def _spread(pieces: list[Piece], energy_j: float) -> list[EnergyStep]:
    if len(pieces) == 1:
        return [EnergyStep(pieces[0].seconds, energy_j, COUNTER)]
    estimates = [power_step(p.seconds, p.start_power_mw, p.end_power_mw).energy_j for p in pieces]
    known = all(p.start_power_mw is not None or p.end_power_mw is not None for p in pieces)
    weights = estimates if known and sum(estimates) > 0 else [p.seconds for p in pieces]
    total = sum(weights) or 1.0
    return [EnergyStep(p.seconds, energy_j * w / total, COUNTER) for p, w in zip(pieces, weights, strict=True)]
