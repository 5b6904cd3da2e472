"""Integrity on the real app and database (both backends), tokens on: bad numbers are 422 and
store nothing; replays must be identical; no GPU's time is stored twice; job metadata is
first-writer-wins; forecasts past the year 9999 are null; scoped readers stay off /metrics;
CSV cells cannot be formulas; job ids cannot shadow routes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, inspect, select, table

from api.accounting.rates import LedgerConfig
from api.http.app import create_app
from api.http.auth import AuthSettings
from api.reports.render import render
from collector import tokens
from collector.jobmeta import set_job_metadata
from collector.models import Job, JobHour
from tests.conftest import BACKENDS

NOW = time.time()
T0 = math.floor(NOW / 3600) * 3600 - 2 * 3600  # two whole hours ago
H100 = "NVIDIA H100 80GB HBM3"


def interval(start: float, seconds: float = 10.0, job: str | None = "1", uuid: str = "GPU-0", share: float = 1.0,
             watts: float = 500.0) -> dict[str, Any]:
    return {"gpu_uuid": uuid, "gpu_index": 0, "gpu_model": H100, "job": job, "start_s": start, "end_s": start + seconds,
            "gpu_seconds": seconds * share, "busy_gpu_seconds": seconds * share, "energy_j": watts * seconds * share,
            "energy_method": "counter"}


def batch(seq: int, intervals: list[dict], node: str = "n1", boot: str = "boot-a", jobs: list[dict] | None = None) -> dict:
    return {"node": node, "cluster": "c", "datacenter": "dc", "boot_id": boot, "seq": seq, "sent_at_s": NOW,
            "jobs": jobs if jobs is not None else [{"id": "1", "account": "vision", "user": "alice", "name": "resnet"}],
            "intervals": intervals}


class World:
    def __init__(self, client: TestClient, engine: Engine, headers: dict[str, dict[str, str]]) -> None:
        self.client, self.engine, self.headers = client, engine, headers

    def ingest(self, body: dict | str, node: str = "n1") -> Any:
        headers = self.headers[node] | {"content-type": "application/json"}
        content = body if isinstance(body, str) else json.dumps(body)
        return self.client.post("/v1/ingest", content=content, headers=headers)

    def get(self, path: str, who: str = "admin", headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=self.headers[who] | (headers or {}))

    def totals(self) -> dict[str, Any]:
        """Row counts of every table and the summed rollups: what a rejected request must not change."""
        with self.engine.connect() as conn:
            counts = {name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
                      for name in inspect(self.engine).get_table_names() if name != "alembic_version"}
            hours = JobHour.__table__
            sums = conn.execute(select(func.coalesce(func.sum(hours.c.gpu_seconds), 0.0),
                                       func.coalesce(func.sum(hours.c.energy_j), 0.0))).one()
        return counts | {"gpu_seconds": sums[0], "energy_j": sums[1]}

    def metric(self, name: str, **labels: str) -> float:
        text = self.get("/metrics").text
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    tokens.cache.clear()
    made = {name: tokens.create_token(engine, kind, node=node, account=account) for name, (kind, node, account) in {
        "n1": ("node", "n1", None), "n2": ("node", "n2", None), "admin": ("admin", None, None),
        "reader": ("reader", None, None), "vision": ("reader", None, "vision")}.items()}
    app = create_app(engine, LedgerConfig(), scheduler=False, auth=AuthSettings(required=True, open_paths=[]))
    with TestClient(app) as client:
        yield World(client, engine, {k: {"Authorization": f"Bearer {v}"} for k, v in made.items()})
    tokens.cache.clear()


# -- bad numbers: 422 naming field, value and bound; never 500; nothing stored -------------------

RAW_BAD = [
    # (what replaces the first interval's energy_j in the JSON text, field, value as the error gives it, message)
    ("NaN", "intervals[0].energy_j", "nan", "Input should be a finite number"),
    ("Infinity", "intervals[0].energy_j", "inf", "Input should be a finite number"),
    ("-Infinity", "intervals[0].energy_j", "-inf", "Input should be a finite number"),
    ("1e309", "intervals[0].energy_j", "inf", "Input should be a finite number"),
    ("1e15", "intervals[0].energy_j", 1e15, "Input should be less than or equal to 36000000"),
]

BAD = [
    (lambda b: b["intervals"][0].update(max_memory_used_bytes=2**63), "intervals[0].max_memory_used_bytes", 2**63,
     "Input should be less than or equal to 9007199254740992"),
    (lambda b: b.update(seq=2**64), "seq", 2**64, "Input should be less than or equal to 4611686018427387904"),
    (lambda b: b["jobs"][0].update(name="bad\u0000name"), "jobs[0].name", "bad\u0000name",
     "String should match pattern '^[^\\x00-\\x1f\\x7f]*$'"),
    (lambda b: b["jobs"][0].update(name="a\ud800b"), "jobs[0].name", "a\\ud800b",
     "Input should be a valid string, unable to parse raw data as a unicode string"),
    (lambda b: b["jobs"][0].update(budget_usd=1e15), "jobs[0].budget_usd", 1e15,
     "Input should be less than or equal to 1000000000000"),
    (lambda b: b["intervals"][0].update(start_s=1e13, end_s=1e13 + 10), "intervals[0].start_s", 1e13,
     "Input should be less than or equal to 4102444800"),
    (lambda b: b.update(network=[{"job": "1", "start_s": T0, "end_s": T0 + 10, "ports": 1, "seconds": 10.0,
                                  "counters": {"tx_bytes": 1e300}, "apportioned_bytes": 0.0, "peak_tx_gbps": 1.0,
                                  "peak_rx_gbps": 1.0}]),
     "network[0].counters.tx_bytes", 1e300, "Input should be less than or equal to 1000000000000000000"),
]


def _check_422(world: World, response: Any, field: str, value: Any, message: str) -> None:
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert {"field": field, "value": value, "message": message} in errors, errors
    assert f"{field} = {value!r}: {message}" in response.json()["detail"]


@BACKENDS
def test_bad_numbers_and_strings_are_422_naming_field_value_and_bound(world: World):
    assert world.ingest(batch(0, [interval(T0)])).status_code == 200
    before = world.totals()
    assert before["gpu_seconds"] == 10.0 and before["energy_j"] == 5000.0
    for literal, field, value, message in RAW_BAD:
        text = json.dumps(batch(1, [interval(T0 + 10)])).replace('"energy_j": 5000.0', f'"energy_j": {literal}', 1)
        _check_422(world, world.ingest(text), field, value, message)
    for mutate, field, value, message in BAD:
        body = batch(1, [interval(T0 + 10)])
        mutate(body)
        _check_422(world, world.ingest(json.dumps(body, allow_nan=False)), field, value, message)
    assert world.totals() == before
    assert world.metric("gpuledger_collector_batches_total", outcome="rejected") == len(RAW_BAD) + len(BAD)
    assert world.ingest(batch(1, [interval(T0 + 10)])).status_code == 200  # the node goes on


@BACKENDS
def test_bad_query_and_path_values_are_4xx_never_500(world: World):
    world.ingest(batch(0, [interval(T0)]))
    before = world.totals()
    offset = world.get(f"/v1/jobs?offset={2**63}")
    assert offset.status_code == 422 and offset.json()["errors"][0]["message"] == "Input should be less than or equal to 2147483648"
    nul = world.get("/v1/jobs?user=a%00b")
    assert nul.status_code == 422 and nul.json()["errors"][0]["field"] == "query.user"
    assert world.get("/v1/jobs/c%2F1%00x").json() == {"detail": "job_id 'c/1\\x00x' not found"}
    year1 = world.get("/v1/usage?to=0001-01-01T00:00:00Z")
    assert year1.status_code == 422 and year1.json()["detail"].startswith("from = -62138188800 s since 1970 (UTC)")
    budget = world.client.put("/v1/budget/c%2F1", content='{"usd": NaN}',
                              headers=world.headers["admin"] | {"content-type": "application/json"})
    assert budget.status_code == 422 and budget.json()["errors"][0]["value"] == "nan"
    assert world.totals() == before


# -- forecasts beyond the year 9999 ----------------------------------------------------------------

@BACKENDS
def test_forecast_past_the_year_9999_is_null_and_every_page_answers(world: World):
    world.ingest(batch(0, [interval(T0)], jobs=[{"id": "1", "account": "vision", "budget_usd": 1e12}]))
    admin = world.headers["admin"]
    assert world.client.post("/v1/progress/c%2F1", json={"steps_done": 1, "total_steps": 1e15}, headers=admin).status_code == 200
    report = world.get("/v1/jobs/c%2F1").json()
    budget = report["budget"]
    assert budget["forecast_method"] == "steps"
    assert budget["forecast_end_at"] is None and budget["forecast_cost_usd"] is None  # "never"
    assert budget["budget_exhausted_at"] is None  # $1e12 at $0.0167 an hour: after 9999
    for path in ("/v1/jobs", "/metrics", "/v1/series/c%2F1", "/v1/report.csv/c%2F1", "/v1/footprint/c%2F1", "/"):
        assert world.get(path).status_code == 200, path
    assert world.get("/v1/series/c%2F1").json()["forecast"] is None


# -- replays must be identical ---------------------------------------------------------------------

@BACKENDS
def test_replay_with_other_content_is_409_naming_both_hashes(world: World):
    first = batch(0, [interval(T0)])
    assert world.ingest(first).json() == {"applied": True, "intervals": 1}
    assert world.ingest(first | {"sent_at_s": NOW + 5}).json() == {"applied": False, "intervals": 1}  # a resend
    before = world.totals()
    other = batch(0, [interval(T0, watts=1800.0)])  # same (node, boot_id, seq), 18 kJ instead of 5 kJ
    response = world.ingest(other)
    assert response.status_code == 409
    from collector.schemas import BatchIn

    old_hash, new_hash = BatchIn.model_validate(first).content_hash(), BatchIn.model_validate(other).content_hash()
    assert response.json() == {"outcome": "conflict", "detail": (
        f"batch refused: batch (node 'n1', boot_id 'boot-a', seq 0) was applied before with content sha256 {old_hash}; "
        f"this one has sha256 {new_hash}: a replay must be identical, so it is refused and nothing of it is stored")}
    assert world.totals() == before
    assert world.metric("gpuledger_collector_batches_total", outcome="conflict") == 1
    assert world.metric("gpuledger_collector_batches_total", outcome="duplicate") == 1


# -- no GPU's time stored twice --------------------------------------------------------------------

@BACKENDS
def test_overlapping_gpu_time_is_refused_and_counted(world: World):
    assert world.ingest(batch(0, [interval(T0)])).status_code == 200
    before = world.totals()
    again = world.ingest(batch(1, [interval(T0 + 5)]))  # 5 s of GPU-0's time a second time
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"batch refused: node 'n1', gpu_uuid 'GPU-0': [{T0:.3f}, {T0 + 15:.3f}] holds 20 GPU-seconds (10 of them already "
        "stored), more than its 15 s of wall-clock time: the batch overlaps GPU time this node already stored; "
        "no GPU's seconds may exceed wall-clock time, so it is refused and nothing of it is stored")
    thousand = world.ingest(batch(2, [interval(T0 + 100) for _ in range(1000)]))  # one batch, 1000x the same 10 s
    assert thousand.status_code == 422
    assert thousand.json()["errors"][0]["message"] == (
        f"intervals of gpu_uuid 'GPU-0' overlap: [{T0 + 100:.3f}, {T0 + 110:.3f}] holds 10000 GPU-seconds, "
        "more than its 10 s of wall-clock time")
    assert world.totals() == before
    assert world.metric("gpuledger_collector_batches_total", outcome="overlap") == 1
    # What is honest passes: a GPU shared by two jobs, a gap filled later, another GPU at the same time.
    shared = [interval(T0 + 20, job="1", share=0.5), interval(T0 + 20, job="2", share=0.5)]
    assert world.ingest(batch(3, shared)).status_code == 200
    assert world.ingest(batch(4, [interval(T0 + 40)])).status_code == 200
    assert world.ingest(batch(5, [interval(T0 + 30)])).status_code == 200  # out of order, into the gap
    assert world.ingest(batch(6, [interval(T0, uuid="GPU-1")])).status_code == 200
    assert world.totals()["gpu_seconds"] == 50.0


@BACKENDS
def test_a_second_live_agent_with_the_same_node_name_is_refused(world: World):
    assert world.ingest(batch(0, [interval(T0)], boot="boot-a")).status_code == 200
    before = world.totals()
    second = world.ingest(batch(0, [interval(T0 + 3)], boot="boot-b"))
    assert second.status_code == 409
    assert second.json()["detail"] == (
        f"batch refused: node 'n1', gpu_uuid 'GPU-0': [{T0:.3f}, {T0 + 13:.3f}] holds 20 GPU-seconds (10 of them already "
        "stored), more than its 13 s of wall-clock time: another agent (boot_id 'boot-a') already reported this GPU's "
        "time; this agent (boot_id 'boot-b') is refused. Are two agents running as node 'n1'? Give each node its own "
        "--node name (and token)")
    assert world.totals() == before
    # A restarted agent (a new boot id) that goes on where the old one stopped is fine.
    assert world.ingest(batch(0, [interval(T0 + 10)], boot="boot-c")).status_code == 200


# -- job metadata: first writer wins --------------------------------------------------------------

def _job(engine: Engine, job_id: str = "c/1") -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(Job.__table__).where(Job.__table__.c.job_id == job_id)).one()
    return dict(row._mapping)


@BACKENDS
def test_job_metadata_is_first_writer_wins_and_changed_only_by_an_admin(world: World):
    assert world.ingest(batch(0, [interval(T0)])).status_code == 200  # n1: account vision, user alice
    hijack = {"id": "1", "account": "nlp", "user": "mallory", "name": "resnet", "budget_usd": 1.0}
    assert world.ingest(batch(0, [interval(T0, uuid="GPU-9")], node="n2", jobs=[hijack]), node="n2").status_code == 200
    job = _job(world.engine)
    # The budget was not set: n2 is its first writer.
    assert (job["account"], job["user"], job["name"], job["budget_usd"]) == ("vision", "alice", "resnet", 1.0)
    assert world.metric("gpuledger_collector_job_metadata_conflicts_total", field="account") == 1
    assert world.metric("gpuledger_collector_job_metadata_conflicts_total", field="user") == 1
    assert world.totals()["gpu_seconds"] == 20.0  # the GPU time itself is n2's to report
    assert world.get("/v1/jobs/c%2F1", "vision").status_code == 200  # still the vision readers' job
    # An admin changes it; agents cannot change it back, and that is no conflict.
    changed = world.client.put("/v1/metadata/c%2F1", json={"account": "nlp"}, headers=world.headers["admin"])
    assert changed.json() == {"status": "ok", "before": {"account": "vision"}, "after": {"account": "nlp"}}
    assert world.client.put("/v1/metadata/c%2F1", json={"account": "x"}, headers=world.headers["n1"]).status_code == 403
    assert world.ingest(batch(1, [interval(T0 + 10)])).status_code == 200
    assert _job(world.engine)["account"] == "nlp" and _job(world.engine)["metadata_source"] == "admin"
    assert world.metric("gpuledger_collector_job_metadata_conflicts_total", field="account") == 1
    assert world.get("/v1/jobs/c%2F1", "vision").status_code == 404
    # The scheduler integration's entry point.
    assert set_job_metadata(world.engine, "c/1", {"user": "bob"}, source="scheduler")["user"] == "alice"
    assert _job(world.engine)["user"] == "bob" and _job(world.engine)["metadata_source"] == "scheduler"
    assert set_job_metadata(world.engine, "c/404", {"user": "bob"}, source="scheduler") is None


# -- readers, CSV, routes --------------------------------------------------------------------------

@BACKENDS
def test_a_scoped_reader_gets_403_on_metrics(world: World):
    world.ingest(batch(0, [interval(T0)]))
    scoped = world.get("/metrics", "vision")
    assert scoped.status_code == 403
    assert scoped.json()["detail"].endswith("is scoped to one account; this report covers all accounts")
    assert world.get("/metrics", "reader").status_code == 200


@BACKENDS
def test_csv_cells_that_start_like_formulas_are_text(world: World):
    name = '=HYPERLINK("http://evil/","click")'
    world.ingest(batch(0, [interval(T0)], jobs=[{"id": "1", "name": name, "user": "+1", "account": "@acc"}]))
    csv_text = world.get("/v1/report.csv/c%2F1").text
    row = csv_text.splitlines()[1]
    assert row.startswith("""c/1,"'=HYPERLINK(""http://evil/"",""click"")",'+1,'@acc,,,running,""")
    report = world.get("/v1/jobs/c%2F1").json()
    cli = render(report, "csv").splitlines()[1]
    assert cli.split(",'+1,")[0] == """c/1,"'=HYPERLINK(""http://evil/"",""click"")\""""
    usage = world.get(f"/v1/usage.csv?group_by=account&from={_iso(T0 - 3600)}")
    assert usage.status_code == 200 and "\n'@acc," in usage.text, usage.text
    for cell in ("-x", "\tx", "\rx"):
        from api.reports.render import csv_cell

        assert csv_cell(cell) == "'" + cell
    assert csv_cell(-1.5) == -1.5 and csv_cell("x=1") == "x=1"


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


ODD_IDS = ["series", "j1/series", "../x", "j1/report.csv", "a?b#c"]


@BACKENDS
def test_job_ids_that_look_like_routes_reach_their_own_pages(world: World):
    local_ids = ["j1", *ODD_IDS]
    jobs = [{"id": i, "name": f"name of {i}"} for i in local_ids]
    intervals = [interval(T0, job=i, uuid=f"GPU-{n}") for n, i in enumerate(local_ids)]
    assert world.ingest(batch(0, intervals, jobs=jobs)).status_code == 200
    for local in local_ids:
        encoded = quote(f"c/{local}", safe="")
        assert world.get(f"/v1/jobs/{encoded}").json()["name"] == f"name of {local}", local
        assert world.get(f"/v1/series/{encoded}").json()["job_id"] == f"c/{local}"
        assert world.get(f"/v1/footprint/{encoded}").json()["job_id"] == f"c/{local}"
        assert world.get(f"/v1/report.csv/{encoded}").text.splitlines()[1].startswith(f"c/{local},")
        assert world.get(f"/jobs/{encoded}").status_code == 200  # the web page's link
    # The former paths still work for old clients; where an id ends like one, the id wins.
    assert world.get("/v1/jobs/c/j1/series").json()["name"] == "name of j1/series"
    assert world.get("/v1/jobs/c/j1/report.csv").json()["name"] == "name of j1/report.csv"
    tag = world.get("/v1/jobs/c%2Fj1%2Freport.csv").headers["ETag"]  # the report's ETag, on the former path too
    assert world.get("/v1/jobs/c/j1/report.csv", headers={"If-None-Match": tag}).status_code == 304
    assert world.get("/v1/jobs/c/series/series").json()["job_id"] == "c/series"
    assert world.get("/v1/jobs/c/j1/footprint").json()["job_id"] == "c/j1"
    assert world.get("/v1/jobs/c/..%2Fx").json()["name"] == "name of ../x"
