"""The agent's last counter readings on disk, so the energy spent while it was down is accounted.

At every push the agent saves, per GPU, the reading its data ends at (time, NVML energy counter,
owners). When it starts again, ``gap_step`` turns the saved reading and the first new one into
one step: the counter delta, exact, owned by the jobs that held the GPU before AND after, and
marked as a gap. Where the counter cannot measure it (no counter, a counter that went down or was
restarted by a reboot, a gap too long) it says so and returns None; ``agent.resume`` then
accounts the gap's time and estimates what the counter does not cover (never dropped).

Also the crash-safe file primitives the spool shares: ``write_atomic`` and ``fsync_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.energy import COUNTER

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
FORMAT = 1
MAX_GAP_S = 7 * 86400.0
MAX_POWER_W = 10_000.0  # as the collector: no GPU board draws 10 kW
MAX_INTERVAL_S = 3600.0  # the collector refuses longer intervals


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> int:
    """Replace ``path`` by ``data``: after a crash it is the old file or the new one, whole, and
    the new one once this returns. Returns the bytes written."""
    tmp = path.with_name(TMP_PREFIX + path.name)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return len(data)


@dataclass(frozen=True, slots=True)
class SavedGpu:
    uuid: str
    time_s: float  # wall clock (Unix seconds): it must mean the same after a restart
    energy_mj: int | None  # NVML total-energy counter; None: the GPU has none, or it failed
    owners: list[str]  # owner job ids at that time; [] = unallocated
    epoch: str | None = None  # host boot id: a counter of another epoch restarted from 0
    power_mw: int | None = None  # the power read with it: estimates a gap the counter cannot bridge


def host_boot_id(proc_root: str | Path = "/proc") -> str | None:
    """The kernel's boot id: it changes at every reboot, when the energy counters restart."""
    try:
        return (Path(proc_root) / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def to_json(gpus: list[SavedGpu]) -> list[dict[str, Any]]:
    return [
        {"uuid": g.uuid, "time_s": g.time_s, "energy_mj": g.energy_mj, "owners": list(g.owners), "epoch": g.epoch}
        | ({"power_mw": g.power_mw} if g.power_mw is not None else {})
        for g in gpus
    ]


def from_json(items: Any) -> dict[str, SavedGpu]:
    """Readings by uuid; ValueError naming the field and value if ``items`` is not ``to_json``'s."""
    if not isinstance(items, list):
        raise ValueError(f"gpus = {items!r}: expected a list")
    out: dict[str, SavedGpu] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"gpu = {item!r}: expected an object")
        uuid, time_s, energy_mj = item.get("uuid"), item.get("time_s"), item.get("energy_mj")
        owners, epoch = item.get("owners"), item.get("epoch")
        if not isinstance(uuid, str) or not uuid:
            raise ValueError(f"uuid = {uuid!r}: expected a GPU uuid")
        if isinstance(time_s, bool) or not isinstance(time_s, (int, float)) or not math.isfinite(time_s):
            raise ValueError(f"time_s = {time_s!r} (GPU {uuid}): expected a finite number of seconds")
        if energy_mj is not None and (type(energy_mj) is not int or energy_mj < 0):
            raise ValueError(f"energy_mj = {energy_mj!r} (GPU {uuid}): expected a counter >= 0 or null")
        if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
            raise ValueError(f"owners = {owners!r} (GPU {uuid}): expected a list of job ids")
        if epoch is not None and not isinstance(epoch, str):
            raise ValueError(f"epoch = {epoch!r} (GPU {uuid}): expected a string or null")
        power_mw = item.get("power_mw")
        if power_mw is not None and (type(power_mw) is not int or not 0 <= power_mw <= MAX_POWER_W * 1000):
            raise ValueError(f"power_mw = {power_mw!r} (GPU {uuid}): expected milliwatts from 0 to "
                             f"{MAX_POWER_W * 1000:g} or null")
        out[uuid] = SavedGpu(uuid, float(time_s), energy_mj, owners, epoch, power_mw)
    return out


def newest(*readings: dict[str, SavedGpu]) -> dict[str, SavedGpu]:
    """Per GPU, the latest of several sets of readings (the state file, the spool's)."""
    out: dict[str, SavedGpu] = {}
    for reading in readings:
        for uuid, gpu in reading.items():
            if uuid not in out or gpu.time_s > out[uuid].time_s:
                out[uuid] = gpu
    return out


class CounterState:
    """One JSON file, replaced atomically at every save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, gpus: list[SavedGpu]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"format": FORMAT, "gpus": to_json(gpus)}, separators=(",", ":"), allow_nan=False)
        write_atomic(self.path, data.encode())

    def load(self) -> dict[str, SavedGpu]:
        """The saved readings by uuid; {} (with a warning) when the file is missing or unreadable."""
        try:
            doc = json.loads(self.path.read_bytes())
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"format = {doc.get('format') if isinstance(doc, dict) else doc!r}: expected {FORMAT}")
            return from_json(doc.get("gpus"))
        except FileNotFoundError:
            log.warning("no saved counter readings at %s (first start?): energy before this start is not accounted", self.path)
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("saved counter readings %s are unreadable (%s): ignored", self.path, exc)
        return {}


@dataclass(frozen=True, slots=True)
class GapStep:
    """The step from a saved reading to the first reading after a restart."""

    seconds: float
    energy_j: float
    owners: list[str]  # job ids; [] = unallocated
    method: str
    marked: bool  # True: it came from a gap in the agent's sampling

    def pieces(self, start_s: float, max_s: float = MAX_INTERVAL_S) -> list[tuple[float, float, float]]:
        """``(start_s, seconds, energy_j)`` pieces no longer than ``max_s`` (the collector's limit),
        energy in proportion to time (only the total was measured); they sum to the step."""
        n = max(1, math.ceil(self.seconds / max_s))
        piece_s, piece_j = self.seconds / n, self.energy_j / n
        out = [(start_s + i * piece_s, piece_s, piece_j) for i in range(n - 1)]
        out.append((start_s + (n - 1) * piece_s, self.seconds - piece_s * (n - 1), self.energy_j - piece_j * (n - 1)))
        return out


def gap_step(
    saved: SavedGpu,
    now_time_s: float,
    now_energy_mj: int | None,
    now_owners: list[str],
    max_gap_s: float = MAX_GAP_S,
    *,
    now_epoch: str | None = None,
    max_power_w: float = MAX_POWER_W,
) -> GapStep | None:
    """The gap from ``saved`` to the first new reading, or None where its energy is unknown."""
    seconds = now_time_s - saved.time_s
    if not 0 < seconds <= max_gap_s:
        if seconds != 0:
            log.warning("GPU %s: %g s since the saved reading, expected 0 to %g s: the gap is not accounted",
                        saved.uuid, seconds, max_gap_s)
        return None
    why = None
    if saved.energy_mj is None or now_energy_mj is None:
        why = "no energy counter reading at one end"
    elif saved.epoch is not None and now_epoch is not None and saved.epoch != now_epoch:
        why = "the host rebooted, restarting the counter"
    elif now_energy_mj < saved.energy_mj:
        why = f"the counter went down ({saved.energy_mj} -> {now_energy_mj} mJ): the driver reloaded"
    elif (now_energy_mj - saved.energy_mj) / 1000 > max_power_w * seconds:
        why = f"{(now_energy_mj - saved.energy_mj) / 1000:g} J in {seconds:g} s is more than {max_power_w:g} W"
    if why is not None or now_energy_mj is None or saved.energy_mj is None:
        log.warning("GPU %s: the energy counter cannot measure the %g s gap (%s)", saved.uuid, seconds, why)
        return None
    owners = [job for job in dict.fromkeys(saved.owners) if job in now_owners]
    return GapStep(seconds, (now_energy_mj - saved.energy_mj) / 1000, owners, COUNTER, True)
