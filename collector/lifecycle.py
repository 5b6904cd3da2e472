"""Job states: ``running`` while data arrives, ``ended`` after a configurable silence."""

from __future__ import annotations

from sqlalchemy import Engine, update

from collector.models import ENDED, RUNNING, Job

jobs_t = Job.__table__


def end_silent_jobs(engine: Engine, now_s: float, silence_s: float) -> int:
    """Mark ended every running job with no data for ``silence_s``; returns how many."""
    with engine.begin() as conn:
        result = conn.execute(
            update(jobs_t)
            .where(jobs_t.c.state == RUNNING, jobs_t.c.last_seen_s < now_s - silence_s)
            .values(state=ENDED, ended_s=jobs_t.c.last_seen_s)
        )
    return result.rowcount
