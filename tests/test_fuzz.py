"""Schemathesis against the running server's OpenAPI schema, tokens on, on both backends: no 5xx
for anything it can generate, and every request the server refuses (4xx) leaves the database
as it was just before that request (checked per request by tests/fuzz_hooks.py).

Operations are fuzzed with the token they need: ingest with a node token, everything else with
an admin token (which may read and change everything but ingest). The number of cases per
backend is GPULEDGER_FUZZ_CASES: by default 2,500 in CI (`CI` set: 5,000 over the two backends),
1,200 otherwise; `GPULEDGER_FUZZ_CASES=5000` is the full run (figures in tests/benchmarks/README.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from collector import tokens
from collector.db import make_engine
from collector.schema import upgrade
from tests.conftest import BACKENDS, start_server
from tests.fuzz_hooks import snapshot

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
ROOT = Path(__file__).resolve().parent.parent
FUZZ_CASES = int(os.environ.get("GPULEDGER_FUZZ_CASES") or (2500 if os.environ.get("CI") else 1200))


def fuzz(url: str, db_url: str, token: str, mode: str, examples: int, ingest: bool) -> int:
    """One schemathesis run; returns how many cases it generated (asserting none failed)."""
    select = ["--include-path", "/v1/ingest"] if ingest else ["--exclude-path", "/v1/ingest"]
    env = os.environ | {"SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "GPULEDGER_FUZZ_DB": db_url,
                        "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{url}/openapi.json", "--checks", "not_a_server_error,rejections_store_nothing",
         "--mode", mode, "-n", str(examples), "--phases", "examples,coverage,fuzzing", "--generation-deterministic",
         "--no-color", "-H", f"Authorization: Bearer {token}", *select,
         # Jobs that valid scheduler events create have ids with a slash (<cluster>/<id>); schemathesis
         # reuses them for {job_id} and then filters the path values it cannot place: not an API defect.
         "--suppress-health-check=filter_too_much"],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    return int(generated.group(1)) if generated else 0


def seed(url: str, node_token: str) -> None:
    """One job with an hour of data, so generated requests meet real rows."""
    now = time.time()
    body = {"node": "n1", "cluster": "c", "datacenter": "dc", "boot_id": "b", "seq": 0, "sent_at_s": now,
            "jobs": [{"id": "1", "name": "seed", "account": "a", "budget_usd": 10.0}],
            "intervals": [{"gpu_uuid": "GPU-0", "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3", "job": "1",
                           "start_s": now - 600, "end_s": now - 60, "gpu_seconds": 540.0, "busy_gpu_seconds": 270.0,
                           "energy_j": 270_000.0, "energy_method": "counter"}]}
    response = httpx.post(f"{url}/v1/ingest", json=body, headers={"Authorization": f"Bearer {node_token}"}, timeout=10)
    assert response.status_code == 200, response.text


@BACKENDS
@pytest.mark.timeout(3600)  # the full run (GPULEDGER_FUZZ_CASES=5000) takes minutes per backend
def test_schemathesis_with_tokens_finds_no_server_error_and_rejections_store_nothing(db_url, tmp_path):
    assert shutil.which(SCHEMATHESIS) or Path(SCHEMATHESIS).exists()
    engine = make_engine(db_url)
    upgrade(engine)
    admin, node = tokens.create_token(engine, "admin"), tokens.create_token(engine, "node", node="n1")
    config = tmp_path / "server.toml"
    config.write_text("[jobs]\nsilence_s = 86400\n")  # no job ends by itself while the checks compare states
    server = start_server(db_url, config, tmp_path / "server.log", None, "--require-auth", "--open-paths", "/healthz")
    started = time.monotonic()
    try:
        seed(server.url, node)
        seeded = snapshot(engine)
        # Examples per operation (measured: the coverage phase adds a fixed set, the fuzzing phase
        # fewer than asked in negative mode), so that the four runs come to FUZZ_CASES or a few more.
        ingest_n = max(10, int(FUZZ_CASES * 0.12))
        other_n = max(5, int(FUZZ_CASES * 0.036))
        counts = {
            "ingest, negative": fuzz(server.url, db_url, node, "negative", ingest_n, ingest=True),
            "other, negative": fuzz(server.url, db_url, admin, "negative", other_n, ingest=False),
        }
        assert snapshot(engine) == seeded, "a request that broke the schema stored data"
        counts["ingest, positive"] = fuzz(server.url, db_url, node, "positive", ingest_n, ingest=True)
        counts["other, positive"] = fuzz(server.url, db_url, admin, "positive", other_n, ingest=False)
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
        engine.dispose()
    total = sum(counts.values())
    print(f"\nschemathesis ({db_url.split(':')[0]}): {total} cases in {time.monotonic() - started:.0f} s, "
          f"no server error, no rejected request stored anything: {counts}")
    assert total >= FUZZ_CASES, counts
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-4000:]
