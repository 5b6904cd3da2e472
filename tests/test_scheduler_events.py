"""Scheduler lifecycle events (collector.scheduler, POST /v1/scheduler/events) on SQLite and
PostgreSQL: the scheduler's metadata wins over the agents', its end time over the silence
timeout, late agent data does not revive a job it ended, a requeue starts a new run."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.accounting.rates import LedgerConfig
from api.http.app import create_app
from api.http.auth import AuthSettings
from api.reports.summary import FOOTER, HEADER
from collector import tokens
from collector.ingest import apply_batch
from collector.lifecycle import end_silent_jobs
from collector.schemas import BatchIn
from tests.conftest import BACKENDS
from tests.test_ingest import HOUR, batch, interval

START_S, END_S = HOUR - 100.0, HOUR + 20.0


def event(kind: str = "start", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": kind, "cluster": "c1", "job": "1", "node": "node-a", "start_s": START_S,
                            "user": "root", "account": "vision", "partition": "gpu", "qos": "high", "name": "array",
                            "array_job_id": "7", "array_task_id": "0", "node_list": "node-[a-b]", "alloc_gpus": 2}
    if kind == "end":
        body.update(end_s=END_S, state="FAILED", exit_code="3:0")
    body.update(kw)
    return body


@pytest.fixture
def client(engine: Engine) -> TestClient:
    return TestClient(create_app(engine, LedgerConfig(), scheduler=False))


def job(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/jobs/c1/1")
    assert response.status_code == 200, response.text
    return response.json()


@BACKENDS
def test_scheduler_metadata_wins_over_the_agents(engine: Engine, client: TestClient) -> None:
    apply_batch(engine, BatchIn(**batch()), HOUR + 10)  # the agent says alice, nlp, train
    assert (job(client)["user"], job(client)["account"]) == ("alice", "nlp")
    assert client.post("/v1/scheduler/events", json=event()).status_code == 200
    apply_batch(engine, BatchIn(**batch(seq=1, intervals=[interval(start=HOUR + 6.0, end=HOUR + 16.0)])), HOUR + 20)
    report = job(client)
    assert (report["user"], report["account"], report["name"]) == ("root", "vision", "array")
    assert report["scheduler"] == {
        "name": "slurm", "partition": "gpu", "qos": "high", "array_job_id": "7", "array_task_id": "0",
        "het_job_id": None, "het_job_offset": None, "node_list": "node-[a-b]", "alloc_gpus": 2,
        "state": None, "exit_code": None, "started_at": "2025-11-24T15:58:20Z", "ended_at": None,
    }
    assert report["state"] == "running" and report["started_at"] == "2025-11-24T15:58:20Z"


@BACKENDS
def test_the_end_is_the_schedulers_and_late_data_does_not_revive(engine: Engine, client: TestClient) -> None:
    apply_batch(engine, BatchIn(**batch()), HOUR + 10)  # data up to HOUR + 6
    ack = client.post("/v1/scheduler/events?summary=true", json=event("end")).json()
    assert (ack["state"], ack["ended_at"]) == ("ended", "2025-11-24T16:00:20Z")
    assert ack["summary"].startswith(HEADER) and ack["summary"].endswith(FOOTER + "\n")
    assert "State:           FAILED, exit code 3:0" in ack["summary"]
    assert "Report:          http://testserver/jobs/c1/1" in ack["summary"]
    apply_batch(engine, BatchIn(**batch(seq=1, intervals=[interval(start=HOUR + 6.0, end=HOUR + 21.0)])), HOUR + 30)
    report = job(client)
    assert (report["state"], report["ended_at"], report["scheduler"]["state"]) == ("ended", "2025-11-24T16:00:20Z", "FAILED")
    assert report["gpu_hours"] == pytest.approx(25 / 3600)  # the late data is still accounted
    assert end_silent_jobs(engine, HOUR + 10_000, 300) == 0  # already ended: the silence sweep leaves it


@BACKENDS
def test_every_nodes_epilog_and_a_requeue(engine: Engine, client: TestClient) -> None:
    client.post("/v1/scheduler/events", json=event("end", end_s=END_S + 1, node="node-b"))
    client.post("/v1/scheduler/events", json=event("end"))
    assert job(client)["ended_at"] == "2025-11-24T16:00:20Z"  # the earliest: every node's epilog comes after
    client.post("/v1/scheduler/events", json=event(start_s=END_S + 60))  # requeued: a new run of the same id
    report = job(client)
    assert (report["state"], report["ended_at"], report["scheduler"]["state"]) == ("running", None, None)
    assert report["scheduler"]["started_at"] == "2025-11-24T16:01:20Z"


def test_silence_stays_the_fallback(engine: Engine, client: TestClient) -> None:
    client.post("/v1/scheduler/events", json=event())  # a start, then no end event ever
    assert end_silent_jobs(engine, START_S + 301, 300) == 1
    assert job(client)["state"] == "ended"


@pytest.mark.parametrize(("change", "message"), [
    ({"start_s": None}, "start_s is missing: a start event needs the scheduler's start time"),
    ({"event": "end", "end_s": START_S - 1}, f"end_s = {START_S - 1} is before start_s = {START_S}"),
    ({"alloc_gpus": -1}, "Input should be greater than or equal to 0"),
    ({"event": "stop"}, "Input should be 'start' or 'end'"),
    ({"start_s": 1e300}, "Input should be less than or equal to 10000000000"),
    ({"start_s": 9e9}, "start_s = 9000000000.0 is"),
])
def test_bad_events_are_rejected_naming_the_field(client: TestClient, change: dict[str, Any], message: str) -> None:
    response = client.post("/v1/scheduler/events", json=event(**change))
    assert response.status_code == 422
    assert message in response.text
    assert client.get("/v1/jobs/c1/1").status_code == 404


def test_a_node_token_sends_only_its_own_nodes_events(engine: Engine) -> None:
    app = create_app(engine, LedgerConfig(), scheduler=False, auth=AuthSettings(required=True))
    client = TestClient(app)
    node_a = tokens.create_token(engine, "node", node="node-a")
    reader = tokens.create_token(engine, "reader")
    assert client.post("/v1/scheduler/events", json=event()).status_code == 401
    forbidden = client.post("/v1/scheduler/events", json=event(node="node-b"), headers={"Authorization": f"Bearer {node_a}"})
    assert forbidden.status_code == 403
    assert "is for node 'node-a'; it cannot send a scheduler event for node 'node-b'" in forbidden.json()["detail"]
    assert client.post("/v1/scheduler/events", json=event(), headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    assert client.post("/v1/scheduler/events", json=event(), headers={"Authorization": f"Bearer {node_a}"}).status_code == 200
    summary = client.get("/v1/jobs/c1/1/summary.txt", headers={"Authorization": f"Bearer {reader}"})
    assert summary.status_code == 200 and summary.text.startswith(HEADER)
