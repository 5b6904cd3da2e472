"""Keys and hour boundaries shared by the rollups."""

from __future__ import annotations

import math

UNALLOCATED = "unallocated"  # local job id of GPU time no job owns: the cluster's idle account


def job_key(cluster: str, job: str | None) -> str:
    return f"{cluster}/{job or UNALLOCATED}"


def step_pieces(start_s: float, end_s: float, step_s: int) -> list[tuple[int, float]]:
    """(bucket start, fraction of the interval) for every bucket of ``step_s`` the interval touches."""
    first = math.floor(start_s / step_s) * step_s
    if end_s <= start_s or end_s <= first + step_s:
        return [(first, 1.0)]
    pieces, bucket = [], first
    while bucket < end_s:
        overlap = min(end_s, bucket + step_s) - max(start_s, bucket)
        if overlap > 0:
            pieces.append((bucket, overlap / (end_s - start_s)))
        bucket += step_s
    return pieces


def hour_pieces(start_s: float, end_s: float) -> list[tuple[int, float]]:
    """(hour start, fraction of the interval) for every hour the interval touches."""
    return step_pieces(start_s, end_s, 3600)


def split_by_step(start_s: float, end_s: float, values: list[float], step_s: int) -> list[tuple[int, list[float]]]:
    """``values`` of an interval per bucket of ``step_s`` it touches, in proportion to time. The
    last piece takes the remainder, so the pieces add up to ``values`` exactly."""
    pieces = step_pieces(start_s, end_s, step_s)
    if len(pieces) == 1:
        return [(pieces[0][0], values)]
    left, result = list(values), []
    for bucket, fraction in pieces[:-1]:
        share = [v * fraction for v in values]
        left = [a - b for a, b in zip(left, share, strict=True)]
        result.append((bucket, share))
    result.append((pieces[-1][0], left))
    return result


def split_by_hour(start_s: float, end_s: float, values: list[float]) -> list[tuple[int, list[float]]]:
    """``values`` of an interval per hour it touches (see ``split_by_step``)."""
    return split_by_step(start_s, end_s, values, 3600)
