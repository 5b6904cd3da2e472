"""Schemathesis against the running server's OpenAPI schema: no 5xx for anything it can
generate, and requests that break the schema leave the database as it was."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, inspect, select, table

from collector.db import make_engine
from tests.conftest import start_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def fuzz(url: str, mode: str, examples: int) -> tuple[int, str]:
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{url}/openapi.json", "--checks", "not_a_server_error", "--mode", mode,
         "-n", str(examples), "--phases", "examples,coverage,fuzzing", "--generation-deterministic", "--no-color",
         # Jobs that valid scheduler events create have ids with a slash (<cluster>/<id>); schemathesis
         # reuses them for {job_id} and then filters the path values it cannot place: not an API defect.
         "--suppress-health-check=filter_too_much"],
        capture_output=True, text=True, timeout=600,
    )
    generated = re.search(r"(\d+) generated", result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]
    return int(generated.group(1)) if generated else 0, result.stdout


def row_counts(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        counts = {name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
                  for name in inspect(engine).get_table_names() if name != "alembic_version"}
    engine.dispose()
    return counts


def test_schemathesis_finds_no_server_error_and_rejections_store_nothing(tmp_path):
    assert shutil.which(SCHEMATHESIS) or Path(SCHEMATHESIS).exists()
    db_url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    server = start_server(db_url, None, tmp_path / "server.log")
    try:
        rejected, _ = fuzz(server.url, "negative", 60)
        assert set(row_counts(db_url).values()) == {0}, "a request that broke the schema stored data"
        accepted, _ = fuzz(server.url, "positive", 60)
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
    print(f"\nschemathesis: {rejected} negative and {accepted} positive test cases, no server error")
    assert rejected + accepted >= 1000
    assert "Traceback" not in (tmp_path / "server.log").read_text()
