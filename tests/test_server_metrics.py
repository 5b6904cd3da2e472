"""The server's /metrics: per-job counters against hand-computed values, the closed-hour cache,
counters that never go down, and the collector's own counts."""

import math
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.accounting.rates import LedgerConfig
from api.http.app import create_app
from api.intensity.sources import IntensityPoint
from api.intensity.store import store
from api.reports.jobmetrics import JobCollector
from collector.ingest import apply_batch
from collector.schemas import BatchIn
from tests.conftest import BACKENDS

NOW = time.time()
HOUR = math.floor(NOW / 3600) * 3600 - 4 * 3600  # four whole hours ago
CONFIG = LedgerConfig.model_validate({
    "datacenters": {"dc1": {"region": "r1", "pue": 1.5}},
    "intensity_g_per_kwh": {"r1": 400.0},
})
USD_PER_GPU_HOUR = 6.0  # the list price of an H100 when no rate is configured


def batch(seq: int, job: dict | None, start: float, seconds: float = 3600.0, watts: float = 500.0, node: str = "n1",
          network: dict | None = None) -> BatchIn:
    body = {"node": node, "cluster": "c", "datacenter": "dc1", "boot_id": "b", "seq": seq, "sent_at_s": NOW,
            "jobs": [job] if job else [],
            "intervals": [{"gpu_uuid": f"GPU-{node}", "gpu_index": 0, "gpu_model": "NVIDIA H100 80GB HBM3",
                           "job": job["id"] if job else None, "start_s": start, "end_s": start + seconds,
                           "gpu_seconds": seconds, "busy_gpu_seconds": seconds / 2, "energy_j": watts * seconds,
                           "energy_method": "counter"}],
            "network": [network] if network else []}
    return BatchIn.model_validate(body)


def samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, job_id) -> value of every sample."""
    return {(s.name, s.labels.get("job_id", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return samples(generate_latest(registry).decode())


def collector(engine, now_s: float) -> tuple[CollectorRegistry, JobCollector]:
    registry = CollectorRegistry(auto_describe=False)
    jobs = JobCollector(engine, CONFIG, clock=lambda: now_s)
    registry.register(jobs)
    return registry, jobs


@BACKENDS
def test_job_counters_equal_the_hand_computed_ledger(engine):
    network = {"job": "1", "start_s": HOUR, "end_s": HOUR + 3600, "ports": 1, "seconds": 3600, "apportioned_bytes": 0,
               "counters": {"tx_bytes": 7e9, "rx_bytes": 5e9}, "peak_tx_gbps": 1.0, "peak_rx_gbps": 1.0}
    apply_batch(engine, batch(0, {"id": "1", "account": "nlp", "user": "alice", "name": "llm"}, HOUR, network=network), NOW)
    apply_batch(engine, batch(1, {"id": "1"}, HOUR + 3 * 3600, seconds=600), NOW)  # in an open hour
    apply_batch(engine, batch(2, None, HOUR, watts=100.0, node="n2"), NOW)
    registry, jobs = collector(engine, NOW)
    got = scrape(registry)
    # job 1: 4,200 GPU-s at 500 W = 2.1 MJ; $6 per GPU-hour; 2.1e6 J / 3.6e6 × PUE 1.5 × 400 g/kWh
    assert got[("gpuledger_job_gpu_seconds_total", "c/1")] == pytest.approx(4200)
    assert got[("gpuledger_job_busy_gpu_seconds_total", "c/1")] == pytest.approx(2100)
    assert got[("gpuledger_job_energy_joules_total", "c/1")] == pytest.approx(2.1e6)
    assert got[("gpuledger_job_cost_dollars_total", "c/1")] == pytest.approx(4200 / 3600 * USD_PER_GPU_HOUR)
    assert got[("gpuledger_job_co2e_grams_total", "c/1")] == pytest.approx(2.1e6 / 3.6e6 * 1.5 * 400)
    assert got[("gpuledger_job_network_transmitted_bytes_total", "c/1")] == 7e9
    assert got[("gpuledger_job_network_received_bytes_total", "c/1")] == 5e9
    assert got[("gpuledger_job_info", "c/1")] == 1
    # the idle account is its own line, labelled as such
    assert got[("gpuledger_job_energy_joules_total", "c/unallocated")] == pytest.approx(3.6e5)
    assert ("gpuledger_job_network_transmitted_bytes_total", "c/unallocated") not in got  # no NIC data: absent, not 0
    text = generate_latest(registry).decode()
    # the server's own fast exposition says the same, to the byte for each sample
    fast = jobs.exposition()
    assert {k: v for k, v in samples(fast).items() if k[0] != "gpuledger_collector_scrape_seconds"} == \
        {k: v for k, v in got.items() if k[0] != "gpuledger_collector_scrape_seconds"}
    assert sorted(line for line in fast.splitlines() if "scrape_seconds" not in line) == \
        sorted(line for line in text.splitlines() if "scrape_seconds" not in line)
    assert 'gpuledger_job_info{account="nlp",cluster="c",job_id="c/1",name="llm",user="alice"} 1.0' in text
    assert 'account="(unallocated)",cluster="c",job_id="c/unallocated"' in text
    assert 'gpuledger_cluster_jobs{cluster="c",state="running"} 2.0' in text


@BACKENDS
def test_late_batches_reprice_closed_hours_and_counters_never_go_down(engine):
    apply_batch(engine, batch(0, {"id": "1"}, HOUR), NOW)
    registry, jobs = collector(engine, NOW)
    assert scrape(registry)[("gpuledger_job_energy_joules_total", "c/1")] == pytest.approx(1.8e6)
    assert "c/1" in jobs._closed  # four hours ago: priced once and kept
    # A batch delivered late (after an outage) into the same closed hour is seen at the next scrape.
    apply_batch(engine, batch(1, {"id": "1"}, HOUR, seconds=1800, node="n2"), NOW)
    got = scrape(registry)
    assert got[("gpuledger_job_energy_joules_total", "c/1")] == pytest.approx(1.8e6 + 9e5)
    co2e_g = got[("gpuledger_job_co2e_grams_total", "c/1")]
    assert co2e_g == pytest.approx(2.7e6 / 3.6e6 * 1.5 * 400)
    # A lower measured intensity for that hour arrives: the report would go down, the counter holds.
    store(engine, [IntensityPoint("r1", HOUR, HOUR + 3600, 200.0, "csv", False)], NOW)
    assert scrape(registry)[("gpuledger_job_co2e_grams_total", "c/1")] == co2e_g
    apply_batch(engine, batch(2, {"id": "1"}, HOUR + 3600, node="n3"), NOW)  # + 1.8 MJ at 400 g/kWh
    assert scrape(registry)[("gpuledger_job_co2e_grams_total", "c/1")] == pytest.approx(
        (2.7e6 * 200 + 1.8e6 * 400) / 3.6e6 * 1.5)


@BACKENDS
def test_collector_counts_applied_duplicate_and_rejected_batches(engine):
    good = batch(0, {"id": "1"}, HOUR).model_dump(mode="json")
    with TestClient(create_app(engine, CONFIG, scheduler=False)) as client:
        assert client.post("/v1/ingest", json=good).status_code == 200
        assert client.post("/v1/ingest", json=good).status_code == 200  # a replay
        bad = good | {"seq": 1, "intervals": [good["intervals"][0] | {"energy_j": -1}]}
        assert client.post("/v1/ingest", json=bad).status_code == 422
        text = client.get("/metrics").text
    assert 'gpuledger_collector_batches_total{outcome="applied"} 1.0' in text
    assert 'gpuledger_collector_batches_total{outcome="duplicate"} 1.0' in text
    assert 'gpuledger_collector_batches_total{outcome="rejected"} 1.0' in text
    assert "gpuledger_collector_intervals_total 1.0" in text
    assert "gpuledger_collector_ingest_seconds_count 2.0" in text
    assert 'gpuledger_job_energy_joules_total{account="",cluster="c",job_id="c/1"} 1.8e+06' in text

