"""The agent's bare NVML reads on real GPUs: what one 1 Hz cycle costs per GPU.

    python tests/benchmarks/nvml_real.py [cycles]

Times ``agent.nvml.NvmlSource().sample(t)`` (the five getters the agent calls per GPU:
energy counter, power, utilisation, memory, compute processes) on every GPU of this
machine, and each getter alone, in wall time and in this process's CPU time, and scales
to 8 GPUs at 1 Hz. Needs the NVIDIA driver and ``pynvml`` (nvidia-ml-py); only
``agent.nvml`` and ``agent.gpu`` of the package are imported. bench_agent.py calls
``measure`` when NVML is there and says so when it is not.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def available() -> str | None:
    """None when NVML answers with at least one GPU, else why not."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
        return None if count > 0 else "NVML reports no GPU"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def _timed(fn, cycles: int) -> tuple[float, float]:  # noqa: ANN001
    """(median wall us, mean CPU us) of ``fn()`` over ``cycles`` calls."""
    walls = []
    cpu0 = time.process_time()
    for _ in range(cycles):
        t = time.perf_counter_ns()
        fn()
        walls.append((time.perf_counter_ns() - t) / 1e3)
    return statistics.median(walls), (time.process_time() - cpu0) / cycles * 1e6


def measure(cycles: int = 1000) -> dict:
    import pynvml

    from agent.nvml import NvmlSource

    source = NvmlSource()
    gpus = source.open()
    try:
        for _ in range(20):
            source.sample(time.time())
        wall, cpu = _timed(lambda: source.sample(time.time()), cycles)
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        getters = {
            "energy": pynvml.nvmlDeviceGetTotalEnergyConsumption,
            "power": pynvml.nvmlDeviceGetPowerUsage,
            "utilization": pynvml.nvmlDeviceGetUtilizationRates,
            "memory": pynvml.nvmlDeviceGetMemoryInfo,
            "processes": pynvml.nvmlDeviceGetComputeRunningProcesses,
        }
        per_getter = {}
        for name, fn in getters.items():
            g_wall, g_cpu = _timed(lambda fn=fn: fn(handle), max(cycles // 2, 50))
            per_getter[name] = {"wall_us": round(g_wall, 1), "cpu_us": round(g_cpu, 1)}
    finally:
        source.close()
    per_gpu_cpu = cpu / len(gpus)
    return {
        "gpus": len(gpus), "model": gpus[0].name, "cycles": cycles,
        "cycle_wall_us": round(wall, 1), "cycle_cpu_us": round(cpu, 1),
        "per_gpu_wall_us": round(wall / len(gpus), 1), "per_gpu_cpu_us": round(per_gpu_cpu, 1),
        "eight_gpus_cpu_s_per_h": round(per_gpu_cpu * 8 * 3600 / 1e6, 2),
        "getters_gpu0": per_getter,
    }


if __name__ == "__main__":
    reason = available()
    if reason is not None:
        print(f"no NVML here: {reason}")
        sys.exit(2)
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    print(f"{result['gpus']} x {result['model']}: NvmlSource.sample {result['cycle_wall_us']} us wall, "
          f"{result['cycle_cpu_us']} us CPU per cycle ({result['per_gpu_cpu_us']} us CPU per GPU); "
          f"8 GPUs at 1 Hz: {result['eight_gpus_cpu_s_per_h']} CPU-s/h")
    for name, g in result["getters_gpu0"].items():
        print(f"  {name:12s} {g['wall_us']:8.1f} us wall {g['cpu_us']:8.1f} us CPU")
    print(json.dumps(result))
