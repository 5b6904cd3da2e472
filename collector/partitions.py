"""PostgreSQL range partitions of the raw and minute tiers, one per UTC day.

The scheduler creates each day's partitions ahead of time; retention drops a partition whole
once its last possible row is older than the tier's retention (no dead tuples to vacuum).
Rows no day partition takes (a replay older than the partitions, data migrated from an older
schema) go to the table's DEFAULT partition, which retention prunes row by row.
On SQLite every function here does nothing.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from collector.models import MINUTE_TABLE, RAW_TABLE

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Tier:
    table: str
    column: str  # the partition key


TIERS = (Tier(RAW_TABLE, "end_s"), Tier(MINUTE_TABLE, "minute_s"))
_NAME = re.compile(r"_p(\d{8})$")


def is_partition(name: str | None) -> bool:
    """Whether ``name`` is one of the tiers' partitions (not part of the models' schema)."""
    return name is not None and any(
        name == default_partition(t) or (name.startswith(t.table + "_p") and _NAME.search(name)) for t in TIERS)


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """For alembic's comparisons: leave the partitions out."""
    return not (type_ == "table" and is_partition(name))


def partition_name(tier: Tier, day_s: int) -> str:
    return f"{tier.table}_p{time.strftime('%Y%m%d', time.gmtime(day_s))}"


def default_partition(tier: Tier) -> str:
    return f"{tier.table}_default"


def create_default_partitions(execute: Callable[[Any], Any]) -> None:
    """The DEFAULT partitions (``execute``: alembic's ``op.execute`` or a connection's)."""
    for tier in TIERS:
        execute(text(f"CREATE TABLE IF NOT EXISTS {default_partition(tier)} PARTITION OF {tier.table} DEFAULT"))


def ensure_partitions(engine: Engine, now_s: float, ahead_days: int = 2) -> list[str]:
    """Create the partitions of today and the next ``ahead_days`` days where missing; returns the
    names created. A day whose rows already sit in the DEFAULT partition is left to it."""
    if engine.dialect.name != "postgresql":
        return []
    today_s = int(now_s // DAY_S * DAY_S)
    created = []
    for tier in TIERS:
        existing = set(partitions(engine, tier))
        for day_s in range(today_s, today_s + (ahead_days + 1) * DAY_S, DAY_S):
            name = partition_name(tier, day_s)
            if name in existing:
                continue
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"CREATE TABLE {name} PARTITION OF {tier.table} "
                                      f"FOR VALUES FROM ({day_s}) TO ({day_s + DAY_S})"))
                created.append(name)
            except DBAPIError:  # the default partition already holds rows of that day
                continue
    return created


def partitions(engine: Engine, tier: Tier) -> dict[str, int]:
    """The day partitions of ``tier``: name -> the day's start (Unix s)."""
    query = text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                 "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table")
    with engine.connect() as conn:
        names = [row[0] for row in conn.execute(query, {"table": tier.table})]
    result = {}
    for name in names:
        match = _NAME.search(name)
        if match:
            result[name] = calendar.timegm(time.strptime(match.group(1), "%Y%m%d"))
    return result


def drop_expired(engine: Engine, tier: Tier, cutoff_s: float) -> list[str]:
    """Drop the day partitions of ``tier`` whose every row is older than ``cutoff_s``."""
    if engine.dialect.name != "postgresql":
        return []
    dropped = []
    for name, day_s in sorted(partitions(engine, tier).items(), key=lambda item: item[1]):
        if day_s + DAY_S <= cutoff_s:
            with engine.begin() as conn:
                conn.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
    return dropped
