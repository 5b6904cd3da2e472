"""The collector on SQLite and PostgreSQL: exactly once, hourly rollups, validation, states."""

import copy
import time

import httpx
import pytest
from sqlalchemy import func, select

from collector.ingest import BatchRejected, apply_batch
from collector.lifecycle import end_silent_jobs
from collector.models import IngestedBatch, Job, JobGpu, JobHour, RawInterval
from collector.pieces import hour_pieces
from collector.schemas import BatchIn
from tests.conftest import BACKENDS

HOUR = 3600 * 490_000  # an hour boundary in the past (Unix time)


def interval(job="1", start=HOUR - 4.0, end=HOUR + 6.0, energy=3000.0, method="counter", uuid="GPU-0", **kw):
    row = {"gpu_uuid": uuid, "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3", "job": job,
           "start_s": start, "end_s": end, "gpu_seconds": end - start, "busy_gpu_seconds": (end - start) / 2,
           "energy_j": energy, "energy_method": method, "max_memory_used_bytes": 1 << 34}
    row.update(kw)
    return row


def batch(seq=0, intervals=None, node="node-a", **kw):
    body = {"node": node, "cluster": "c1", "datacenter": "dc1", "boot_id": "boot-1", "seq": seq,
            "sent_at_s": HOUR + 10, "jobs": [{"id": "1", "name": "train", "user": "alice", "account": "nlp"}],
            "intervals": intervals if intervals is not None else [interval()]}
    body.update(kw)
    return body


def table_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (IngestedBatch.__table__, RawInterval, Job.__table__, JobHour.__table__, JobGpu.__table__)}


def minutes(engine) -> dict:
    """The minute tier with its keys resolved: (job, node, minute) -> sums."""
    query = ("SELECT k.job_id, p.node, m.minute_s, m.gpu_seconds, m.busy_gpu_seconds, m.energy_j, m.energy_counter_j "
             "FROM job_minutes m JOIN job_keys k ON k.id = m.job_key JOIN places p ON p.id = m.place_key")
    with engine.connect() as conn:
        return {(job, node, minute): tuple(values) for job, node, minute, *values in conn.exec_driver_sql(query)}


def hours(engine) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(select(JobHour.__table__).order_by("job_id", "hour_s"))
        return {(r.job_id, r.hour_s): (r.gpu_seconds, r.busy_gpu_seconds, r.energy_j, r.energy_counter_j) for r in rows}


def test_hour_pieces_split_by_time():
    assert hour_pieces(HOUR - 4, HOUR + 6) == [(HOUR - 3600, 0.4), (HOUR, 0.6)]
    assert hour_pieces(HOUR, HOUR + 10) == [(HOUR, 1.0)]
    assert hour_pieces(HOUR + 5, HOUR + 5) == [(HOUR, 1.0)]


@BACKENDS
def test_batch_is_rolled_up_per_hour_exactly(engine):
    result = apply_batch(engine, BatchIn.model_validate(batch()), HOUR + 10)
    assert result.applied and result.intervals == 1
    assert hours(engine) == {("c1/1", HOUR - 3600): (4.0, 2.0, 1200.0, 1200.0), ("c1/1", HOUR): (6.0, 3.0, 1800.0, 1800.0)}
    with engine.connect() as conn:
        job = conn.execute(select(Job.__table__)).one()
    assert (job.job_id, job.cluster, job.local_id, job.name, job.user, job.account, job.state) == (
        "c1/1", "c1", "1", "train", "alice", "nlp", "running")
    assert (job.first_seen_s, job.last_seen_s) == (HOUR - 4, HOUR + 6)


@BACKENDS
def test_same_batch_twice_and_out_of_order_counts_once(engine):
    first, second = batch(seq=0), batch(seq=1, intervals=[interval(start=HOUR + 6, end=HOUR + 16, energy=1000.0)])
    for body in (second, first, second, first):
        apply_batch(engine, BatchIn.model_validate(body), HOUR + 20)
    assert table_counts(engine) == {"ingested_batches": 2, "raw_intervals": 2, "jobs": 1, "job_hours": 2, "job_gpus": 1}
    assert hours(engine)[("c1/1", HOUR)] == (16.0, 8.0, 2800.0, 2800.0)
    assert minutes(engine) == {("c1/1", "node-a", HOUR - 60): (4.0, 2.0, 1200.0, 1200.0),
                               ("c1/1", "node-a", HOUR): (16.0, 8.0, 2800.0, 2800.0)}
    with engine.connect() as conn:
        job = conn.execute(select(Job.__table__)).one()
    assert (job.first_seen_s, job.last_seen_s) == (HOUR - 4, HOUR + 16)


@BACKENDS
def test_unallocated_time_goes_to_the_clusters_idle_account(engine):
    apply_batch(engine, BatchIn.model_validate(batch(intervals=[interval(job=None, method="power_integrated")])), HOUR + 10)
    (key,) = {k[0] for k in hours(engine)}
    assert key == "c1/unallocated"
    assert hours(engine)[("c1/unallocated", HOUR)] == (6.0, 3.0, 1800.0, 0.0)


@BACKENDS
def test_future_data_is_rejected_and_nothing_is_stored(engine):
    future = batch(intervals=[interval(start=HOUR, end=HOUR + 10)])
    with pytest.raises(BatchRejected, match="in the future"):
        apply_batch(engine, BatchIn.model_validate(future), HOUR - 3600)
    assert set(table_counts(engine).values()) == {0}


@BACKENDS
def test_silent_jobs_end_and_newer_data_revives_them(engine):
    apply_batch(engine, BatchIn.model_validate(batch()), HOUR + 10)
    assert end_silent_jobs(engine, HOUR + 6 + 299, silence_s=300) == 0
    assert end_silent_jobs(engine, HOUR + 6 + 301, silence_s=300) == 1
    with engine.connect() as conn:
        assert conn.execute(select(Job.state, Job.ended_s)).one() == ("ended", HOUR + 6)
    late_replay = batch(seq=1, intervals=[interval(start=HOUR - 100, end=HOUR - 90)])
    apply_batch(engine, BatchIn.model_validate(late_replay), HOUR + 400)
    with engine.connect() as conn:
        assert conn.execute(select(Job.state)).scalar_one() == "ended"
    newer = batch(seq=2, intervals=[interval(start=HOUR + 400, end=HOUR + 410)])
    apply_batch(engine, BatchIn.model_validate(newer), HOUR + 410)
    with engine.connect() as conn:
        assert conn.execute(select(Job.state, Job.ended_s)).one() == ("running", None)


BAD = [
    (lambda b: b["intervals"][0].update(energy_j=-5.0), "intervals[0].energy_j", -5.0),
    (lambda b: b["intervals"][0].update(energy_j="NaN"), "intervals[0].energy_j", "NaN"),
    (lambda b: b["intervals"][0].update(energy_method="guess"), "intervals[0].energy_method", "guess"),
    (lambda b: b["intervals"][0].update(gpu_seconds=50.0), "intervals[0]", None),
    (lambda b: b["intervals"][0].update(end_s=HOUR - 10), "intervals[0]", None),
    (lambda b: b["intervals"][0].update(energy_j=1e9), "intervals[0].energy_j", 1e9),
    (lambda b: b["intervals"][0].update(energy_j=3e7), "intervals[0]", None),
    (lambda b: b.update(seq=-1), "seq", -1),
    (lambda b: b.update(cluster="a/b"), "cluster", "a/b"),
    (lambda b: b.pop("node"), "node", None),
    (lambda b: b.update(extra_field=1), "extra_field", 1),
]


@BACKENDS
@pytest.mark.parametrize(("mutate", "field", "value"), BAD)
def test_bad_batch_gets_422_naming_field_and_value_and_stores_nothing(server, db_url, mutate, field, value):
    good = batch(sent_at_s=time.time(), intervals=[interval(start=time.time() - 20, end=time.time() - 10)])
    body = copy.deepcopy(good)
    mutate(body)
    response = httpx.post(f"{server.url}/v1/ingest", json=body, timeout=10)
    assert response.status_code == 422, response.text
    detail = response.json()
    fields = [e["field"] for e in detail["errors"]]
    assert field in fields, detail
    if value is not None:
        assert any(e["value"] == value for e in detail["errors"])
        assert f"{field} = {value!r}" in detail["detail"]
    assert httpx.get(f"{server.url}/v1/jobs", timeout=10).json()["total"] == 0
    ok = httpx.post(f"{server.url}/v1/ingest", json=good, timeout=10)
    assert ok.json() == {"applied": True, "intervals": 1}
    assert httpx.post(f"{server.url}/v1/ingest", json=good, timeout=10).json() == {"applied": False, "intervals": 1}
