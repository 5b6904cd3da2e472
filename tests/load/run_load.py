"""Bounded ingest load test on loopback: N times the batch rate of a 16,384-GPU fleet
(2,048 nodes × 8 GPUs, one batch per node every 10 s = 204.8 batches/s), for a fixed time.

    .venv/bin/python tests/load/run_load.py [--factor 10] [--seconds 120] [--db URL] [--clients 4]

Starts `gpuledger server` (SQLite in a temp dir unless --db), sends realistic 8-interval
batches open-loop at the target rate from client processes (each a real agent Pusher:
retries with backoff until acknowledged), then prints the achieved rate, ingest latency
p50/p99 and checks zero loss: every batch applied exactly once and the stored energy equal
to the energy sent. Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.push import Pusher  # noqa: E402

FLEET_NODES, GPUS_PER_NODE, PUSH_INTERVAL_S = 2048, 8, 10.0


def batch(node: str, boot: str, seq: int, end_s: float) -> dict:
    start_s = end_s - PUSH_INTERVAL_S
    return {
        "node": node, "cluster": "load", "datacenter": "dc", "boot_id": boot, "seq": seq, "sent_at_s": end_s,
        "jobs": [{"id": f"job-{hash(node) % 64}", "account": "load"}],
        "intervals": [
            {"gpu_uuid": f"GPU-{node}-{g}", "gpu_index": g, "gpu_model": "NVIDIA H100 80GB HBM3",
             "job": f"job-{hash(node) % 64}", "start_s": start_s, "end_s": end_s, "gpu_seconds": PUSH_INTERVAL_S,
             "busy_gpu_seconds": 9.0, "energy_j": 6000.0 + g, "energy_method": "counter"}
            for g in range(GPUS_PER_NODE)
        ],
    }


def sender(url: str, nodes: list[str], rate_per_s: float, seconds: float, t0: float, result: list) -> None:
    """Open loop: batch i is due at t0 + i / rate; latency counts from when it was due."""
    boots = {node: str(uuid.uuid4()) for node in nodes}
    pusher = Pusher(url, client=httpx.Client(timeout=60.0))
    latencies, sent, energy_j = [], 0, 0.0
    for i in range(int(rate_per_s * seconds)):
        due = t0 + i / rate_per_s
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        node = nodes[i % len(nodes)]
        body = batch(node, boots[node], i // len(nodes), time.time() - 5)
        pusher.submit(body)
        while not pusher.flush():
            time.sleep(0.01)
        latencies.append(time.monotonic() - due)
        sent += 1
        energy_j += sum(iv["energy_j"] for iv in body["intervals"])
    result.append((latencies, sent, energy_j, pusher.failed_attempts))


def client(url: str, nodes: list[str], rate_per_s: float, seconds: float, out: mp.Queue, threads: int = 16) -> None:
    """One process of ``threads`` senders, like that many agents pushing at once."""
    results: list = []
    t0 = time.monotonic()
    workers = [threading.Thread(target=sender, args=(url, nodes[t::threads], rate_per_s / threads, seconds, t0, results))
               for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(([x for r in results for x in r[0]], sum(r[1] for r in results), sum(r[2] for r in results),
             sum(r[3] for r in results)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--db", default=None)
    parser.add_argument("--port", type=int, default=18181)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpuledger-load-"))
    db = args.db or f"sqlite:///{tmp / 'load.db'}"
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "api.cli.main", "server", "--db", db, "--port", str(args.port),
                               "--log-level", "warning"], stdout=(tmp / "server.log").open("w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    target = FLEET_NODES / PUSH_INTERVAL_S * args.factor
    nodes = [f"node-{n:04d}" for n in range(FLEET_NODES)]
    print(f"target {target:.1f} batches/s ({args.factor:g} x the fleet's 204.8/s) for {args.seconds:g} s, "
          f"{args.clients} client processes, {db}", flush=True)
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=client, args=(url, nodes[c::args.clients], target / args.clients, args.seconds, out))
             for c in range(args.clients)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - started
    latencies = sorted(x for r in results for x in r[0])
    sent, energy_j, failures = sum(r[1] for r in results), sum(r[2] for r in results), sum(r[3] for r in results)
    usage = httpx.get(f"{url}/v1/usage", params={"group_by": "cluster", "from": "2000-01-01T00:00:00Z"}, timeout=60).json()
    stored_kwh = usage["total"]["gpu_energy_kwh"]
    server.terminate()
    server.wait(timeout=30)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, math.ceil(p * len(latencies)) - 1)] * 1000

    loss = (energy_j / 3.6e6 - stored_kwh) / (energy_j / 3.6e6)
    print(f"sent {sent} batches ({sent * GPUS_PER_NODE} GPU-intervals) in {elapsed:.1f} s = {sent / elapsed:.1f} batches/s "
          f"({sent / elapsed / target:.2f} of the target); failed attempts retried: {failures}")
    print(f"ingest latency from when each batch was due: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms")
    print(f"energy sent {energy_j / 3.6e6:.6f} kWh, stored {stored_kwh:.6f} kWh: loss {loss:.2e} "
          f"({'zero loss' if abs(loss) < 1e-9 else 'MISMATCH'})")


if __name__ == "__main__":
    main()
