"""The ingest hot path's mechanics: one-pass decoding with FastAPI's 422 wording, group commit
on the event loop, and the writer's kept connection."""

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from api.accounting.rates import LedgerConfig
from api.http.app import create_app
from collector.models import IngestedBatch, JobGpu, RawInterval
from collector.schemas import BatchIn
from collector.writer import GroupWriter
from tests.conftest import BACKENDS


def body(seq: int, node: str = "n1", energy_j: float = 500.0) -> dict:
    now = time.time()
    return {"node": node, "cluster": "c", "datacenter": "dc", "boot_id": "b", "seq": seq, "sent_at_s": now,
            "jobs": [{"id": "7", "name": "train"}],
            "intervals": [{"gpu_uuid": f"GPU-{g}", "gpu_index": g, "gpu_model": "NVIDIA H100 80GB HBM3", "job": "7",
                           "start_s": now - 20 - seq, "end_s": now - 10 - seq, "gpu_seconds": 10.0, "busy_gpu_seconds": 5.0,
                           "energy_j": energy_j, "energy_method": "counter"} for g in range(2)]}


def count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


@pytest.fixture
def client(engine):
    with TestClient(create_app(engine, LedgerConfig(), scheduler=False)) as c:
        yield c


PLAIN_TEXT = json.dumps(body(0))  # once: body() reads the clock, and the value names its length


@pytest.mark.parametrize(("content", "headers", "field", "value", "message"), [
    (b"", {"content-type": "application/json"}, "body", None, "Field required"),
    (b"{not json", {"content-type": "application/json"}, "body", "<9 bytes that are not a JSON document>",
     "Invalid JSON: key must be a string at line 1 column 2"),
    (b"[1, 2]", {"content-type": "application/json"}, "body", "<list>",
     "Input should be a valid dictionary or object to extract fields from"),
    (PLAIN_TEXT.encode(), {"content-type": "text/plain"}, "body",
     f"<{len(PLAIN_TEXT)} bytes that are not a JSON document>",
     "Input should be a valid dictionary or object to extract fields from"),
    # json.loads took NaN, and the 422 that named it could not be written: a 500 before.
    (json.dumps(body(0)).replace('"energy_j": 500.0', '"energy_j": NaN', 1).encode(),
     {"content-type": "application/json"}, "intervals[0].energy_j", "nan", "Input should be a finite number"),
])
def test_rejections_name_the_field_and_value_as_before(client, engine, content, headers, field, value, message):
    response = client.post("/v1/ingest", content=content, headers=headers)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert {"field": field, "value": value, "message": message} in errors
    assert count(engine, IngestedBatch) == 0


def test_a_json_media_type_with_parameters_or_a_suffix_is_json(client):
    for seq, media in enumerate(("application/json; charset=utf-8", "application/vnd.gpuledger+json")):
        batch = body(seq, node=f"n{seq}")  # a node each: the same GPU time twice from one node is refused
        response = client.post("/v1/ingest", content=json.dumps(batch).encode(), headers={"content-type": media})
        assert response.status_code == 200 and response.json() == {"applied": True, "intervals": 2}, response.text


@BACKENDS
def test_batches_that_queue_share_transactions_and_a_bad_one_fails_alone(engine):
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    writer = GroupWriter(engine)
    writer.start()
    good = [BatchIn.model_validate(body(seq, node=f"n{seq % 4}")) for seq in range(64)]
    # What validation lets through but the database refuses (built past validation): a NULL datacenter.
    bad = BatchIn.model_construct(**{**BatchIn.model_validate(body(99, node="bad")).__dict__, "datacenter": None})

    async def submit_all(batches: list[BatchIn]) -> list:
        return await asyncio.gather(*(writer.submit(b) for b in batches), return_exceptions=True)

    try:
        first = asyncio.run(submit_all(good))
        grouped = len(commits)
        second = asyncio.run(submit_all([good[0], bad, *good[1:3]]))
    finally:
        writer.close()
    assert [r.applied for r in first] == [True] * 64
    assert grouped < 16  # 64 batches that arrived together: a few transactions, not 64
    assert isinstance(second[1], Exception) and "datacenter" in str(second[1])  # the bad batch fails alone
    assert [r.applied for r in (second[0], *second[2:])] == [False] * 3  # replays: acknowledged, not applied again
    assert count(engine, IngestedBatch) == 64 and count(engine, RawInterval) == 128
    assert count(engine, JobGpu) == 8  # 4 nodes x 2 GPUs, once each
