"""Keys and hour boundaries shared by the rollups."""

from __future__ import annotations

import math

UNALLOCATED = "unallocated"  # local job id of GPU time no job owns: the cluster's idle account


def job_key(cluster: str, job: str | None) -> str:
    return f"{cluster}/{job or UNALLOCATED}"


def hour_pieces(start_s: float, end_s: float) -> list[tuple[int, float]]:
    """(hour start, fraction of the interval) for every hour the interval touches."""
    first = math.floor(start_s / 3600) * 3600
    if end_s <= start_s or end_s <= first + 3600:
        return [(first, 1.0)]
    pieces, hour = [], first
    while hour < end_s:
        overlap = min(end_s, hour + 3600) - max(start_s, hour)
        if overlap > 0:
            pieces.append((hour, overlap / (end_s - start_s)))
        hour += 3600
    return pieces


def split_by_hour(start_s: float, end_s: float, values: list[float]) -> list[tuple[int, list[float]]]:
    """``values`` of an interval per hour it touches, in proportion to time. The last piece
    takes the remainder, so the pieces add up to ``values`` exactly."""
    pieces = hour_pieces(start_s, end_s)
    if len(pieces) == 1:
        return [(pieces[0][0], values)]
    left, result = list(values), []
    for hour, fraction in pieces[:-1]:
        share = [v * fraction for v in values]
        left = [a - b for a, b in zip(left, share, strict=True)]
        result.append((hour, share))
    result.append((pieces[-1][0], left))
    return result
