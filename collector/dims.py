"""Dimension keys: the small integers raw intervals and minute rollups carry instead of strings.

Each lookup reads the keys it needs in one statement, inserts the missing ones
(``ON CONFLICT DO NOTHING``, so concurrent collectors agree) and reads those back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Connection

from agent.energy import METHODS
from collector.db import insert_for
from collector.models import GpuKey, JobKey, Place

job_keys_t, places_t, gpu_keys_t = JobKey.__table__, Place.__table__, GpuKey.__table__
METHOD_CODE = {name: code for code, name in enumerate(METHODS)}  # stored as a small integer
CHUNK = 400  # keys per statement (SQLite allows 32,766 bound parameters)

PlaceName = tuple[str, str, str]  # node, datacenter, GPU model
GpuName = tuple[int, str]  # place id, GPU UUID


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    return (items[i:i + CHUNK] for i in range(0, len(items), CHUNK))


def job_keys(conn: Connection, job_ids: Iterable[str]) -> dict[str, int]:
    """The key of every job id, created where missing."""
    wanted = sorted(set(job_ids))
    found = _read_jobs(conn, wanted)
    missing = [j for j in wanted if j not in found]
    if missing:
        conn.execute(insert_for(conn, job_keys_t).on_conflict_do_nothing(), [{"job_id": j} for j in missing])
        found.update(_read_jobs(conn, missing))
    return found


def _read_jobs(conn: Connection, job_ids: list[str]) -> dict[str, int]:
    c = job_keys_t.c
    found: dict[str, int] = {}
    for chunk in _chunks(job_ids):
        found.update((job_id, key) for key, job_id in conn.execute(select(c.id, c.job_id).where(c.job_id.in_(chunk))))
    return found


def place_keys(conn: Connection, places: Iterable[PlaceName]) -> dict[PlaceName, int]:
    wanted = sorted(set(places))
    found = _read_places(conn, wanted)
    missing = [p for p in wanted if p not in found]
    if missing:
        conn.execute(insert_for(conn, places_t).on_conflict_do_nothing(),
                     [{"node": n, "datacenter": d, "gpu_model": m} for n, d, m in missing])
        found.update(_read_places(conn, missing))
    return found


def _read_places(conn: Connection, places: list[PlaceName]) -> dict[PlaceName, int]:
    c = places_t.c
    found: dict[PlaceName, int] = {}
    for chunk in _chunks(places):
        query = select(c.id, c.node, c.datacenter, c.gpu_model).where(tuple_(c.node, c.datacenter, c.gpu_model).in_(chunk))
        found.update(((n, d, m), key) for key, n, d, m in conn.execute(query))
    return found


def gpu_keys(conn: Connection, gpus: Iterable[GpuName]) -> dict[GpuName, int]:
    wanted = sorted(set(gpus))
    found = _read_gpus(conn, wanted)
    missing = [g for g in wanted if g not in found]
    if missing:
        conn.execute(insert_for(conn, gpu_keys_t).on_conflict_do_nothing(),
                     [{"place_id": p, "gpu_uuid": u} for p, u in missing])
        found.update(_read_gpus(conn, missing))
    return found


def _read_gpus(conn: Connection, gpus: list[GpuName]) -> dict[GpuName, int]:
    c = gpu_keys_t.c
    found: dict[GpuName, int] = {}
    for chunk in _chunks(gpus):
        query = select(c.id, c.place_id, c.gpu_uuid).where(tuple_(c.place_id, c.gpu_uuid).in_(chunk))
        found.update(((p, u), key) for key, p, u in conn.execute(query))
    return found
