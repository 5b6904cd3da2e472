"""Bounded storage: raw intervals and batch identities older than the retention period go;
hourly rollups and jobs stay forever, so no report changes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete

from collector.models import GpuInterval, IngestedBatch

intervals_t, batches_t = GpuInterval.__table__, IngestedBatch.__table__


@dataclass(frozen=True, slots=True)
class Pruned:
    intervals: int
    batches: int


def prune(engine: Engine, now_s: float, raw_days: float) -> Pruned:
    """Delete raw intervals that ended, and batch identities received, over ``raw_days`` ago."""
    cutoff_s = now_s - raw_days * 86400
    with engine.begin() as conn:
        intervals = conn.execute(delete(intervals_t).where(intervals_t.c.end_s < cutoff_s)).rowcount
        batches = conn.execute(delete(batches_t).where(batches_t.c.received_at_s < cutoff_s)).rowcount
    return Pruned(intervals, batches)
