"""Hourly RoCE rollups per (job, hour, node): counters summed, peaks kept as maxima."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case, func, null
from sqlalchemy.engine import Connection

from collector.db import insert_for
from collector.models import JobNetHour
from collector.pieces import job_key, split_by_hour
from collector.schemas import NETWORK_COUNTER_NAMES, BatchIn

net_hours_t = JobNetHour.__table__
SUMMED = ("seconds", "apportioned_bytes", "link_down_port_seconds", "unknown_seconds")
PEAKS = ("peak_tx_gbps", "peak_rx_gbps", "peak_link_util_pct")


def _network_rows(batches: list[BatchIn]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for batch, interval in ((b, n) for b in batches for n in b.network):
        # A null counter (unknown over the interval) adds nothing; unknown_seconds marks the hour.
        known = {n: v for n in NETWORK_COUNTER_NAMES if (v := interval.counters.get(n)) is not None}
        names = SUMMED + tuple(known)
        values = [float(getattr(interval, n)) for n in SUMMED] + list(known.values())
        job = job_key(batch.cluster, interval.job)
        for hour, share in split_by_hour(interval.start_s, interval.end_s, values):
            row = rows.setdefault((job, hour, batch.node), _empty_row(job, hour, batch.node))
            row["ports"] = max(row["ports"], interval.ports)
            for name, value in zip(names, share, strict=True):
                row[name] = (row[name] or 0.0) + value
            for name in PEAKS:
                new = getattr(interval, name)
                if new is not None and (row[name] is None or new > row[name]):
                    row[name] = new
    return [rows[key] for key in sorted(rows)]


def _empty_row(job: str, hour: int, node: str) -> dict[str, Any]:
    row: dict[str, Any] = {"job_id": job, "hour_s": hour, "node": node, "ports": 0}
    row.update(dict.fromkeys(SUMMED, 0.0))
    row.update(dict.fromkeys(NETWORK_COUNTER_NAMES, None))
    row.update({"peak_tx_gbps": 0.0, "peak_rx_gbps": 0.0, "peak_link_util_pct": None})
    return row


def _add(old: ColumnElement, new: ColumnElement) -> ColumnElement:
    """old + new where a NULL (never reported) stays NULL only if both are."""
    return case((old.is_(None) & new.is_(None), null()), else_=func.coalesce(old, 0) + func.coalesce(new, 0))


def _max(old: ColumnElement, new: ColumnElement) -> ColumnElement:
    return case((old.is_(None), new), (new.is_(None), old), (new > old, new), else_=old)


def write_network(conn: Connection, batches: list[BatchIn]) -> None:
    stmt = insert_for(conn, net_hours_t)
    new, old = stmt.excluded, net_hours_t.c
    updates = {name: _add(old[name], new[name]) for name in SUMMED + NETWORK_COUNTER_NAMES}
    updates.update({name: _max(old[name], new[name]) for name in (*PEAKS, "ports")})
    stmt = stmt.on_conflict_do_update(index_elements=["job_id", "hour_s", "node"], set_=updates)
    conn.execute(stmt, _network_rows(batches))
