"""The agent's Kubernetes source: what one pod-resources ``List`` (gRPC over the kubelet's unix
socket) and the grouping into jobs cost the agent each sample, and the memory grpcio adds.

The kubelet stand-in (tests/kubelet_standin.py) serves in another process, so only the
agent's side is measured. Target: the agent's whole budget is 0.5 % of one core at 1 Hz and
60 MB RSS (DESIGN.md); this source's share is printed against it.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import REPO, Section, verdict_max

GPUS = 8
SERVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from tests.kubelet_standin import PodResourcesServer
    server = PodResourcesServer(Path({sock!r}))
    for i in range({gpus}):
        server.set_pod("team", f"job-worker-{{i}}", {{"nvidia.com/gpu": [f"GPU-{{i:08x}}-0000-4000-8000-000000000000"]}})
    server.start()
    time.sleep(3600)
""")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(quick: bool = False) -> Section:
    section = Section("kubernetes")
    import agent.cli  # noqa: F401 - what the agent loads anyway, so the baseline is the agent's
    import agent.kubernetes.owners  # noqa: F401 - pure Python; grpc is imported by the client only

    before_mb = _rss_mb()
    from agent.gpu import GpuInfo
    from agent.kubernetes.devices import PodResourcesClient
    from agent.kubernetes.owners import KubernetesOwners

    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "kubelet.sock"
        server = subprocess.Popen([sys.executable, "-c", SERVER.format(repo=str(REPO), sock=str(sock), gpus=GPUS)])
        try:
            while not sock.exists():
                time.sleep(0.05)
            gpus = {i: GpuInfo(i, f"GPU-{i:08x}-0000-4000-8000-000000000000", "H100", 700.0, 700.0, 1) for i in range(GPUS)}
            owners = KubernetesOwners(PodResourcesClient(sock), None)
            owners.bind(gpus)
            for _ in range(50):
                owners.owners([])
            calls = 300 if quick else 3000
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                assert len(owners.owners([])) == GPUS
            cpu_ms = (time.process_time() - cpu0) / calls * 1000
            wall_ms = (time.perf_counter() - wall0) / calls * 1000
        finally:
            server.kill()
            server.wait()
    share_pct = cpu_ms / 1000 * 100  # at one sample a second
    section.add(f"pod-resources List + grouping, {GPUS} pods x 1 GPU, CPU per sample", f"{cpu_ms:.3f} ms ({wall_ms:.2f} ms wall)")
    section.add("its share of one core at 1 Hz", f"{share_pct:.3f} %", "<= 0.5 % (the whole agent)", verdict_max(share_pct, 0.5))
    section.add("RSS the grpc/protobuf client adds", f"{_rss_mb() - before_mb:.1f} MB", "<= 60 MB (the whole agent)", "info")
    section.note("the whole agent measured 49.8 MB peak RSS without this source (bench_agent); grpcio adds the figure above, "
                 "so with --pod-resources-socket the agent misses the 60 MB target")
    return section


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
