"""Import carbon intensity from a CSV file: header ``region,start,end,g_per_kwh``.

``start`` and ``end`` are ISO 8601 times with a timezone; ``end`` (column or value) is
optional and defaults to start + 1 h. Blank lines are skipped. Every error is a ValueError
naming the line, the column and the value, e.g. ``line 3: g_per_kwh = '-5': expected a
number >= 0``.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from pathlib import Path

from api.intensity.sources import HOUR_S, IntensityPoint

COLUMNS = ("region", "start", "end", "g_per_kwh")
REQUIRED = ("region", "start", "g_per_kwh")


def read_csv(path_or_text: str | Path) -> list[IntensityPoint]:
    """Points in file order. A ``Path``, or a ``str`` without a newline, is read as a file
    (UTF-8, BOM allowed); a ``str`` with a newline is the CSV text itself."""
    if isinstance(path_or_text, Path) or "\n" not in path_or_text:
        text = Path(path_or_text).read_text(encoding="utf-8-sig")
    else:
        text = path_or_text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text))
    columns = _header(next(reader, None))
    points = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise ValueError(f"line {reader.line_num}: {len(row)} fields {row!r}: expected {len(columns)} "
                             f"({','.join(columns)})")
        cells = {name: cell.strip() for name, cell in zip(columns, row, strict=True)}
        points.append(_point(cells, reader.line_num))
    return points


def _header(row: list[str] | None) -> list[str]:
    names = [cell.strip() for cell in row or []]
    unknown = [name for name in names if name not in COLUMNS]
    missing = [name for name in REQUIRED if name not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise ValueError(f"line 1: header = {','.join(names)!r}: expected {','.join(COLUMNS)} "
                         f"(end optional; missing {missing}, unknown {unknown})")
    return names


def _point(cells: dict[str, str], line: int) -> IntensityPoint:
    def bad(column: str, expected: str) -> ValueError:
        return ValueError(f"line {line}: {column} = {cells.get(column, '')!r}: expected {expected}")

    if not cells["region"]:
        raise bad("region", "a non-empty region key")
    start_s = _time_s(cells["start"])
    if start_s is None:
        raise bad("start", "an ISO 8601 time with a timezone, e.g. 2026-11-26T10:00:00Z")
    end_s = start_s + HOUR_S if not cells.get("end") else _time_s(cells["end"])
    if end_s is None:
        raise bad("end", "an ISO 8601 time with a timezone, or empty for start + 1 h")
    if not end_s > start_s:
        raise bad("end", f"a time after start = {cells['start']!r}")
    try:
        g_per_kwh = float(cells["g_per_kwh"])
    except ValueError:
        g_per_kwh = math.nan
    if not math.isfinite(g_per_kwh) or g_per_kwh < 0:
        raise bad("g_per_kwh", "a number >= 0")
    return IntensityPoint(cells["region"], start_s, end_s, g_per_kwh, "csv", False)


def _time_s(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None
