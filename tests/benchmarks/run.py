"""The gpuledger benchmark suite, in one command (the design's "numbers to reach").

    .venv/bin/python tests/benchmarks/run.py [--quick] [--only ingest,fleet,reads,storage,agent,scrape,kubernetes]

Full run: under 10 minutes on a 2-core machine; --quick: under 2 minutes (smoke test,
smaller volumes and shorter windows, so its figures are noisier). Needs the PostgreSQL
server of the test suite (127.0.0.1:5432, user postgres, or GPULEDGER_TEST_PG); without
it the PostgreSQL half is skipped and says so. Each benchmark creates and drops its own
databases. Prints progress lines, then one table: what, figure, target, verdict.
Verdicts: PASS/MISS with the ratio figure/target (for "at most" targets a ratio > 1 misses).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ForeignLoad, Section, log  # noqa: E402

FOREIGN_WARN_CORES = 0.15

ORDER = ("ingest", "fleet", "reads", "storage", "agent", "scrape", "kubernetes")


def _module(name: str):  # noqa: ANN202
    import importlib

    return importlib.import_module(f"bench_{name}")


def print_table(sections: list[Section], foreign: dict[str, float] | None = None) -> None:
    rows = [(s.name, r.what, r.figure, r.target, r.verdict) for s in sections for r in s.rows]
    head = ("bench", "what", "figure", "target", "verdict")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print(line)
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print(line)
    for section in sections:
        if section.notes:
            print(f"\nnotes, {section.name}:")
            for note in section.notes:
                print(f"  - {note}")
    if foreign:
        print("\nother processes' CPU on this machine during each benchmark (2 cores; neither this suite nor "
              "PostgreSQL): " + ", ".join(f"{name} {cores:.2f} cores" for name, cores in foreign.items()))
        disturbed = [name for name, cores in foreign.items()
                     if cores > FOREIGN_WARN_CORES and name != "storage"]  # storage counts bytes, not time
        if disturbed:
            print(f"WARNING: {', '.join(disturbed)} ran beside other work (> {FOREIGN_WARN_CORES} cores): "
                  "those figures are pessimistic; rerun on a quiet machine")
    misses = sum("MISS" in r.verdict for s in sections for r in s.rows)
    passes = sum("PASS" in r.verdict for s in sections for r in s.rows)
    print(f"\n{passes} targets met, {misses} missed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: small volumes, under 2 minutes")
    parser.add_argument("--only", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(ORDER)
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}; expected some of {ORDER}")
    start = time.monotonic()
    sections: list[Section] = []
    failed = 0
    foreign: dict[str, float] = {}
    for name in (n for n in ORDER if n in chosen):
        log(f"=== {name} ({'quick' if args.quick else 'full'}) ===")
        t = time.monotonic()
        load = ForeignLoad()
        try:
            sections.append(_module(name).run(quick=args.quick))
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            failed += 1
            traceback.print_exc()
            broken = Section(name)
            broken.add(f"{name} benchmark", "FAILED (traceback above)", "-", "ERROR")
            sections.append(broken)
        foreign[name] = load.cores()
        log(f"=== {name} done in {time.monotonic() - t:.0f} s (other processes meanwhile: {foreign[name]:.2f} cores) ===")
    print_table(sections, foreign)
    print(f"total runtime: {time.monotonic() - start:.0f} s ({'quick' if args.quick else 'full'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
