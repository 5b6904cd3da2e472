"""A real Prometheus scrapes the demo (its four agents and the server) with the shipped config and
rules; every dashboard panel's query and every recording rule must return data with its labels.

Needs Debian's `prometheus` binary: skipped with the reason outside CI when it is absent, failed in CI.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.promqueries import Query, queries

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "prometheus"
AGENTS = 4  # the demo's simulated nodes
JOB = "demo/1001"
DEADLINE_S = 120.0


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the prometheus binary is not installed (.ci/run installs Debian's `prometheus`)")
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")
    return path


def consecutive_free_ports(count: int) -> int:
    for base in range(21000, 60000, 97):
        ports = range(base, base + count)
        if all(_free(port) for port in ports):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write_config(into: Path, api_port: int, agent_base: int) -> Path:
    """The shipped config, rules and target files, with the demo's targets and 1 s intervals."""
    shutil.copytree(SHIPPED, into, ignore=shutil.ignore_patterns("tests"))
    (into / "targets" / "agents.yml").write_text(yaml.safe_dump(
        [{"targets": [f"127.0.0.1:{agent_base + n}" for n in range(AGENTS)]}]))
    (into / "targets" / "api.yml").write_text(yaml.safe_dump([{"targets": [f"127.0.0.1:{api_port}"]}]))
    config = yaml.safe_load((into / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (into / "prometheus.yml").write_text(yaml.safe_dump(config))
    return into / "prometheus.yml"


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def instant(prom: str, expr: str) -> list[dict]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def wait_for_targets(prom: str, expected: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        except (httpx.HTTPError, KeyError, ValueError):
            targets = []
        if len(targets) == expected and all(t["health"] == "up" for t in targets):
            return
        time.sleep(1)
    pytest.fail(f"targets not all up after 60 s: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in targets]}")


def problems(prom: str, query: Query) -> str | None:
    """Why the query's answer is not yet what it should be, or None."""
    for expr in filter(None, (query.expr, query.record)):
        series = instant(prom, expr)
        if not series:
            return f"{query.source}: `{expr}` returned no series"
        for item in series:
            missing = query.labels - item["metric"].keys()
            if missing:
                return f"{query.source}: `{expr}` returned {item['metric']} without {sorted(missing)}"
    return None


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("prometheus")
    binary = prometheus_binary()
    api_port, agent_base, prom_port = free_port(), consecutive_free_ports(AGENTS), free_port()
    demo = start([sys.executable, "-m", "api.cli.main", "demo", "--port", str(api_port), "--workdir", str(tmp_path / "demo"),
                  "--metrics-port", str(agent_base)], tmp_path / "demo.log")
    config = write_config(tmp_path / "prometheus", api_port, agent_base)
    prom = start([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], tmp_path / "prometheus.log")
    try:
        yield f"http://127.0.0.1:{prom_port}"
    finally:
        stop(prom)
        stop(demo)
        print((tmp_path / "prometheus.log").read_text()[-3000:])


def test_every_panel_and_recording_rule_returns_data_from_a_real_prometheus(prometheus):
    wait_for_targets(prometheus, AGENTS + 1)
    pending = queries(JOB)
    assert len(pending) > 20, "the dashboards and rules should hold many queries"
    started, why = time.monotonic(), {}
    while pending and time.monotonic() - started < DEADLINE_S:
        why = {q.source: reason for q in pending if (reason := problems(prometheus, q))}
        pending = [q for q in pending if q.source in why]
        time.sleep(2)
    print(f"{len(queries(JOB))} queries checked in {time.monotonic() - started:.0f} s")
    assert not pending, "\n".join(why.values())


def test_scraped_job_counters_match_the_servers_report(prometheus):
    """What Prometheus stored for the job equals what the API reports at the same moment, within the scrape lag."""
    wait_for_targets(prometheus, AGENTS + 1)
    time.sleep(3)
    api = next(t["scrapeUrl"] for t in httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
               if t["labels"]["job"] == "gpuledger-api").removesuffix("/metrics")
    [series] = instant(prometheus, f'gpuledger_job_gpu_seconds_total{{job_id="{JOB}"}}')
    stored_s, stored = float(series["value"][0]), float(series["value"][1])
    report = httpx.get(f"{api}/v1/jobs/{JOB}", timeout=10).json()
    gpus = report["gpus"]
    # the report is read after the sample: it may be ahead by the GPUs' time since then (+ a push interval)
    ahead_s = report["gpu_hours"] * 3600 - stored
    assert -1e-6 <= ahead_s <= gpus * (time.time() - stored_s + 4), (stored, report["gpu_hours"] * 3600)
    [agent_up] = instant(prometheus, 'count(up{job="gpuledger-agent"} == 1)')
    assert agent_up["value"][1] == str(AGENTS)
    [fresh] = instant(prometheus, "max(time() - gpuledger_agent_last_push_success_timestamp_seconds)")
    assert float(fresh["value"][1]) < 10  # the agents push every 2 s in the demo
