"""Migrations on both backends: an empty database migrates to exactly the models' schema,
and the server refuses a schema older than the code."""

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

from collector.db import make_engine
from collector.schema import _config, current_revision, head_revision, upgrade
from tests.conftest import BACKENDS


@BACKENDS
def test_empty_database_migrates_to_the_models_schema(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= {"jobs", "job_hours", "job_gpus", "gpu_intervals", "ingested_batches"}
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
