"""Migrations on both backends: an empty database migrates to exactly the models' schema, a
populated one keeps its data, and the server refuses a schema older than the code."""

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from collector.db import make_engine
from collector.partitions import include_name
from collector.schema import _config, current_revision, head_revision, upgrade
from tests.conftest import BACKENDS


@BACKENDS
def test_empty_database_migrates_to_the_models_schema(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name}), SQLModel.metadata)
    assert diff == []
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= {
        "jobs", "job_hours", "job_gpus", "raw_intervals", "job_minutes", "job_keys", "places", "gpu_keys", "ingested_batches"}
    engine.dispose()


def _gpuledger(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=60)


@BACKENDS
def test_server_refuses_an_older_schema_until_upgraded(db_url):
    engine = make_engine(db_url)
    older = ScriptDirectory.from_config(_config()).get_revision(head_revision()).down_revision
    if older:
        upgrade(engine, older)
    else:  # only one revision yet: a schema no migration made is just as foreign
        SQLModel.metadata.create_all(engine)
    engine.dispose()
    refused = _gpuledger("server", "--db", db_url, "--port", "9")
    assert refused.returncode == 2
    assert f"this gpuledger needs {head_revision()}" in refused.stderr
    assert f"gpuledger db upgrade --db {db_url}" in refused.stderr
    if older:
        upgraded = _gpuledger("db", "upgrade", "--db", db_url)
        assert upgraded.returncode == 0, upgraded.stderr
        assert f"schema {older} -> {head_revision()}" in upgraded.stdout
        assert f"schema {head_revision()}; this gpuledger needs {head_revision()}" in _gpuledger("db", "current", "--db", db_url).stdout


# (node, datacenter, uuid, model, job, start, end, energy_j, method) as revision 0005 stored them
OLD_ROWS = [
    ("n1", "dc1", "GPU-a", "H100", "c/1", 1_000_000_000.0, 1_000_000_010.0, 7000.0, "counter"),
    ("n1", "dc1", "GPU-a", "H100", "c/1", 1_000_000_010.0, 1_000_000_050.0, 28000.0, "counter_gap"),  # crosses a minute
    ("n1", "dc1", "GPU-b", "H100", "c/2", 1_000_000_000.0, 1_000_000_150.0, 90000.0, "power_integrated"),  # three minutes
    ("n2", "dc2", "GPU-c", "A100", "c/unallocated", 1_000_000_100.0, 1_000_000_110.0, 500.0, "none"),
]


HOURS = "SELECT job_id, hour_s, datacenter, gpu_model, gpu_seconds, busy_gpu_seconds, energy_j, energy_counter_j FROM job_hours"


def _populate_0005(engine) -> None:
    rows = [{"node": n, "seq": i, "dc": dc, "uuid": u, "model": m, "job": j, "start": s, "end": e, "gs": e - s,
             "busy": (e - s) / 2, "energy": en, "method": meth, "mem": 1 << 33}
            for i, (n, dc, u, m, j, s, e, en, meth) in enumerate(OLD_ROWS)]
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO gpu_intervals (node, seq, datacenter, gpu_uuid, gpu_model, job_id, start_s, end_s, gpu_seconds, "
            "busy_gpu_seconds, energy_j, energy_method, max_memory_used_bytes) VALUES (:node, :seq, :dc, :uuid, :model, "
            ":job, :start, :end, :gs, :busy, :energy, :method, :mem)"), rows)
        conn.execute(text("INSERT INTO jobs (job_id, cluster, local_id, state, first_seen_s, last_seen_s) "
                          "VALUES ('c/1', 'c', '1', 'ended', 1000000000, 1000000050)"))
        conn.execute(text("INSERT INTO job_hours VALUES ('c/1', 999997200, 'dc1', 'H100', 50, 25, 35000, 35000)"))


@BACKENDS
def test_upgrade_carries_raw_intervals_into_keyed_rows_and_minutes(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0005")
    _populate_0005(engine)
    with engine.connect() as conn:
        report_before = conn.execute(text(HOURS)).all()
    upgrade(engine)
    with engine.connect() as conn:
        raw = conn.execute(text(
            "SELECT p.node, p.datacenter, k.gpu_uuid, p.gpu_model, j.job_id, r.start_s, r.end_s, r.energy_j, r.method, "
            "r.gpu_seconds, r.max_memory_used_bytes FROM raw_intervals r JOIN gpu_keys k ON k.id = r.gpu_key "
            "JOIN places p ON p.id = k.place_id JOIN job_keys j ON j.id = r.job_key ORDER BY r.start_s, k.gpu_uuid")).all()
        minutes = {(job, node, m): (gs, e, counter) for job, node, m, gs, e, counter in conn.execute(text(
            "SELECT j.job_id, p.node, m.minute_s, m.gpu_seconds, m.energy_j, m.energy_counter_j FROM job_minutes m "
            "JOIN job_keys j ON j.id = m.job_key JOIN places p ON p.id = m.place_key"))}
        assert conn.execute(text(HOURS)).all() == report_before
    codes = {"counter": 0, "power_integrated": 1, "power_instant": 2, "none": 3, "counter_gap": 4}
    expected = sorted(((n, dc, u, m, j, s, e, en, codes[meth], e - s, 1 << 33) for n, dc, u, m, j, s, e, en, meth in OLD_ROWS),
                      key=lambda r: (r[5], r[2]))
    assert [tuple(r) for r in raw] == expected
    t0 = 1_000_000_000 // 60 * 60  # 999,999,960: the minute of the first start (40 s in)
    assert minutes == {
        ("c/1", "n1", t0): (10.0 + 10.0, 7000.0 + 7000.0, 14000.0),  # 10 s + 10 of the 40 s interval
        ("c/1", "n1", t0 + 60): (30.0, 21000.0, 21000.0),
        ("c/2", "n1", t0): (20.0, 12000.0, 0.0),  # 20 + 60 + 60 + 10 s of a 150 s interval
        ("c/2", "n1", t0 + 60): (60.0, 36000.0, 0.0),
        ("c/2", "n1", t0 + 120): (60.0, 36000.0, 0.0),
        ("c/2", "n1", t0 + 180): (10.0, 6000.0, 0.0),
        ("c/unallocated", "n2", t0 + 120): (10.0, 500.0, 0.0),
    }
    assert "gpu_intervals" not in inspect(engine).get_table_names()
    engine.dispose()
