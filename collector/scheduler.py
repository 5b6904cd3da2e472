"""A scheduler's word on a job: when it started and ended, and who it belongs to.

The Slurm prolog and epilog (``deploy/slurm/``) send one event each per node. What they say
is authoritative: the metadata replaces what agents inferred from process environments
(and agents cannot change it afterwards, see ``collector.ingest``), and the end time is the
scheduler's, so the job no longer waits for the silence timeout (``collector.lifecycle``
stays the fallback when no end event comes). Events are idempotent: every node of a job
sends its own, in any order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.ingest import FUTURE_TOLERANCE_S, BatchRejected
from collector.models import ENDED, RUNNING, Job
from collector.pieces import job_key
from collector.schemas import TEXT_PATTERN, ClusterLabel, Label, Strict, Text

jobs_t = Job.__table__
LongText = Annotated[str, StringConstraints(max_length=4096, pattern=TEXT_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=64, pattern=TEXT_PATTERN)]  # the columns are 64 wide
Time = Annotated[float, Field(ge=0, le=1e10)]  # Unix seconds, before the year 2286
METADATA = ("name", "user", "account", "partition", "qos", "array_job_id", "array_task_id",
            "het_job_id", "het_job_offset", "node_list", "alloc_gpus")


class SchedulerEventIn(Strict):
    """A job started (prolog) or ended (epilog) on ``node``, as the scheduler sees it."""

    event: Literal["start", "end"]
    scheduler: Literal["slurm"] = "slurm"
    cluster: ClusterLabel
    job: Label = Field(description="The scheduler's job id (Slurm: SLURM_JOB_ID, also for array tasks).")
    node: Label = Field(description="The node sending the event; a node token may only send its own.")
    start_s: Time | None = Field(default=None, description="The scheduler's start time (Unix s); required for `start`.")
    end_s: Time | None = Field(default=None, description="The scheduler's end time (Unix s); required for `end`.")
    name: Text | None = None
    user: Text | None = None
    account: Text | None = None
    partition: Text | None = None
    qos: Text | None = None
    array_job_id: Label | None = None
    array_task_id: Label | None = None
    het_job_id: Label | None = None
    het_job_offset: Label | None = None
    node_list: LongText | None = Field(default=None, description="The job's nodes as the scheduler writes them: `gpu[01-04]`.")
    alloc_gpus: int | None = Field(default=None, ge=0, le=1_000_000, description="GPUs allocated to the job, all nodes together.")
    state: ShortText | None = Field(default=None, description="The scheduler's final state (COMPLETED, FAILED, CANCELLED, ...).")
    exit_code: ShortText | None = None

    @model_validator(mode="after")
    def _times(self) -> SchedulerEventIn:
        if self.event == "start" and self.start_s is None:
            raise ValueError("start_s is missing: a start event needs the scheduler's start time")
        if self.event == "end" and self.end_s is None:
            raise ValueError("end_s is missing: an end event needs the scheduler's end time")
        if self.start_s is not None and self.end_s is not None and self.end_s < self.start_s:
            raise ValueError(f"end_s = {self.end_s} is before start_s = {self.start_s}")
        return self

    @property
    def job_id(self) -> str:
        return job_key(self.cluster, self.job)


def check_event(event: SchedulerEventIn, now_s: float) -> None:
    """What validates only against the collector's clock; raises BatchRejected (a 422)."""
    for name in ("start_s", "end_s"):
        value = getattr(event, name)
        if value is not None and value > now_s + FUTURE_TOLERANCE_S:
            raise BatchRejected(f"{name} = {value} is {value - now_s:.0f} s in the future (clock skew?)")


def record_event(engine: Engine, event: SchedulerEventIn) -> dict[str, Any]:
    """Apply a start or end event; returns the job's row afterwards."""
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                return _apply(conn, event)
        except IntegrityError:  # another collector inserted the row first: update it instead
            if attempt:
                raise
    raise AssertionError("unreachable")


def _apply(conn: Connection, event: SchedulerEventIn) -> dict[str, Any]:
    query = select(jobs_t).where(jobs_t.c.job_id == event.job_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    old = dict(row._mapping) if row is not None else None
    new = _merge(old, event)
    if old is None:
        conn.execute(jobs_t.insert().values(**new))
    else:
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        if changed:
            conn.execute(jobs_t.update().where(jobs_t.c.job_id == event.job_id).values(**changed))
    return dict(conn.execute(select(jobs_t).where(jobs_t.c.job_id == event.job_id)).one()._mapping)


def _merge(old: dict[str, Any] | None, event: SchedulerEventIn) -> dict[str, Any]:
    """The job's row after the event; the scheduler's non-empty metadata replaces any other."""
    at_s = event.start_s if event.start_s is not None else event.end_s
    assert at_s is not None
    row: dict[str, Any] = dict(old) if old else {
        "job_id": event.job_id, "cluster": event.cluster, "local_id": event.job, "state": RUNNING,
        "first_seen_s": at_s, "last_seen_s": at_s, "ended_s": None,
    }
    row["scheduler"] = event.scheduler
    row.update({name: value for name in METADATA if (value := getattr(event, name)) not in (None, "")})
    if event.start_s is not None:
        _start(row, event.start_s)
    if event.event == "end":
        _end(row, event)
    return row


def _start(row: dict[str, Any], start_s: float) -> None:
    ended_s = row.get("scheduler_ended_s")
    if ended_s is not None and start_s >= ended_s:  # a new run of the same id (requeue)
        row.update(state=RUNNING, ended_s=None, scheduler_ended_s=None, scheduler_state=None, exit_code=None,
                   scheduler_started_s=start_s)
        return
    started_s = row.get("scheduler_started_s")
    row["scheduler_started_s"] = start_s if started_s is None else min(started_s, start_s)
    row["first_seen_s"] = min(row["first_seen_s"], start_s)


def _end(row: dict[str, Any], event: SchedulerEventIn) -> None:
    assert event.end_s is not None
    ended_s = row.get("scheduler_ended_s")
    end_s = event.end_s if ended_s is None else min(ended_s, event.end_s)  # each node's epilog says the same, or later
    row.update(state=ENDED, ended_s=end_s, scheduler_ended_s=end_s)
    if event.state:
        row["scheduler_state"] = event.state
    if event.exit_code:
        row["exit_code"] = event.exit_code
