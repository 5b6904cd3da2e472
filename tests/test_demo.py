"""`gpuledger demo` as a newcomer runs it: live, growing numbers, and Ctrl-C stops everything."""

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import free_port


def _jobs(url: str) -> dict[str, dict]:
    return {j["job_id"]: j for j in httpx.get(f"{url}/v1/jobs", timeout=5).json()["items"]}


def _wait_for(url: str, job_id: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        try:
            jobs = _jobs(url)
            if job_id in jobs and jobs[job_id]["gpu_hours"] > 0:
                return jobs[job_id]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{job_id} did not appear in time")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_demo_shows_growing_numbers_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "demo", "--port", str(port), "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        first = _wait_for(url, "demo/1001", time.monotonic() + 60)
        time.sleep(5)
        later = _jobs(url)["demo/1001"]
        assert later["state"] == "running" and later["nodes"] == 2 and later["gpus"] == 16
        for field in ("gpu_hours", "energy_kwh", "cost_usd", "co2e_kg"):
            assert later[field] > first[field] > 0, field
        page = httpx.get(f"{url}/", timeout=5)
        assert page.status_code == 200 and "<title>gpuledger: jobs</title>" in page.text
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        output, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, output
    assert "SIMULATED GPUs" in output and f"{url}/v1/jobs" in output
    urls = re.findall(r"https?://\S+", output)
    assert urls[0] == f"{url}/", f"the web page is not the first URL printed: {urls[:3]}"
    deadline = time.monotonic() + 10
    while _group_alive(demo.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(demo.pid), "a demo process outlived Ctrl-C"
