"""How a GPU is shared: MIG instances by compute slices, time-sliced GPUs by per-process
utilisation, else equally; and the loop reading the energy counter only where it is needed."""

from collections.abc import Iterable

import pytest

from agent.attribution import Attributor, JobRef, Owners
from agent.clock import ManualClock
from agent.gpu import GpuSample, MigInstance, MigLayout
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.sim.fakenvml import FakeDevice, FakeNvml
from agent.split import EQUAL, MIG_SLICES, PROCESS_UTILIZATION, WHOLE, Share, split_gpu
from tests.conftest import CollectingPusher


def gpu(pids=(), mig=None, pid_instances=(), util=None) -> GpuSample:
    return GpuSample(0, 0.0, None, None, None, None, tuple(pids), pid_instances=tuple(pid_instances), mig=mig,
                     pid_sm_util=util)


A, B = JobRef("a"), JobRef("b")
LAYOUT = MigLayout(7, (MigInstance(1, 3), MigInstance(2, 2), MigInstance(5, 1)))


def test_one_owner_or_none_has_the_whole_gpu():
    assert split_gpu(gpu(), (A,)).shares == (Share(A, 1.0),) and split_gpu(gpu(), (A,)).method == WHOLE
    assert split_gpu(gpu(), ()).shares == (Share(None, 1.0),)


def test_mig_instances_by_compute_slices_idle_slices_unallocated():
    a1, b5 = JobRef("a", gpu_instance=1), JobRef("b", gpu_instance=5)
    split = split_gpu(gpu(mig=LAYOUT), (a1, b5))
    assert split.method == MIG_SLICES
    assert split.shares == (Share(a1, 3 / 7, 1, "3/7"), Share(None, 2 / 7, 2, "2/7"), Share(b5, 1 / 7, 5, "1/7"),
                            Share(None, 1 / 7))
    assert sum(s.weight for s in split.shares) == pytest.approx(1.0, rel=1e-15)


def test_mig_whole_gpu_owner_fills_instances_without_their_own():
    a1 = JobRef("a", gpu_instance=1)
    shares = split_gpu(gpu(mig=LAYOUT), (a1, B)).shares
    assert shares == (Share(a1, 3 / 7, 1, "3/7"), Share(B, 2 / 7, 2, "2/7"), Share(B, 1 / 7, 5, "1/7"), Share(None, 1 / 7))


def test_instance_owner_on_a_gpu_without_mig_does_not_apply():
    assert split_gpu(gpu(), (JobRef("a", gpu_instance=1),)).shares == (Share(None, 1.0),)


def test_shared_gpu_by_per_process_utilisation():
    jobs = {10: A, 11: A, 20: B, 30: None}
    split = split_gpu(gpu((10, 11, 20, 30), util=((10, 30), (11, 30), (20, 20), (30, 20))), (A, B), jobs.get)
    assert split.method == PROCESS_UTILIZATION
    assert split.shares == (Share(A, 0.6), Share(B, 0.2), Share(None, 0.2))


@pytest.mark.parametrize("util", [None, ((10, 0), (20, 0)), ((99, 50),)])
def test_shared_gpu_without_usable_utilisation_is_split_equally(util):
    split = split_gpu(gpu((10, 20), util=util), (A, B), {10: A, 20: B}.get)
    assert (split.method, split.shares) == (EQUAL, (Share(A, 0.5), Share(B, 0.5)))


class Table:
    def __init__(self) -> None:
        self.table: dict[int, Owners] = {}

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        return dict(self.table)

    def job_of_pid(self, pid: int) -> JobRef | None:
        return {10: A, 20: B}.get(pid)


def run_node(devs, table, seconds, watts_of, until_owner_change=None):
    clock, pusher = ManualClock(1_000_000.0), CollectingPusher()
    fake = FakeNvml(devs)
    agent = Agent(NvmlSource(fake), Attributor([table]), pusher, NodeLabels("n", "c", "dc"), clock, 1.0, 10.0)
    state = {"t": 0}

    def sleep(s: float) -> None:
        ManualClock.sleep(clock, s)
        state["t"] += 1
        for i, dev in enumerate(devs):
            watts = watts_of(i, state["t"])
            if dev.energy_mj is not None:
                dev.energy_mj += int(watts * 1000 * s)
            dev.power_mw = int(watts * 1000)
        if until_owner_change is not None:
            until_owner_change(state["t"], table)

    clock.sleep = sleep  # type: ignore[method-assign]
    agent.run(until_s=1_000_000.0 + seconds)
    return fake, [i for b in pusher.sent for i in b["intervals"]]


def test_energy_counter_is_read_at_push_boundaries_and_owner_changes_only():
    devs = [FakeDevice(uuid=f"GPU-{i}", energy_mj=0) for i in range(8)]
    table = Table()

    def change(t: int, tab: Table) -> None:
        tab.table = {0: (A,)} if 15 <= t < 37 else {}

    fake, intervals = run_node(devs, table, 60, lambda i, t: 100.0 + 10 * i + t, change)
    reads = fake.calls["nvmlDeviceGetTotalEnergyConsumption"]
    # per GPU: the first tick and 6 push boundaries (the last tick, t=60, is one), not 61 ticks;
    # GPU 0 twice more: its owner came and went
    assert reads == 8 * 7 + 2, reads
    truth = {i: sum(100.0 + 10 * i + t for t in range(1, 61)) for i in range(8)}
    for i in range(8):
        mine = [x for x in intervals if x["gpu_index"] == i]
        assert sum(x["energy_j"] for x in mine) == pytest.approx(truth[i], rel=1e-12)
        assert sum(x["gpu_seconds"] for x in mine) == pytest.approx(60.0, rel=1e-12)
        assert {x["energy_method"] for x in mine} == {"counter"}
    job = [x for x in intervals if x["job"] == "a"]
    assert sum(x["gpu_seconds"] for x in job) == pytest.approx(22.0)  # owned at t=15..36, each step [t, t+1)
    assert sum(x["energy_j"] for x in job) == pytest.approx(sum(100.0 + t for t in range(16, 38)), rel=1e-12)


def test_mig_gpu_energy_split_by_slices_in_the_batch():
    dev = FakeDevice(uuid="GPU-0", energy_mj=0, mig=[(1, 3), (2, 4)], pids=[10, 20], pid_instances={10: 1, 20: 2})
    table = Table()
    table.table = {0: (JobRef("a", gpu_instance=1), JobRef("b", gpu_instance=2))}
    _, intervals = run_node([dev], table, 20, lambda i, t: 350.0)
    assert {(x["job"], x["gpu_instance"], x["split"], x["gpu_model"]) for x in intervals} == {
        ("a", 1, "mig_slices", "NVIDIA H100 80GB HBM3 MIG 3/7 slices"),
        ("b", 2, "mig_slices", "NVIDIA H100 80GB HBM3 MIG 4/7 slices"),
    }
    assert sum(x["gpu_seconds"] for x in intervals if x["job"] == "a") == pytest.approx(20 * 3 / 7)
    assert sum(x["energy_j"] for x in intervals if x["job"] == "b") == pytest.approx(20 * 350.0 * 4 / 7)


def test_gpu_without_counter_and_gpu_lost_mid_segment_between_pushes():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=None, power_mw=200_000), FakeDevice(uuid="GPU-1", energy_mj=0, power_mw=200_000)]
    table = Table()

    def lose(t: int, _tab: Table) -> None:
        devs[1].lost = t >= 15  # lost 5 s into the second push interval

    _, intervals = run_node(devs, table, 30, lambda i, t: 200.0, lose)
    counterless = [x for x in intervals if x["gpu_index"] == 0]
    assert {x["energy_method"] for x in counterless} == {"power_integrated"}  # step by step, from power
    assert sum(x["energy_j"] for x in counterless) == pytest.approx(30 * 200.0)
    lost = [x for x in intervals if x["gpu_index"] == 1]
    by_method = {m: sum(x["gpu_seconds"] for x in lost if x["energy_method"] == m) for m in {x["energy_method"] for x in lost}}
    assert by_method == {"counter": pytest.approx(10.0), "power_integrated": pytest.approx(4.0)}  # up to its last sample
    assert sum(x["energy_j"] for x in lost) == pytest.approx(14 * 200.0)
