"""The simulator: its spec's validation, determinism, the energy counter against the
physics, the hardware quirks it plays, and its ground truth and owners."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from agent.attribution import JobRef
from agent.clock import ManualClock
from agent.gpu import GpuSample
from agent.nvml import NvmlSource
from agent.sim.node import SimulatedNode, gpus_of_node, ground_truth
from agent.sim.spec import SpecError, load_spec, parse_spec

EPOCH = 1_700_000_000.0
IDLE_W, BUSY_W = 70.0, 650.0


def node(name: str = "n1", gpu_count: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": name, "gpu_count": gpu_count, "model": "NVIDIA H100 80GB HBM3",
            "idle_w": IDLE_W, "busy_w": BUSY_W, "tdp_w": 700.0, **extra}


def job(**extra: Any) -> dict[str, Any]:
    return {"id": "1001", "name": "pretrain", "user": "alice", "account": "nlp",
            "nodes": ["n1"], "gpus": [0], "start_s": 0, "utilization": 0.9, **extra}


def spec_of(nodes: list | None = None, jobs: list | None = None, events: list | None = None, seed: int = 7):
    data: dict[str, Any] = {"seed": seed, "nodes": nodes if nodes is not None else [node()]}
    if jobs is not None:
        data["jobs"] = jobs
    if events is not None:
        data["events"] = events
    return parse_spec(data)


class Sim:
    """One simulated node read through the agent's NVML code path, on a manual clock."""

    def __init__(self, spec, name: str = "n1", epoch: float = EPOCH) -> None:
        self.clock = ManualClock(epoch)
        self.epoch = epoch
        self.node = SimulatedNode(spec, name, self.clock, epoch)
        self.source = NvmlSource(self.node.nvml)
        self.inventory = self.source.open()

    def at(self, offset_s: float) -> list[GpuSample]:
        self.clock.time_s = self.epoch + offset_s
        return self.source.sample(self.clock.now())


def expected_power_w(spec_node: dict[str, Any], utilization: float) -> float:
    """The documented physics, from the spec alone (no jitter)."""
    return spec_node["idle_w"] + (spec_node["busy_w"] - spec_node["idle_w"]) * utilization


# -- the spec's validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": 1}, "spec.nodes is missing"),
        ({"nodes": [node(busy_w=50.0)]}, "nodes[0].busy_w = 50.0: expected >= idle_w (70.0)"),
        ({"nodes": [node(), node()]}, "nodes[1].name = 'n1': duplicate node name"),
        ({"nodes": [node(gpu_count=0)]}, "nodes[0].gpu_count = 0.0"),
        ({"nodes": [node(idle_w="70")]}, "nodes[0].idle_w = '70': expected"),
        ({"nodes": [node()], "jobs": [job(nodes=["node-9"])]}, "jobs[0].nodes: 'node-9' is not a node of the spec"),
        ({"nodes": [node()], "jobs": [job(gpus=[0, 2])]}, "jobs[0].gpus: 2 is not a GPU index of node 'n1'"),
        ({"nodes": [node()], "jobs": [job(gpus=[-1])]}, "jobs[0].gpus: -1 is not a GPU index of node 'n1'"),
        ({"nodes": [node()], "jobs": [job(utilization=1.5)]}, "jobs[0].utilization = 1.5"),
        ({"nodes": [node()], "jobs": [job(utilization=-0.1)]}, "jobs[0].utilization = -0.1"),
        ({"nodes": [node()], "jobs": [job(start_s=100, end_s=100)]}, "jobs[0].end_s = 100.0: expected > start_s (100.0)"),
        ({"nodes": [node()], "jobs": [job(), job(start_s=100, end_s=50)]}, "jobs[1].end_s = 50.0: expected > start_s (100.0)"),
        ({"nodes": [node()], "jobs": [{"nodes": ["n1"], "gpus": [0]}]}, "jobs[0].id is missing"),
        (
            {"nodes": [node()], "events": [{"kind": "meltdown", "node": "n1", "gpu": 0, "at_s": 5}]},
            "events[0].kind = 'meltdown': expected 'counter_reset', 'gpu_lost', 'link_down' or 'counter_clear'",
        ),
        (
            {"nodes": [node()], "events": [{"kind": "gpu_lost", "node": "n7", "gpu": 0, "at_s": 5}]},
            "events[0].node: 'n7' is not a node of the spec",
        ),
    ],
)
def test_parse_spec_errors_name_field_and_value(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(data)


def test_parse_spec_event_gpu_out_of_range() -> None:
    with pytest.raises(SpecError, match=re.escape("events[0].gpu")):
        parse_spec({"nodes": [node()], "events": [{"kind": "gpu_lost", "node": "n1", "gpu": 9, "at_s": 5}]})


def test_parse_spec_defaults() -> None:
    spec = parse_spec({"nodes": [node()], "jobs": [{"id": 5, "nodes": ["n1"], "gpus": [1]}]})
    assert (spec.seed, spec.cluster, spec.datacenter) == (0, "sim", "default")
    assert spec.jobs[0].id == "5"
    assert spec.jobs[0].start_s == 0.0 and spec.jobs[0].end_s == math.inf
    assert spec.jobs[0].utilization == 0.9
    assert spec.nodes[0].memory_bytes == 80 * 1024**3
    assert spec.nodes[0].energy_counter is True


def test_load_spec_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(
        'seed = 3\ncluster = "c"\ndatacenter = "dc"\n'
        '[[nodes]]\nname = "a"\ngpu_count = 4\nmodel = "M"\nidle_w = 60\nbusy_w = 400.5\ntdp_w = 450\nmemory_gib = 40\n'
        'energy_counter = false\n'
        '[[jobs]]\nid = "j"\nnodes = ["a"]\ngpus = [1, 3]\nstart_s = 10\nend_s = 20\nutilization = 0.5\n'
        '[[events]]\nkind = "counter_reset"\nnode = "a"\ngpu = 1\nat_s = 15\n'
    )
    spec = load_spec(path)
    assert (spec.seed, spec.cluster, spec.datacenter) == (3, "c", "dc")
    (a,) = spec.nodes
    assert (a.name, a.gpu_count, a.idle_w, a.busy_w, a.tdp_w, a.memory_bytes, a.energy_counter) == (
        "a", 4, 60.0, 400.5, 450.0, 40 * 1024**3, False)
    (j,) = spec.jobs
    assert (j.id, j.nodes, j.gpus, j.start_s, j.end_s, j.utilization) == ("j", ("a",), (1, 3), 10.0, 20.0, 0.5)
    (e,) = spec.events
    assert (e.kind, e.node, e.gpu, e.at_s) == ("counter_reset", "a", 1, 15.0)


def test_load_spec_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[nodes]\nname = \n")
    with pytest.raises(SpecError, match=re.escape(f"simulation spec {str(path)!r} is not valid TOML")):
        load_spec(path)


def test_load_spec_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(SpecError, match=re.escape(f"simulation spec {str(path)!r} not found")):
        load_spec(path)


def test_load_spec_validates_content(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text('[[nodes]]\nname = "a"\ngpu_count = 1\nmodel = "M"\nidle_w = 60\nbusy_w = 400\n'
                    '[[jobs]]\nid = "j"\nnodes = ["a"]\ngpus = [0]\nutilization = 1.5\n')
    with pytest.raises(SpecError, match=re.escape("jobs[0].utilization = 1.5")):
        load_spec(path)


# -- determinism ----------------------------------------------------------------------------


def busy_spec(seed: int = 7):
    return spec_of(jobs=[job(gpus=[0], start_s=5, end_s=20, utilization=0.8)], seed=seed)


def test_same_seed_gives_identical_readings() -> None:
    a, b = Sim(busy_spec()), Sim(busy_spec())
    assert a.inventory == b.inventory
    for t in range(30):
        assert a.at(t) == b.at(t)


def test_different_seed_gives_different_power() -> None:
    a, b = Sim(busy_spec(seed=7)), Sim(busy_spec(seed=8))
    powers_a = [s.power_mw for t in range(1, 30) for s in a.at(t)]
    powers_b = [s.power_mw for t in range(1, 30) for s in b.at(t)]
    assert powers_a != powers_b
    assert sum(x != y for x, y in zip(powers_a, powers_b)) > len(powers_a) // 2


# -- the energy counter against the physics ----------------------------------------------------


def test_counter_integrates_power_over_an_hour() -> None:
    n = node()
    spec = spec_of(nodes=[n], jobs=[job(gpus=[0], start_s=600, end_s=2400, utilization=0.75)])
    sim = Sim(spec)
    gpus = gpus_of_node(spec, "n1")
    readings = [sim.at(t) for t in range(3601)]

    for index, gpu in enumerate(gpus):
        counter = [r[index].energy_mj for r in readings]
        power_w = [gpu.power_w(k) for k in range(3600)]
        # Over the hour, as a whole and tick by tick (each read truncates to whole mJ).
        assert abs((counter[3600] - counter[0]) - sum(power_w) * 1000) <= 1.0
        for k in range(3600):
            assert abs((counter[k + 1] - counter[k]) - power_w[k] * 1000) <= 1.0, (index, k)

    # The physics itself, from the spec: busy seconds near idle + (busy - idle) * u (5 % jitter),
    # idle seconds within 2 % of the range above idle_w.
    span = n["busy_w"] - n["idle_w"]
    for k in range(3600):
        p0, p1 = gpus[0].power_w(k), gpus[1].power_w(k)
        if 600 <= k < 2400:
            assert abs(p0 - expected_power_w(n, 0.75)) <= span * 0.75 * 0.05 + 1e-9
        else:
            assert n["idle_w"] <= p0 <= n["idle_w"] + span * 0.02
        assert n["idle_w"] <= p1 <= n["idle_w"] + span * 0.02
    busy = [gpus[0].power_w(k) for k in range(600, 2400)]
    assert sum(busy) / len(busy) == pytest.approx(expected_power_w(n, 0.75), rel=0.01)


def test_counter_with_constant_power_is_exact() -> None:
    n = node(idle_w=100.0, busy_w=100.0)  # nothing but idle_w to draw: a closed form
    sim = Sim(spec_of(nodes=[n], jobs=[job(gpus=[1], start_s=10, utilization=0.5)]))
    first, last = sim.at(0), sim.at(3600)
    for a, b in zip(first, last):
        assert b.energy_mj - a.energy_mj == 100 * 3600 * 1000


def test_ground_truth_of_a_job_on_two_nodes() -> None:
    nodes = [node("n1"), node("n2")]
    spec = spec_of(nodes=nodes, jobs=[job(nodes=["n1", "n2"], gpus=[0, 1], start_s=100, end_s=1300, utilization=0.6)])
    gpu_seconds, energy_j = ground_truth(spec, "1001", until_offset_s=5000)
    assert gpu_seconds == 4 * 1200

    all_gpus = gpus_of_node(spec, "n1") + gpus_of_node(spec, "n2")
    expected = sum(g.power_w(k) for g in all_gpus for k in range(100, 1300))
    assert energy_j == pytest.approx(expected, rel=1e-12)
    assert energy_j == pytest.approx(4 * 1200 * expected_power_w(nodes[0], 0.6), rel=0.01)

    # The counters of both simulated nodes agree with the ground truth.
    counted_mj = 0
    for name in ("n1", "n2"):
        sim = Sim(spec, name)
        before, after = sim.at(100), sim.at(1300)
        counted_mj += sum(b.energy_mj - a.energy_mj for a, b in zip(before, after))
    assert abs(counted_mj - energy_j * 1000) <= 4

    # Cut at `until`, and nothing for an unknown job.
    gpu_seconds, energy_j = ground_truth(spec, "1001", until_offset_s=700)
    assert gpu_seconds == 4 * 600
    assert energy_j == pytest.approx(sum(g.power_w(k) for g in all_gpus for k in range(100, 700)), rel=1e-12)
    assert ground_truth(spec, "nope", 5000) == (0.0, 0.0)


def test_ground_truth_stops_when_the_gpu_is_lost() -> None:
    spec = spec_of(
        jobs=[job(gpus=[0, 1], start_s=0, end_s=100)],
        events=[{"kind": "gpu_lost", "node": "n1", "gpu": 1, "at_s": 40}],
    )
    gpu_seconds, energy_j = ground_truth(spec, "1001", 1000)
    gpus = gpus_of_node(spec, "n1")
    assert gpu_seconds == 100 + 40
    assert energy_j == pytest.approx(
        sum(gpus[0].power_w(k) for k in range(100)) + sum(gpus[1].power_w(k) for k in range(40)), rel=1e-12)


# -- quirks ---------------------------------------------------------------------------------------


def test_counter_reset_makes_the_counter_go_down() -> None:
    spec = spec_of(jobs=[job(gpus=[0, 1], utilization=0.9)],
                   events=[{"kind": "counter_reset", "node": "n1", "gpu": 0, "at_s": 50}])
    sim = Sim(spec)
    gpu0, gpu1 = gpus_of_node(spec, "n1")
    before, after = sim.at(49), sim.at(51)
    assert after[0].energy_mj < before[0].energy_mj
    # Counting restarted at 0 at 50 s: the counter is the energy since then.
    assert abs(after[0].energy_mj - gpu0.power_w(50) * 1000) <= 1.0
    # The other GPU counts on.
    assert abs((after[1].energy_mj - before[1].energy_mj) - (gpu1.power_w(49) + gpu1.power_w(50)) * 1000) <= 1.0
    # And the counter counts on from 0.
    later = sim.at(60)
    assert abs(later[0].energy_mj - sum(gpu0.power_w(k) for k in range(50, 60)) * 1000) <= 1.0


def test_counter_reset_at_the_epoch() -> None:
    spec = spec_of(events=[{"kind": "counter_reset", "node": "n1", "gpu": 0, "at_s": 0}])
    gpu0 = gpus_of_node(spec, "n1")[0]
    sim = Sim(spec)
    assert abs(sim.at(2)[0].energy_mj - (gpu0.power_w(0) + gpu0.power_w(1)) * 1000) <= 1.0


def test_gpu_lost_marks_only_that_gpu() -> None:
    spec = spec_of(nodes=[node(gpu_count=3)], jobs=[job(gpus=[0, 1, 2])],
                   events=[{"kind": "gpu_lost", "node": "n1", "gpu": 1, "at_s": 20}])
    sim = Sim(spec)
    before = sim.at(19)
    assert [s.lost for s in before] == [False, False, False]
    assert all(s.energy_mj is not None and s.power_mw is not None for s in before)

    after = sim.at(21)
    assert [s.lost for s in after] == [False, True, False]
    lost = after[1]
    assert (lost.energy_mj, lost.power_mw, lost.util_gpu_pct, lost.memory_used_bytes, lost.pids) == (
        None, None, None, None, ())
    for s in (after[0], after[2]):
        assert s.energy_mj is not None and s.power_mw is not None and s.util_gpu_pct is not None
        assert s.energy_mj > before[s.index].energy_mj
    assert sim.at(30)[1].lost  # it does not come back


def test_gpu_without_energy_counter() -> None:
    spec = spec_of(nodes=[node(energy_counter=False)], jobs=[job(gpus=[0])])
    gpus = gpus_of_node(spec, "n1")
    sim = Sim(spec)
    for t in (1, 5, 10):
        for s in sim.at(t):
            assert s.energy_mj is None
            assert s.power_mw is not None
            assert abs(s.power_mw - gpus[s.index].power_w(t - 1) * 1000) <= 1.0


# -- power, utilisation, memory ------------------------------------------------------------------


def test_power_is_the_average_of_the_last_second() -> None:
    spec = spec_of(jobs=[job(gpus=[0], start_s=10, end_s=40, utilization=0.7)])
    gpus = gpus_of_node(spec, "n1")
    sim = Sim(spec)
    for t in range(1, 60):
        for s in sim.at(t):
            assert abs(s.power_mw - gpus[s.index].power_w(t - 1) * 1000) <= 1.0, (t, s.index)


def test_power_between_whole_seconds_averages_the_last_second() -> None:
    spec = spec_of(jobs=[job(gpus=[0], start_s=10, end_s=40, utilization=0.7)])
    gpu0 = gpus_of_node(spec, "n1")[0]
    sim = Sim(spec)
    for t in (9.25, 10.5, 39.75, 40.5):
        whole = math.floor(t)
        frac = t - whole
        expected_w = gpu0.power_w(whole - 1) * (1 - frac) + gpu0.power_w(whole) * frac
        assert abs(sim.at(t)[0].power_mw - expected_w * 1000) <= 1.0, t


def test_power_at_the_epoch_is_not_zero() -> None:
    spec = spec_of()
    gpu0 = gpus_of_node(spec, "n1")[0]
    assert abs(Sim(spec).at(0)[0].power_mw - gpu0.power_w(0) * 1000) <= 1.0


def test_utilization_and_memory_follow_the_job() -> None:
    n = node()
    spec = spec_of(nodes=[n], jobs=[job(gpus=[0], start_s=10, end_s=40, utilization=0.7)])
    sim = Sim(spec)
    during, after = sim.at(20), sim.at(45)
    assert 66 <= during[0].util_gpu_pct <= 74
    assert during[0].memory_used_bytes == int(0.85 * 80 * 1024**3)
    assert during[1].util_gpu_pct <= 2 and during[1].memory_used_bytes == 0
    assert after[0].util_gpu_pct <= 2 and after[0].memory_used_bytes == 0


def test_inventory_comes_from_the_spec() -> None:
    spec = spec_of(nodes=[node(gpu_count=3, tdp_w=700.0, memory_gib=80)])
    inventory = Sim(spec).inventory
    assert [g.index for g in inventory] == [0, 1, 2]
    assert len({g.uuid for g in inventory}) == 3
    assert all(g.name == "NVIDIA H100 80GB HBM3" and g.tdp_w == 700.0 and g.power_limit_w == 700.0 for g in inventory)
    assert all(g.memory_total_bytes == 80 * 1024**3 for g in inventory)


# -- owners -----------------------------------------------------------------------------------------


def test_owners_follow_the_schedule() -> None:
    spec = spec_of(
        nodes=[node(gpu_count=3)],
        jobs=[
            job(id="a", name="train", user="alice", account="nlp", gpus=[0, 1], start_s=100, end_s=200),
            {"id": "b", "user": "bob", "account": "cv", "nodes": ["n1"], "gpus": [1], "start_s": 200, "end_s": 300},
        ],
    )
    sim = Sim(spec)
    a = JobRef("a", "train", "alice", "nlp")
    b = JobRef("b", None, "bob", "cv")
    assert sim.node.owners(sim.at(50)) == {}
    assert sim.node.owners(sim.at(100)) == {0: (a,), 1: (a,)}
    assert sim.node.owners(sim.at(150.5)) == {0: (a,), 1: (a,)}
    assert sim.node.owners(sim.at(200)) == {1: (b,)}  # a ended at 200, b starts then
    assert sim.node.owners(sim.at(299.9)) == {1: (b,)}
    assert sim.node.owners(sim.at(300)) == {}
    assert sim.node.owners(sim.at(1000)) == {}
