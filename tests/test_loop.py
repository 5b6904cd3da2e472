"""The agent loop on the fake NVML and a manual clock: what ends up in the batches."""

from collections.abc import Iterable

import pytest

from agent.attribution import Attributor, JobRef, Owners
from agent.clock import ManualClock
from agent.gpu import GpuSample
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.sim.fakenvml import FakeDevice, FakeNvml
from tests.conftest import CollectingPusher as Collected


class Owned:
    def __init__(self) -> None:
        self.table: dict[int, Owners] = {}

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        return dict(self.table)


def make_agent(devs: list[FakeDevice]) -> tuple[Agent, Collected, Owned, ManualClock]:
    clock, pusher, owned = ManualClock(1_000_000.0), Collected(), Owned()
    agent = Agent(NvmlSource(FakeNvml(devs)), Attributor([owned]), pusher, NodeLabels("n1", "c", "dc"), clock)
    return agent, pusher, owned, clock


def advance(agent: Agent, clock: ManualClock, devs: list[FakeDevice], seconds: int, watts: float) -> None:
    """Each GPU draws ``watts`` for ``seconds`` whole seconds, sampled every second."""
    for _ in range(seconds):
        clock.sleep(1.0)
        for dev in devs:
            if dev.energy_mj is not None:
                dev.energy_mj += int(watts * 1000)
            dev.power_mw = int(watts * 1000)
        agent.tick()


def intervals(pusher: Collected) -> list[dict]:
    return [i for batch in pusher.sent for i in batch["intervals"]]


def test_steps_go_to_the_owner_at_the_earlier_sample():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=0)]
    agent, pusher, owned, clock = make_agent(devs)
    agent.tick()  # t=0: nobody
    owned.table = {0: (JobRef("7", "train", "alice", "nlp"),)}
    advance(agent, clock, devs, 1, 100.0)  # (0,1]: still unallocated; job seen at t=1
    advance(agent, clock, devs, 5, 400.0)  # (1,6]: the job
    owned.table = {}
    advance(agent, clock, devs, 2, 100.0)  # (6,7] job, (7,8] unallocated
    agent.push()
    by_job = {}
    for i in intervals(pusher):
        got = by_job.setdefault(i["job"], [0.0, 0.0])
        got[0] += i["gpu_seconds"]
        got[1] += i["energy_j"]
    assert by_job == {None: [2.0, 200.0], "7": [6.0, 2100.0]}
    (batch,) = pusher.sent
    assert batch["jobs"] == [{"id": "7", "name": "train", "user": "alice", "account": "nlp"}]
    assert (batch["node"], batch["cluster"], batch["datacenter"], batch["seq"]) == ("n1", "c", "dc", 0)


def test_shared_gpu_is_split_equally():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=0)]
    agent, pusher, owned, clock = make_agent(devs)
    owned.table = {0: (JobRef("a"), JobRef("b"))}
    agent.tick()
    advance(agent, clock, devs, 10, 300.0)
    agent.push()
    shares = {i["job"]: (i["gpu_seconds"], i["energy_j"]) for i in intervals(pusher)}
    assert shares == {"a": (5.0, 1500.0), "b": (5.0, 1500.0)}


def test_counter_reset_is_estimated_from_power_and_marked():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=50_000_000)]
    agent, pusher, owned, clock = make_agent(devs)
    owned.table = {0: (JobRef("j"),)}
    agent.tick()
    advance(agent, clock, devs, 3, 200.0)
    devs[0].energy_mj = 0  # driver reloaded
    clock.sleep(1.0)
    devs[0].power_mw = 200_000
    agent.tick()
    advance(agent, clock, devs, 3, 200.0)
    agent.push()
    methods = {i["energy_method"]: (i["gpu_seconds"], i["energy_j"]) for i in intervals(pusher)}
    assert methods == {"counter": (6.0, 1200.0), "power_integrated": (1.0, pytest.approx(200.0))}


def test_lost_gpu_stops_its_intervals_not_the_others():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=0), FakeDevice(uuid="GPU-1", energy_mj=0)]
    agent, pusher, owned, clock = make_agent(devs)
    agent.tick()
    advance(agent, clock, devs, 4, 100.0)
    devs[1].lost = True
    advance(agent, clock, devs, 6, 100.0)
    agent.push()
    seconds = {i["gpu_uuid"]: i["gpu_seconds"] for i in intervals(pusher)}
    assert seconds == {"GPU-0": 10.0, "GPU-1": 4.0}


def test_gpu_without_counter_integrates_power():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=None, power_mw=250_000)]
    agent, pusher, owned, clock = make_agent(devs)
    agent.tick()
    advance(agent, clock, devs, 8, 250.0)
    agent.push()
    (interval,) = intervals(pusher)
    assert (interval["energy_method"], interval["gpu_seconds"], interval["energy_j"]) == ("power_integrated", 8.0, 2000.0)


def test_run_pushes_every_push_interval_with_increasing_seq():
    devs = [FakeDevice(uuid="GPU-0", energy_mj=0)]
    agent, pusher, owned, clock = make_agent(devs)
    agent.run(until_s=clock.now() + 35)
    assert [b["seq"] for b in pusher.sent] == [0, 1, 2, 3]
    assert len({b["boot_id"] for b in pusher.sent}) == 1
    assert sum(i["gpu_seconds"] for i in intervals(pusher)) == 35.0
