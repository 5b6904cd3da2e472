"""Store intensity points as an hourly series per region (time-weighted means)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Engine, Table

from api.intensity.sources import IntensityPoint
from collector.db import insert_for
from collector.models import GridIntensity, GridMarginalIntensity

grid_t = GridIntensity.__table__
marginal_t = GridMarginalIntensity.__table__  # WattTime co2_moer: what-if only, never accounting


def hourly(points: Iterable[IntensityPoint]) -> list[dict[str, object]]:
    """Rows of ``grid_intensity``: each hour's time-weighted mean of the points that cover it."""
    acc: dict[tuple[str, int], list] = defaultdict(lambda: [0.0, 0.0, defaultdict(float), False])
    for point in points:
        hour = math.floor(point.start_s / 3600) * 3600
        while hour < point.end_s:
            overlap = min(point.end_s, hour + 3600) - max(point.start_s, hour)
            if overlap > 0:
                row = acc[(point.region, hour)]
                row[0] += point.g_per_kwh * overlap
                row[1] += overlap
                row[2][point.source] += overlap
                row[3] = row[3] or point.estimated
            hour += 3600
    return [
        {"region": region, "hour_s": hour, "g_per_kwh": weighted / seconds,
         "source": max(sources, key=sources.get), "estimated": estimated}
        for (region, hour), (weighted, seconds, sources, estimated) in sorted(acc.items())
    ]


def store(engine: Engine, points: Iterable[IntensityPoint], now_s: float, table: Table = grid_t) -> int:
    """Upsert the hourly series (``grid_t``, the average series reports price with, or
    ``marginal_t``); a newer value for an hour (an actual after a forecast) replaces the older."""
    rows = [{**row, "updated_at_s": now_s} for row in hourly(points)]
    if not rows:
        return 0
    with engine.begin() as conn:
        stmt = insert_for(conn, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["region", "hour_s"],
            set_={name: stmt.excluded[name] for name in ("g_per_kwh", "source", "estimated", "updated_at_s")},
        )
        conn.execute(stmt, rows)
    return len(rows)
