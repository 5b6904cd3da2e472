"""The state directory's default, and the agent's state when the directory fails; a counter
reset during an outage (unit level: the end-to-end runs are in test_messy_hardware.py)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from agent.energy import COUNTER_GAP, NONE, POWER_GAP
from agent.gpu import GpuSample
from agent.resume import estimated_gap
from agent.spool import Spool
from agent.state import SavedGpu
from agent.statedir import FallbackStore, SafeCounterState, StateHealth, default_state_dir


def test_default_is_the_system_dir_when_writable(tmp_path: Path):
    assert default_state_dir(tmp_path / "var/lib/gpuledger-agent", {}) == tmp_path / "var/lib/gpuledger-agent"


def test_default_falls_back_to_the_users_state_dir(tmp_path: Path):
    locked = tmp_path / "not-a-dir"
    locked.write_text("")  # /var/lib/gpuledger-agent cannot be created under a file
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert default_state_dir(locked / "gpuledger-agent", env) == tmp_path / "xdg/gpuledger-agent"
    assert default_state_dir(locked / "gpuledger-agent", {"HOME": str(tmp_path / "home")}) == (
        tmp_path / "home/.local/state/gpuledger-agent")


def batch(seq: int) -> dict:
    return {"node": "n", "boot_id": "b", "seq": seq, "intervals": [], "network": []}


class FullSpool(Spool):
    full = False

    def put(self, batch: dict, counters=None) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().put(batch, counters)


def test_full_spool_keeps_batches_in_memory_warns_once_and_marks_readings_stale(tmp_path: Path, caplog):
    health = StateHealth(tmp_path)
    spool = FullSpool(tmp_path / "spool")
    store = FallbackStore(spool, health)
    store.put(batch(0), counters=[{"uuid": "G"}])
    spool.full = True
    with caplog.at_level(logging.WARNING):
        store.put(batch(1))
        store.put(batch(2))
    assert len(store) == 3 and health.degraded and health.write_failures == 2
    assert len([r for r in caplog.records if "running from memory" in r.getMessage()]) == 1
    assert store.latest_counters() is None  # batch 0's readings are behind batches 1 and 2
    order = []
    while (b := store.peek()) is not None:
        store.mark_sent(b)
        store.ack(b)
        order.append(b["seq"])
    assert order == [0, 1, 2] and len(store) == 0
    state = SafeCounterState(tmp_path / "counters.json", health)
    assert state.load() == {}  # marked stale
    state.save([SavedGpu("G", 1.0, 5, [])])
    assert not health.readings_stale() and state.load() == {"G": SavedGpu("G", 1.0, 5, [])}


@pytest.mark.parametrize(("code", "kept"), [(errno.ENOSPC, True), (errno.EIO, False)])
def test_counter_state_on_a_full_disk_is_rewritten_in_place_else_removed(tmp_path: Path, monkeypatch, code, kept):
    health = StateHealth(tmp_path)
    state = SafeCounterState(tmp_path / "counters.json", health)
    state.save([SavedGpu("G", 1.0, 5, ["a-job-with-a-long-name"])])

    def failing(*_args, **_kwargs):
        raise OSError(code, "No space left on device" if code == errno.ENOSPC else "I/O error")

    monkeypatch.setattr("agent.statedir.write_atomic", failing)
    state.save([SavedGpu("G", 2.0, 9, ["b"])])  # shorter: fits in the old file's blocks
    assert health.degraded and (tmp_path / "counters.json").exists() == kept
    assert state.load() == ({"G": SavedGpu("G", 2.0, 9, ["b"])} if kept else {})
    if kept:
        state.save([SavedGpu("G", 3.0, 10, ["x" * 500])])  # no longer fits: removed, never left stale
        assert not (tmp_path / "counters.json").exists() and state.load() == {}


def saved(power_mw: int | None = 300_000, energy_mj: int | None = 900_000_000) -> SavedGpu:
    return SavedGpu("G", 1000.0, energy_mj, ["j"], "boot", power_mw)


def now(energy_mj: int | None, power_mw: int | None = 500_000) -> GpuSample:
    return GpuSample(0, 1020.0, energy_mj, power_mw, None, None, ())


def test_reset_in_a_gap_measures_since_the_reset_and_estimates_before_it():
    # 20 s gap; 400 W on average; 3200 J since the reset: the reset ~8 s ago, 12 s estimated.
    parts = estimated_gap(saved(), now(3_200_000), "boot")
    assert parts == [(1000.0, pytest.approx(12.0), pytest.approx(4800.0), POWER_GAP),
                     (pytest.approx(1012.0), pytest.approx(8.0), 3200.0, COUNTER_GAP)]
    assert sum(p[1] for p in parts) == 20.0  # the spans add up exactly to the gap


def test_reboot_in_a_gap_counts_the_new_epochs_counter():
    # The counter is above the saved value, but the host rebooted: it restarted from 0 (6 kJ since).
    parts = estimated_gap(saved(energy_mj=1_000_000), now(6_000_000), "other-boot")
    assert parts == [(1000.0, pytest.approx(5.0), pytest.approx(2000.0), POWER_GAP),
                     (pytest.approx(1005.0), pytest.approx(15.0), 6000.0, COUNTER_GAP)]


@pytest.mark.parametrize(("before", "cur", "expected"), [
    (saved(energy_mj=None), now(None), [(1000.0, 20.0, 8000.0, POWER_GAP)]),  # no counter: from power
    (saved(power_mw=None), now(None, None), [(1000.0, 20.0, 0.0, NONE)]),  # nothing at all: time only
    (saved(power_mw=None), now(3_200_000, None), [(1000.0, 20.0, 3200.0, COUNTER_GAP)]),  # reset, no power
])
def test_gaps_the_counter_cannot_bridge_are_never_dropped(before, cur, expected):
    assert estimated_gap(before, cur, "boot") == expected
