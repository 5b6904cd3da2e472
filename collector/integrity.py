"""What a batch may change, checked before it is written (the ingest route calls these).

* A replay: the same (node, boot_id, seq) with the same content is a duplicate (acknowledged,
  nothing written); with other content it is refused (``BatchConflict``, 409, both hashes).
* GPU time: no GPU of a node may hold more GPU-seconds in a stretch of time than the stretch
  is long (``collector.gputime``), counting what is already stored. A batch that would is
  refused whole (409): as a second live agent when none of the node's batches received since
  the contested time is this agent boot's (raw rows carry no batch seq), else as an overlap
  with the node's own stored time.
* Job metadata (name, user, account, budgets) is first-writer-wins from agents: a value that
  differs from the stored one is not applied, and is logged and counted. An admin, or the
  scheduler, changes it with ``collector.jobmeta.set_job_metadata``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from collector.gputime import TOLERANCE_S, Excess, Span, excess
from collector.ingest import FUTURE_TOLERANCE_S
from collector.models import GpuKey, IngestedBatch, Job, Place, RawInterval
from collector.pieces import job_key
from collector.schemas import BatchIn, spans_by_gpu

log = logging.getLogger(__name__)
batches_t, jobs_t, raw_t = IngestedBatch.__table__, Job.__table__, RawInterval
gpu_keys_t, places_t = GpuKey.__table__, Place.__table__
AGENT_FIELDS = ("name", "user", "account", "budget_usd", "budget_co2e_kg")


class BatchConflict(ValueError):
    """A batch that contradicts what is stored; ``outcome`` is the metric label."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class MetadataConflict:
    job_id: str
    field: str
    stored: object
    sent: object


@dataclass(frozen=True, slots=True)
class Checked:
    duplicate: bool  # applied before with the same content: write nothing, acknowledge
    metadata_conflicts: list[MetadataConflict]  # values dropped from batch.jobs, to count


def check_batch(engine: Engine, batch: BatchIn) -> Checked:
    """Everything a batch must agree with in the database, in one connection: raises
    ``BatchConflict`` when it contradicts what is stored; drops the job metadata values that
    differ from the stored ones (``keep_first_metadata``)."""
    with engine.connect() as conn:
        if _applied_before(conn, batch):
            return Checked(duplicate=True, metadata_conflicts=[])
        try:
            _check_gpu_time(conn, batch)
        except BatchConflict:
            conn.rollback()  # a new snapshot (PostgreSQL): another collector may have applied this very batch since
            if _applied_before(conn, batch):
                return Checked(duplicate=True, metadata_conflicts=[])
            raise
        return Checked(duplicate=False, metadata_conflicts=keep_first_metadata(conn, batch))


def _applied_before(conn: Connection, batch: BatchIn) -> bool:
    """Whether this (node, boot_id, seq) is stored; ``BatchConflict`` if with other content."""
    digest = batch.content_hash()  # of the batch as sent, before any value is dropped
    stored = conn.execute(select(batches_t.c.content_hash).where(
        batches_t.c.node == batch.node, batches_t.c.boot_id == batch.boot_id, batches_t.c.seq == batch.seq)).first()
    if stored is None:
        return False
    if stored.content_hash is not None and stored.content_hash != digest:
        raise BatchConflict(
            f"batch (node {batch.node!r}, boot_id {batch.boot_id!r}, seq {batch.seq}) was applied before "
            f"with content sha256 {stored.content_hash}; this one has sha256 {digest}: a replay must be "
            "identical, so it is refused and nothing of it is stored", "conflict")
    return True


def _stored_spans(conn: Connection, batch: BatchIn) -> dict[str, list[Span]]:
    """The node's stored raw intervals within the batch's time, by GPU UUID."""
    low_s, high_s = min(i.start_s for i in batch.intervals), max(i.end_s for i in batch.intervals)
    r = raw_t.c
    rows = conn.execute(
        select(gpu_keys_t.c.gpu_uuid, r.start_s, r.end_s, r.gpu_seconds)
        .select_from(raw_t.join(gpu_keys_t, gpu_keys_t.c.id == r.gpu_key).join(places_t, places_t.c.id == gpu_keys_t.c.place_id))
        .where(places_t.c.node == batch.node, r.end_s > low_s + TOLERANCE_S, r.start_s < high_s - TOLERANCE_S))
    stored: dict[str, list[Span]] = {}
    for row in rows:
        stored.setdefault(row.gpu_uuid, []).append(Span(row.start_s, row.end_s, row.gpu_seconds, stored=True))
    return stored


def _check_gpu_time(conn: Connection, batch: BatchIn) -> None:
    if not batch.intervals:
        return
    stored = _stored_spans(conn, batch)
    for uuid, spans in spans_by_gpu(batch).items():
        if uuid not in stored:
            continue
        found = excess(spans + stored[uuid])
        if found is not None:
            raise _overlap(conn, batch, uuid, found)


def _overlap(conn: Connection, batch: BatchIn, uuid: str, found: Excess) -> BatchConflict:
    """Raw rows do not name their batch; the node's batches that may have stored time after
    ``found.start_s`` are those received since then (an interval cannot arrive before it ends,
    give or take the agents' clock skew): another agent if none of them is this boot's."""
    since_s = found.start_s - FUTURE_TOLERANCE_S
    boots = sorted(conn.execute(select(batches_t.c.boot_id).distinct().where(
        batches_t.c.node == batch.node, batches_t.c.received_at_s >= since_s)).scalars())
    where = f"node {batch.node!r}, gpu_uuid {uuid!r}: {found.describe()}"
    if boots and batch.boot_id not in boots:
        return BatchConflict(
            f"{where}: another agent (boot_id {', '.join(map(repr, boots))}) already reported this GPU's time; this "
            f"agent (boot_id {batch.boot_id!r}) is refused. Are two agents running as node {batch.node!r}? "
            "Give each node its own --node name (and token)", "overlap")
    return BatchConflict(
        f"{where}: the batch overlaps GPU time this node already stored; "
        "no GPU's seconds may exceed wall-clock time, so it is refused and nothing of it is stored", "overlap")


def keep_first_metadata(conn: Connection, batch: BatchIn) -> list[MetadataConflict]:
    """Drop from ``batch.jobs`` every value that differs from the one stored (first writer
    wins); the conflicts with other agents are logged and returned for counting (a value an
    admin or the scheduler set is expected to differ from what agents send)."""
    described = [j for j in batch.jobs if any(getattr(j, f) is not None for f in AGENT_FIELDS)]
    if not described:
        return []
    keys = {job_key(batch.cluster, j.id): j for j in described}
    rows = conn.execute(select(jobs_t.c.job_id, jobs_t.c.metadata_source, jobs_t.c.scheduler,
                               *[jobs_t.c[f] for f in AGENT_FIELDS]).where(jobs_t.c.job_id.in_(sorted(keys)))).all()
    conflicts = []
    for row in rows:
        job = keys[row.job_id]
        for field in AGENT_FIELDS:
            stored, sent = getattr(row, field), getattr(job, field)
            if stored is not None and sent is not None and stored != sent:
                setattr(job, field, None)  # the writer keeps the stored value where the batch has none
                if row.metadata_source is None and row.scheduler is None:  # an admin's or the scheduler's: expected to differ
                    conflicts.append(MetadataConflict(row.job_id, field, stored, sent))
    for c in conflicts:
        _warn_once(batch.node, c)
    return conflicts


_warned: set[tuple[str, str, str, str]] = set()


def _warn_once(node: str, c: MetadataConflict) -> None:
    """One log line per (node, job, field, value) and process: agents resend metadata every batch."""
    key = (node, c.job_id, c.field, repr(c.sent))
    if key in _warned:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned.add(key)
    log.warning("node %r: job %r %s = %r differs from the stored %r: not applied (first writer wins; "
                "an admin or the scheduler changes it)", node, c.job_id, c.field, c.sent, c.stored)
