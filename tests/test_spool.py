"""The agent's disk spool and saved counter readings, on the real filesystem (and a real kill -9)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.spool import MAX_INTERVAL_S, Spool, merge_batches
from agent.state import CounterState, GapStep, SavedGpu, from_json, gap_step, newest, to_json
from collector.schemas import IntervalIn, NetworkIn

ROOT = Path(__file__).resolve().parents[1]


def make_batch(seq: int, boot: str = "boot-a", start_s: float | None = None, span_s: float = 10.0,
               energy_j: float | None = None, node: str = "node-1") -> dict[str, Any]:
    """Two GPUs of one job and its network share over [start_s, start_s + span_s)."""
    start = 1_000_000.0 + seq * span_s if start_s is None else start_s
    intervals = [
        {"gpu_uuid": f"GPU-{i}", "gpu_index": i, "gpu_model": "H100", "job": "c/1", "start_s": start,
         "end_s": start + span_s, "gpu_seconds": span_s, "busy_gpu_seconds": span_s / 2,
         "energy_j": (0.25 * (seq + 1) * (i + 1)) if energy_j is None else energy_j, "energy_method": "counter",
         "max_memory_used_bytes": 1000 * seq + i}
        for i in range(2)
    ]
    network = [{"job": "c/1", "start_s": start, "end_s": start + span_s, "ports": 2 + seq % 2, "seconds": span_s,
                "counters": {"tx_bytes": 1024.0 * seq, "rx_bytes": 512.0}, "apportioned_bytes": 8.0,
                "peak_tx_gbps": float(seq), "peak_rx_gbps": 1.5, "peak_link_util_pct": None,
                "link_down_port_seconds": 0.5}]
    return {"node": node, "cluster": "c", "datacenter": "dc", "boot_id": boot, "seq": seq, "sent_at_s": start + span_s,
            "agent_version": "0.1.0", "simulated": True, "jobs": [{"id": "c/1", "name": "train", "user": "u"}],
            "intervals": intervals, "network": network}


def drain(spool: Spool) -> list[dict[str, Any]]:
    out = []
    while (batch := spool.peek()) is not None:
        spool.mark_sent(batch)
        spool.ack(batch)
        out.append(batch)
    return out


def totals(batches: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "energy_j": sum(i["energy_j"] for b in batches for i in b["intervals"]),
        "gpu_seconds": sum(i["gpu_seconds"] for b in batches for i in b["intervals"]),
        "busy_gpu_seconds": sum(i["busy_gpu_seconds"] for b in batches for i in b["intervals"]),
        "tx_bytes": sum(n["counters"].get("tx_bytes", 0.0) for b in batches for n in b["network"]),
        "rx_bytes": sum(n["counters"].get("rx_bytes", 0.0) for b in batches for n in b["network"]),
        "network_seconds": sum(n["seconds"] for b in batches for n in b["network"]),
        "apportioned_bytes": sum(n["apportioned_bytes"] for b in batches for n in b["network"]),
        "link_down_port_seconds": sum(n["link_down_port_seconds"] for b in batches for n in b["network"]),
    }


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


# -- order, durability, corruption ------------------------------------------------------------


def test_order_across_two_boots(tmp_path: Path):
    first = Spool(tmp_path)
    for seq in range(3):
        first.put(make_batch(seq, boot="zzz-first-boot"))
    second = Spool(tmp_path)  # the agent restarted: a new boot id, sorting before the old one by name
    for seq in range(2):
        second.put(make_batch(seq, boot="aaa-second-boot"))
    order = [(b["boot_id"], b["seq"]) for b in drain(second)]
    assert order == [("zzz-first-boot", 0), ("zzz-first-boot", 1), ("zzz-first-boot", 2),
                     ("aaa-second-boot", 0), ("aaa-second-boot", 1)]
    assert len(second) == 0 and second.bytes() == 0 and files(tmp_path) == []


def test_peek_does_not_remove_and_ack_is_idempotent(tmp_path: Path):
    spool = Spool(tmp_path)
    spool.put(make_batch(0))
    spool.put(make_batch(1))
    assert spool.peek() == spool.peek() == make_batch(0)
    spool.ack(make_batch(0))
    spool.ack(make_batch(0))
    assert spool.peek() == make_batch(1) and len(spool) == 1
    with pytest.raises(ValueError, match="already in the spool"):
        spool.put(make_batch(1))


def test_survives_reopening(tmp_path: Path):
    spool = Spool(tmp_path)
    for seq in range(4):
        spool.put(make_batch(seq), counters=[{"seq": seq}])
    spool.mark_sent(make_batch(0))
    spool.ack(make_batch(1))  # out of order: the collector answered for it some other way
    size = spool.bytes()
    reopened = Spool(tmp_path)
    assert len(reopened) == 3 and reopened.bytes() == size
    assert reopened.peek() == make_batch(0)
    assert any(name.endswith(".sent.json") for name in files(tmp_path))
    assert reopened.latest_counters() == [{"seq": 3}]
    reopened.put(make_batch(4))
    assert [b["seq"] for b in drain(reopened)] == [0, 2, 3, 4]


def test_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    spool = Spool(tmp_path)
    for seq in range(3):
        spool.put(make_batch(seq))
    middle = tmp_path / files(tmp_path)[1]
    middle.write_bytes(middle.read_bytes()[:40])  # torn by a disk error
    (tmp_path / ".tmp-000000000009-boot-a-9.json").write_bytes(b"{")  # a put killed before its rename
    with caplog.at_level(logging.WARNING, logger="agent.spool"):
        reopened = Spool(tmp_path)
    assert len(reopened) == 2
    assert files(tmp_path / "corrupt") == [middle.name]
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))
    assert middle.name in caplog.text and "corrupt" in caplog.text
    # A file that turns unreadable while the spool is open is skipped by peek, too.
    (tmp_path / files(tmp_path)[0]).write_text("not json")
    assert reopened.peek() == make_batch(2)
    assert len(reopened) == 1 and len(files(tmp_path / "corrupt")) == 2


# -- compaction --------------------------------------------------------------------------------


def test_compaction_preserves_sums_exactly(tmp_path: Path):
    batches = [make_batch(seq) for seq in range(60)]
    size = len(json.dumps({"format": 1, "absorbed": [], "batch": batches[0], "counters": None}))
    spool = Spool(tmp_path, max_bytes=10 * size)
    for seq, batch in enumerate(batches):
        spool.put(batch, counters=[{"seq": seq}])
        assert spool.bytes() <= 10 * size * 1.1
    assert len(spool) < 20 and spool.merged_intervals() > 0
    assert spool.latest_counters() == [{"seq": 59}]
    out = drain(spool)
    assert totals(out) == totals(batches)  # exact: no rounding on these values
    assert sum(b.get("merged_intervals", 0) for b in out) == spool.merged_intervals()
    assert [b["seq"] for b in out] == sorted(b["seq"] for b in out) and out[-1]["seq"] == 59
    for batch in out:
        assert batch["jobs"] == [{"id": "c/1", "name": "train", "user": "u"}]
        for interval in batch["intervals"]:
            IntervalIn.model_validate(interval)  # the collector accepts every merged interval
            assert interval["end_s"] - interval["start_s"] <= MAX_INTERVAL_S
        for record in batch["network"]:
            NetworkIn.model_validate(record)
    merged = out[0]
    assert merged["merged_intervals"] > 0
    assert max(i["max_memory_used_bytes"] for i in merged["intervals"]) > 1000
    assert merged["network"][0]["ports"] == 3 and merged["network"][0]["peak_tx_gbps"] > 0


def test_compaction_never_spans_more_than_an_hour(tmp_path: Path):
    batches = [make_batch(seq, span_s=60.0) for seq in range(200)]  # 200 minutes
    spool = Spool(tmp_path, max_bytes=1)  # merge whatever can be merged
    for batch in batches:
        spool.put(batch)
    out = drain(spool)
    assert 4 <= len(out) <= 8
    assert totals(out) == totals(batches)
    for batch in out:
        for record in batch["intervals"] + batch["network"]:
            assert record["end_s"] - record["start_s"] <= MAX_INTERVAL_S


def test_sent_and_peeked_batches_are_never_merged(tmp_path: Path):
    spool = Spool(tmp_path, max_bytes=1)
    spool.put(make_batch(0))
    spool.put(make_batch(1))
    assert len(spool) == 1  # unsent: merged at once
    spool.mark_sent(spool.peek() or {})
    sent_bytes = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    spool.put(make_batch(2))
    assert spool.peek() == merge_batches(make_batch(0), make_batch(1))[0]  # the sent batch, unchanged
    spool.put(make_batch(3))
    assert len(spool) == 2  # 2 and 3 merged, never into the sent one
    for name, data in sent_bytes.items():
        assert (tmp_path / name).read_bytes() == data
    spool.ack(make_batch(0))
    head = spool.peek()  # handed out, not yet marked sent: pinned
    assert head is not None and head["seq"] == 2
    spool.put(make_batch(4))
    spool.put(make_batch(5))
    assert spool.peek() == head
    assert [b["seq"] for b in drain(spool)] == [2, 4]


def test_over_budget_with_nothing_mergeable_keeps_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    hours = [make_batch(seq, span_s=3600.0) for seq in range(6)]  # each already an hour long
    spool = Spool(tmp_path, max_bytes=1)
    with caplog.at_level(logging.ERROR, logger="agent.spool"):
        for batch in hours:
            spool.put(batch)
    assert len(spool) == 6 and spool.merged_intervals() == 0
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # logged once, not at every put
    sent = Spool(tmp_path / "sent", max_bytes=1)
    for seq in range(4):
        sent.put(make_batch(seq))
        sent.mark_sent(make_batch(seq))
    assert len(sent) == 4
    assert drain(spool) == hours and [b["seq"] for b in drain(sent)] == [0, 1, 2, 3]


def test_other_node_or_boot_is_never_merged(tmp_path: Path):
    spool = Spool(tmp_path, max_bytes=1)
    spool.put(make_batch(0, boot="a"))
    spool.put(make_batch(1, boot="b"))
    spool.put(make_batch(2, boot="b", node="node-2"))
    assert len(spool) == 3


def test_a_merge_cut_short_by_a_crash_counts_once(tmp_path: Path):
    batches = [make_batch(seq) for seq in range(2)]
    spool = Spool(tmp_path)
    for batch in batches:
        spool.put(batch)
    newer = tmp_path / files(tmp_path)[1]
    saved = newer.read_bytes()
    spool.max_bytes = 1
    spool.put(make_batch(2, boot="other"))  # merges 0 and 1, removes the newer file
    assert not newer.exists()
    newer.write_bytes(saved)  # as if the crash came between the rewrite and the unlink
    reopened = Spool(tmp_path)
    assert not newer.exists() and len(reopened) == 2
    reopened.put(make_batch(3, boot="other"))
    out = drain(reopened)
    assert totals(out[:1]) == totals(batches)
    assert [(b["boot_id"], b["seq"]) for b in out] == [("boot-a", 0), ("other", 2), ("other", 3)]


# -- kill -9 -----------------------------------------------------------------------------------

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from agent.spool import Spool
spool = Spool(sys.argv[2], max_bytes=int(sys.argv[3]))
for seq in range(52):
    start = 1000.0 + 10 * seq
    spool.put({"node": "n", "boot_id": "b", "seq": seq, "intervals": [{
        "gpu_uuid": "GPU-0", "gpu_index": 0, "gpu_model": "H100", "job": "j", "start_s": start, "end_s": start + 10,
        "gpu_seconds": 10.0, "busy_gpu_seconds": 5.0, "energy_j": 2.0 ** seq, "energy_method": "counter",
        "max_memory_used_bytes": None}], "network": [], "jobs": []})
    print(seq, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("max_bytes", "kill_after"), [(10**9, 20), (1, 7), (1, 23), (1, 41)])
def test_every_put_that_returned_survives_kill_9(tmp_path: Path, max_bytes: int, kill_after: int):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(tmp_path), str(max_bytes)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    printed = [int(child.stdout.readline()) for _ in range(kill_after)]
    child.send_signal(signal.SIGKILL)  # mid-way: the child keeps putting while we read
    child.wait(timeout=10)
    printed += [int(line) for line in child.stdout.read().split()]
    assert child.returncode == -signal.SIGKILL
    out = drain(Spool(tmp_path))
    energy_j = sum(i["energy_j"] for b in out for i in b["intervals"])  # 2**seq: one bit per batch
    present = {seq for seq in range(52) if int(energy_j) >> seq & 1}
    assert energy_j == sum(2.0**seq for seq in present)  # no batch counted twice (that would carry)
    assert present in ({*printed}, {*printed, len(printed)})  # a put may have ended unreported
    assert printed == list(range(len(printed)))
    if max_bytes == 1:
        assert len(out) < len(present)  # the kill came during compaction's rewrites


# -- saved counter readings --------------------------------------------------------------------


def test_counter_state_round_trip(tmp_path: Path):
    state = CounterState(tmp_path / "sub" / "counters.json")
    assert state.load() == {}
    gpus = [SavedGpu("GPU-0", 1_700_000_000.5, 123_456_789, ["c/1"], "boot-x"), SavedGpu("GPU-1", 1.0, None, [])]
    state.save(gpus)
    assert state.load() == {"GPU-0": gpus[0], "GPU-1": gpus[1]}
    state.save(gpus[:1])
    assert list(CounterState(state.path).load()) == ["GPU-0"]
    assert from_json(to_json(gpus)) == {g.uuid: g for g in gpus}
    assert [p.name for p in state.path.parent.iterdir()] == ["counters.json"]


@pytest.mark.parametrize("content", [b"", b"{\"format\": 1, \"gpus\": [{\"uuid\": \"G\"", b"[]",
                                     b"{\"format\": 1, \"gpus\": [{\"uuid\": \"G\", \"time_s\": \"x\", \"owners\": []}]}",
                                     b"{\"format\": 2, \"gpus\": []}", b"\xff\xfe"])
def test_corrupt_counter_state_is_empty(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "counters.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="agent.state"):
        assert CounterState(path).load() == {}
    assert "unreadable" in caplog.text


def test_newest_reading_wins():
    old, new = SavedGpu("G", 10.0, 1, []), SavedGpu("G", 20.0, 2, ["j"])
    assert newest({"G": new}, {"G": old}) == newest({"G": old}, {"G": new}) == {"G": new}


SAVED = SavedGpu("GPU-0", 1000.0, 5_000_000, ["c/1", "c/2"], "boot-x")


def test_gap_same_owner_goes_to_that_owner():
    step = gap_step(SAVED, 1600.0, 5_000_000 + 420_000_000, ["c/2", "c/1"], now_epoch="boot-x")
    assert step == GapStep(600.0, 420_000.0, ["c/1", "c/2"], "counter", True)


def test_gap_owner_changed_is_unallocated():
    step = gap_step(SAVED, 1600.0, 6_000_000, ["c/9"])
    assert step is not None and step.owners == [] and step.energy_j == 1000.0 and step.marked
    partly = gap_step(SAVED, 1600.0, 6_000_000, ["c/2", "c/9"])
    assert partly is not None and partly.owners == ["c/2"]


@pytest.mark.parametrize(
    ("now_time_s", "now_energy_mj", "now_epoch", "why"),
    [
        (1600.0, 4_000_000, None, "went down"),  # the driver reloaded during the outage
        (1600.0, None, None, "no energy counter"),
        (1000.0 + 8 * 86400, 6_000_000, None, "not accounted"),  # too long
        (900.0, 6_000_000, None, "not accounted"),  # backwards
        (1600.0, 6_000_000, "boot-y", "rebooted"),  # counter restarted, may be above the saved value
        (1001.0, 5_000_000 + 20_000_000, None, "more than"),  # 20 kJ in 1 s: not a GPU
    ],
)
def test_gap_energy_unknown_is_none(now_time_s: float, now_energy_mj: int | None, now_epoch: str | None, why: str,
                                    caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="agent.state"):
        assert gap_step(SAVED, now_time_s, now_energy_mj, ["c/1"], now_epoch=now_epoch) is None
    assert why in caplog.text


def test_gap_missing_saved_counter_is_none():
    assert gap_step(SavedGpu("GPU-0", 1000.0, None, ["c/1"]), 1600.0, 6_000_000, ["c/1"]) is None
    assert gap_step(SAVED, 1000.0, 5_000_000, ["c/1"]) is None  # no time passed


def test_gap_pieces_fit_the_collector_and_sum_to_the_step():
    step = gap_step(SAVED, 1000.0 + 3 * 3600 + 7, 5_000_000 + 123_456_789, ["c/1"])
    assert step is not None
    pieces = step.pieces(1000.0)
    assert len(pieces) == 4 and all(seconds <= MAX_INTERVAL_S for _, seconds, _ in pieces)
    assert sum(s for _, s, _ in pieces) == pytest.approx(step.seconds, abs=1e-9)
    assert sum(j for _, _, j in pieces) == pytest.approx(step.energy_j, rel=1e-15)
    assert pieces[0][0] == 1000.0 and pieces[-1][0] + pieces[-1][1] == pytest.approx(1000.0 + step.seconds)
    assert GapStep(60.0, 1.0, [], "counter", True).pieces(5.0) == [(5.0, 60.0, 1.0)]


def test_spool_is_independent_of_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Spool("relative").put(make_batch(0))
    shutil.move("relative", "moved")
    assert Spool(tmp_path / "moved").peek() == make_batch(0)
