"""Job metadata from an authoritative source: an admin through the API, or the scheduler.

Agents only fill metadata a job does not have yet (first writer wins,
``collector.integrity.keep_first_metadata``); what is set here replaces it, and agents
cannot change it back. The scheduler integration (Slurm prolog/epilog) calls
``set_job_metadata`` with ``source="scheduler"``.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, select, update

from collector.models import Job

log = logging.getLogger(__name__)
jobs_t = Job.__table__
FIELDS = ("name", "user", "account", "budget_usd", "budget_co2e_kg")
SOURCES = ("admin", "scheduler")


def set_job_metadata(engine: Engine, job_id: str, values: dict[str, Any], source: str) -> dict[str, Any] | None:
    """Set the given fields of a stored job (a value of None clears the field); returns the
    values before, or None when no job has that id. Raises ValueError for an unknown field
    or source."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"fields {unknown}: expected some of {', '.join(FIELDS)}")
    if source not in SOURCES:
        raise ValueError(f"source = {source!r}: expected {' or '.join(SOURCES)}")
    with engine.begin() as conn:
        row = conn.execute(select(*[jobs_t.c[f] for f in FIELDS]).where(jobs_t.c.job_id == job_id)).first()
        if row is None:
            return None
        before = dict(row._mapping)
        if values:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(**values, metadata_source=source))
    changed = {f: (before[f], v) for f, v in values.items() if before[f] != v}
    if changed:
        log.info("job %r metadata set by %s: %s", job_id, source,
                 ", ".join(f"{f} {old!r} -> {new!r}" for f, (old, new) in changed.items()))
    return before
