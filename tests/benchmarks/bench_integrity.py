"""What the ingest integrity checks cost: the same batches applied with and without
``collector.integrity`` (identity and content hash, the node's stored GPU time, job metadata),
on SQLite and, when reachable, PostgreSQL. Prints ms per batch and the ratio.

    .venv/bin/python tests/benchmarks/bench_integrity.py [--batches 300] [--pg URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from collector.db import make_engine
from collector.ingest import apply_batch
from collector.integrity import check_batch
from collector.schema import upgrade
from collector.schemas import BatchIn

GPUS, PUSH_S = 8, 10.0


def batches(node: str, count: int, start_s: float) -> list[BatchIn]:
    out = []
    for seq in range(count):
        t = start_s + seq * PUSH_S
        out.append(BatchIn.model_validate({
            "node": node, "cluster": "c", "datacenter": "dc", "boot_id": "b", "seq": seq, "sent_at_s": t + PUSH_S,
            "jobs": [{"id": "1", "name": "train", "user": "u", "account": "a"}],
            "intervals": [{"gpu_uuid": f"{node}-GPU-{g}", "gpu_index": g, "gpu_model": "NVIDIA H100 80GB HBM3", "job": "1",
                           "start_s": t, "end_s": t + PUSH_S, "gpu_seconds": PUSH_S, "busy_gpu_seconds": PUSH_S,
                           "energy_j": 500 * PUSH_S, "energy_method": "counter"} for g in range(GPUS)]}))
    return out


def run(url: str, count: int, checked: bool) -> float:
    engine = make_engine(url)
    upgrade(engine)
    start_s = time.time() - count * PUSH_S - 60
    for other in range(20):  # other nodes' rows around
        for b in batches(f"other{other}", 20, start_s):
            apply_batch(engine, b, time.time())
    todo = batches("n1", count, start_s)
    started = time.perf_counter()
    for b in todo:
        if checked:
            assert not check_batch(engine, b).duplicate
        apply_batch(engine, b, time.time())
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--pg", default=None, help="a PostgreSQL database URL to use (it gets tables)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": [f"sqlite:///{Path(tmp) / f'{n}.db'}" for n in ("plain", "checked")]}
        if args.pg:
            urls["postgresql"] = [args.pg, args.pg]
        for backend, (plain_url, checked_url) in urls.items():
            plain = run(plain_url, args.batches, checked=False)
            if backend == "postgresql":
                _drop(args.pg)
            checked = run(checked_url, args.batches, checked=True)
            print(f"{backend:>10}: {plain:.2f} ms per 8-interval batch without the checks, {checked:.2f} ms with "
                  f"(x{checked / plain:.2f})")


def _drop(url: str) -> None:
    from sqlalchemy import MetaData

    engine = make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
