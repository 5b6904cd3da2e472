"""No GPU's seconds exceed wall-clock time: the check over one GPU's intervals.

Intervals of one GPU may overlap in span and still be honest: a GPU shared by two jobs gives
each an interval over the same span with half the seconds, and an agent's spool merges sparse
intervals into one longer span. What cannot happen is more GPU-seconds in a stretch of time
than the stretch is long. So intervals of one GPU are grouped into clusters of overlapping
spans, and each cluster's summed ``gpu_seconds`` must fit in the cluster's wall-clock span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TOLERANCE_S = 0.01  # clock jitter between contiguous intervals: 0.1 % of a 10 s push, far below a sample
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Span:
    start_s: float
    end_s: float
    gpu_seconds: float
    stored: bool = False  # already in the database (else: from the batch being checked)


@dataclass(frozen=True, slots=True)
class Excess:
    """A cluster of spans of one GPU holding more GPU-seconds than its wall-clock span."""

    start_s: float
    end_s: float
    gpu_seconds: float
    stored_gpu_seconds: float

    def describe(self) -> str:
        wall_s = self.end_s - self.start_s
        stored = f" ({self.stored_gpu_seconds:g} of them already stored)" if self.stored_gpu_seconds else ""
        return (f"[{self.start_s:.3f}, {self.end_s:.3f}] holds {self.gpu_seconds:g} GPU-seconds{stored}, "
                f"more than its {wall_s:g} s of wall-clock time")


def excess(spans: Iterable[Span]) -> Excess | None:
    """The first cluster of overlapping spans whose GPU-seconds exceed its wall-clock span, else
    None. Only clusters with a span not yet stored count: what is stored was accepted before."""
    ordered = sorted(spans, key=lambda s: (s.start_s, s.end_s))
    i = 0
    while i < len(ordered):
        start_s, end_s = ordered[i].start_s, ordered[i].end_s
        total = stored = 0.0
        fresh = False
        j = i
        while j < len(ordered) and (j == i or ordered[j].start_s < end_s - TOLERANCE_S):
            end_s = max(end_s, ordered[j].end_s)
            total += ordered[j].gpu_seconds
            stored += ordered[j].gpu_seconds if ordered[j].stored else 0.0
            fresh = fresh or not ordered[j].stored
            j += 1
        if j - i > 1 and fresh and total > (end_s - start_s) * (1 + RELATIVE_TOLERANCE) + TOLERANCE_S:
            return Excess(start_s, end_s, total, stored)
        i = j
    return None
