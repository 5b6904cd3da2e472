"""Tiered retention: raw intervals and batch identities for ``raw_days`` (default 2), the
per-minute rollups for ``minute_days`` (default 35), hourly rollups and jobs forever. Every
tier is written on ingest in the batch's own transaction, so removing a finer one changes no
total: reports read the hourly tier only, and the charts fall back to the next tier that still
covers their range.

On PostgreSQL expired day partitions are dropped whole (``collector.partitions``); what is
left (the DEFAULT partitions, batch identities) and everything on SQLite is deleted in chunks,
each its own short transaction, sized so that none holds the write lock longer than
``chunk_budget_s`` (default 50 ms).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

from collector import partitions
from collector.models import MINUTE_TABLE, RAW_TABLE

DAY_S = 86400.0
FIRST_CHUNK, MIN_CHUNK, MAX_CHUNK = 500, 50, 10_000


@dataclass(frozen=True, slots=True)
class Pruned:
    intervals: int  # rows deleted (rows of dropped partitions are not counted)
    batches: int
    minutes: int = 0
    dropped: list[str] = field(default_factory=list)  # PostgreSQL partitions dropped whole
    chunks: int = 0
    longest_chunk_s: float = 0.0


@dataclass(slots=True)
class _Chunks:
    budget_s: float
    size: int = FIRST_CHUNK
    count: int = 0
    longest_s: float = 0.0

    def delete(self, engine: Engine, table: str, column: str, cutoff: float) -> int:
        """Delete ``table``'s rows with ``column`` < ``cutoff``, a chunk per transaction."""
        row_id = "rowid" if engine.dialect.name == "sqlite" else "ctid"
        stmt = text(f"DELETE FROM {table} WHERE {row_id} IN "
                    f"(SELECT {row_id} FROM {table} WHERE {column} < :cutoff LIMIT :size)")
        total = 0
        while True:
            size, started = self.size, time.perf_counter()
            with engine.begin() as conn:
                deleted = conn.execute(stmt, {"cutoff": cutoff, "size": size}).rowcount
            self._adapt(time.perf_counter() - started)
            total += deleted
            if deleted < size:
                return total

    def _adapt(self, held_s: float) -> None:
        self.count += 1
        self.longest_s = max(self.longest_s, held_s)
        if held_s > self.budget_s / 2:
            self.size = max(MIN_CHUNK, self.size // 2)
        elif held_s < self.budget_s / 8:
            self.size = min(MAX_CHUNK, self.size * 2)


def prune(engine: Engine, now_s: float, raw_days: float, minute_days: float = 35.0,
          chunk_budget_s: float = 0.05) -> Pruned:
    """Remove raw intervals that ended, and batch identities received, over ``raw_days`` ago, and
    minute rollups of minutes that began over ``minute_days`` ago."""
    raw_cutoff_s, minute_cutoff_s = now_s - raw_days * DAY_S, now_s - minute_days * DAY_S
    raw_tier, minute_tier = partitions.TIERS
    dropped = partitions.drop_expired(engine, raw_tier, raw_cutoff_s)
    dropped += partitions.drop_expired(engine, minute_tier, minute_cutoff_s)
    pg = engine.dialect.name == "postgresql"
    chunks = _Chunks(chunk_budget_s)
    intervals = chunks.delete(engine, partitions.default_partition(raw_tier) if pg else RAW_TABLE, "end_s", raw_cutoff_s)
    minutes = chunks.delete(engine, partitions.default_partition(minute_tier) if pg else MINUTE_TABLE,
                            "minute_s", minute_cutoff_s)
    batches = chunks.delete(engine, "ingested_batches", "received_at_s", raw_cutoff_s)
    return Pruned(intervals, batches, minutes, dropped, chunks.count, chunks.longest_s)


def maintain(engine: Engine, now_s: float, raw_days: float, minute_days: float, ahead_days: int = 2) -> Pruned:
    """The scheduler's storage job: partitions ahead, then retention."""
    partitions.ensure_partitions(engine, now_s, ahead_days)
    return prune(engine, now_s, raw_days, minute_days)
