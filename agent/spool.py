"""A disk spool of the batches the collector has not acknowledged; survives kill -9 and reboot.

One file per batch, ``<index:012d>-<boot_id>-<seq>.json``, written to a temporary name, fsynced,
renamed, its directory fsynced. The index grows with every put and is recovered from the
directory: batches leave in the order they were made, an earlier boot's first. An unreadable
file is moved to ``<dir>/corrupt/`` with a warning.

Exactly once (the collector applies each (node, boot_id, seq) once): ``mark_sent(batch)``
BEFORE posting, ``ack(batch)`` once the collector answered. A batch ever posted (durably renamed
``...sent.json``) may already be applied: it is re-sent unchanged and NEVER merged (merged
into another it would count twice; another merged into it would be lost with its known seq).
Over ``max_bytes`` the OLDEST batches compact: two adjacent unsent ones of one node and boot
(not the one ``peek`` handed out) become one with the older's identity; intervals of one
(gpu_uuid, job, energy_method) and network records of one job are summed, never spanning over
the collector's 3600 s, and ``merged_intervals`` counts the records merged away. Nothing is
dropped: when nothing merges, the spool stays over budget and logs an error. A merge rewrites
the older file naming the newer's index in ``absorbed``, then deletes the newer file; after a
crash in between, the start deletes any file another absorbed, so its data counts once.

A batch the pusher sets aside (``set_aside``: it broke the collector several times in a row)
moves, unchanged, to ``<dir>/aside/``: kept on disk across restarts, never merged, out of
``peek``'s way so the batches behind it flow; ``aside()`` lists them for their slow retries.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from agent.state import TMP_PREFIX, fsync_dir, write_atomic

log = logging.getLogger(__name__)

MAX_INTERVAL_S = 3600.0  # the collector refuses longer intervals (collector/schemas.py)
MAX_MERGED_BATCH_BYTES = 4 * 1024**2  # one POST body; far below the collector's 200k-interval limit too
FORMAT = 1
_NAME = re.compile(r"^(\d{12})-[A-Za-z0-9._-]+-\d+(\.sent)?\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
BatchKey = tuple[str, str, int]  # (node, boot_id, seq)
Record = dict[str, Any]


@dataclass(slots=True)
class _Entry:
    index: int
    path: Path
    size: int
    key: BatchKey
    sent: bool
    version: int = 0  # bumped at every rewrite


def _key(batch: Record) -> BatchKey:
    node, boot_id, seq = batch.get("node"), batch.get("boot_id"), batch.get("seq")
    if not isinstance(node, str) or not isinstance(boot_id, str) or type(seq) is not int:
        raise ValueError(f"batch identity node={node!r} boot_id={boot_id!r} seq={seq!r}: expected str, str, int")
    return node, boot_id, seq


class Spool:
    def __init__(self, directory: str | Path, max_bytes: int = 256 * 1024**2) -> None:
        self.dir, self.max_bytes = Path(directory), max_bytes
        self.corrupt_dir = self.dir / "corrupt"
        self.corrupt_dir.mkdir(parents=True, exist_ok=True)
        self.aside_dir = self.dir / "aside"
        self.aside_dir.mkdir(parents=True, exist_ok=True)
        self._aside: dict[BatchKey, tuple[Path, int]] = {}  # set-aside batches: path, size
        self._lock = threading.RLock()
        self._entries: dict[int, _Entry] = {}  # by index, oldest first
        self._by_key: dict[BatchKey, int] = {}
        self._bytes = self._merged = self._next_index = 0
        self._pinned: int | None = None  # handed out by peek and not sent yet: never merged
        self._unmergeable: set[tuple[int, int, int, int]] = set()  # (index, version) pairs tried in vain
        self._stuck = False  # over budget with nothing to merge: logged once
        with self._lock:
            self._load()

    def put(self, batch: Record, counters: Any = None) -> None:
        """Store ``batch`` durably (or raise OSError), with ``counters``: JSON kept, never sent."""
        key = _key(batch)
        with self._lock:
            if key in self._by_key or key in self._aside:
                raise ValueError(f"batch (node, boot_id, seq) = {key}: already in the spool {self.dir}")
            index, self._next_index = self._next_index, self._next_index + 1  # never reused, even on failure
            path = self.dir / f"{index:012d}-{_UNSAFE.sub('_', key[1])}-{key[2]}.json"
            size = self._write(path, {"format": FORMAT, "absorbed": [], "batch": batch, "counters": counters})
            self._add(_Entry(index, path, size, key, sent=False))
            self._compact()

    def peek(self) -> Record | None:
        """The oldest batch, left in the spool until ``ack``."""
        with self._lock:
            for entry in list(self._entries.values()):
                if (doc := self._read(entry.path)) is not None:
                    self._pinned = entry.index
                    return doc["batch"]
            return None

    def mark_sent(self, batch: Record) -> None:
        """Record durably that ``batch`` is about to be posted: it will never be merged."""
        with self._lock:
            if (entry := self._entry(batch)) is not None and not entry.sent:  # else acked, or marked already
                sent_path = entry.path.with_name(entry.path.name.removesuffix(".json") + ".sent.json")
                os.replace(entry.path, sent_path)
                fsync_dir(self.dir)
                entry.path, entry.sent = sent_path, True

    def ack(self, batch: Record) -> None:
        """The collector answered for ``batch``: remove it (a second ack does nothing)."""
        with self._lock:
            if (entry := self._entry(batch)) is not None:
                entry.path.unlink(missing_ok=True)
                fsync_dir(self.dir)
                self._forget(entry)
            elif (aside := self._aside.pop(_key(batch), None)) is not None:
                aside[0].unlink(missing_ok=True)
                fsync_dir(self.aside_dir)

    def set_aside(self, batch: Record) -> None:
        """Move ``batch`` out of the queue into ``aside/`` (kept on disk, retried apart)."""
        with self._lock:
            if (entry := self._entry(batch)) is None:
                return
            target = self.aside_dir / entry.path.name
            os.replace(entry.path, target)
            fsync_dir(self.aside_dir)
            fsync_dir(self.dir)
            self._forget(entry)
            self._aside[entry.key] = (target, entry.size)

    def aside(self) -> list[Record]:
        """The set-aside batches, oldest first."""
        with self._lock:
            found = []
            for key, (path, _) in sorted(self._aside.items(), key=lambda kv: kv[1][0].name):
                if (doc := self._read(path)) is not None:
                    found.append(doc["batch"])
                else:
                    self._aside.pop(key, None)
            return found

    def aside_count(self) -> int:
        return len(self._aside)

    def latest_counters(self) -> Any:
        """The newest batch's ``counters`` (never behind the data spooled, unlike a state file)."""
        with self._lock:
            for entry in reversed(list(self._entries.values())):
                if (doc := self._read(entry.path)) is not None and doc.get("counters") is not None:
                    return doc["counters"]
            return None

    def __len__(self) -> int:
        return len(self._entries) + len(self._aside)

    def bytes(self) -> int:
        return self._bytes + sum(size for _, size in self._aside.values())

    def merged_intervals(self) -> int:  # intervals and network records merged away by this process
        return self._merged

    def _load(self) -> None:
        found: list[tuple[int, Path, Record, bool]] = []
        absorbed: set[int] = set()
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(TMP_PREFIX):
                path.unlink(missing_ok=True)  # a put or merge that never reached its rename
            elif (match := _NAME.match(path.name)) and path.is_file() and (doc := self._read(path)) is not None:
                found.append((int(match.group(1)), path, doc, match.group(2) is not None))
                absorbed.update(doc["absorbed"])
        aside_indexes = []
        for path in sorted(self.aside_dir.iterdir()):
            if (match := _NAME.match(path.name)) and path.is_file() and (doc := self._read(path)) is not None:
                aside_indexes.append(int(match.group(1)))
                self._aside[_key(doc["batch"])] = (path, path.stat().st_size)
        self._next_index = max([f[0] for f in found] + list(absorbed) + aside_indexes, default=-1) + 1
        for index, path, doc, sent in sorted(found, key=lambda f: f[0]):
            key = _key(doc["batch"])
            if index in absorbed:
                log.info("spool: removing %s, merged into an older batch just before a crash", path.name)
                path.unlink()
                fsync_dir(self.dir)
            elif key in self._by_key:
                self._quarantine(path, f"a second file for batch {key}")
            else:
                self._add(_Entry(index, path, path.stat().st_size, key, sent))
        self._compact()

    def _read(self, path: Path) -> Record | None:
        """The file's envelope, or None: the file is gone, or unreadable and moved aside."""
        try:
            doc = json.loads(path.read_bytes())
            if not (isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("absorbed"), list)
                    and all(type(i) is int for i in doc["absorbed"]) and isinstance(doc.get("batch"), dict)
                    and isinstance(doc["batch"].get("intervals"), list)):
                raise ValueError(f"expected {{format: {FORMAT}, absorbed: [index...], batch: {{intervals: [...]...}}}}")
            _key(doc["batch"])
            return doc
        except FileNotFoundError:
            log.warning("spool: %s vanished", path)
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._quarantine(path, str(exc))
        for entry in [e for e in self._entries.values() if e.path == path]:
            self._forget(entry)
        return None

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.corrupt_dir / path.name
        if target.exists():
            target = self.corrupt_dir / f"{path.name}.{time.time_ns()}"
        log.warning("spool: %s is unreadable (%s); moved to %s and skipped", path, reason, target)
        os.replace(path, target)
        fsync_dir(self.corrupt_dir)
        fsync_dir(self.dir)

    def _write(self, path: Path, doc: Record) -> int:
        return write_atomic(path, json.dumps(doc, separators=(",", ":"), allow_nan=False).encode())

    def _entry(self, batch: Record) -> _Entry | None:
        return self._entries.get(self._by_key.get(_key(batch), -1))

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.index] = entry
        self._by_key[entry.key] = entry.index
        self._bytes += entry.size

    def _forget(self, entry: _Entry) -> None:
        if self._entries.pop(entry.index, None) is not None:
            del self._by_key[entry.key]
            self._bytes -= entry.size
        if self._pinned == entry.index:
            self._pinned = None

    def _compact(self) -> None:
        while self._bytes > self.max_bytes:
            if not self._merge_oldest_pair():
                if not self._stuck:
                    log.error("spool %s: %d bytes in %d batches, over its %d-byte budget, and nothing more merges "
                              "(sent, or hour-long); keeping all", self.dir, self._bytes, len(self._entries), self.max_bytes)
                self._stuck = True
                return
        self._stuck = False

    def _merge_oldest_pair(self) -> bool:
        entries = list(self._entries.values())
        for older, newer in pairwise(entries):
            tag = (older.index, older.version, newer.index, newer.version)
            if older.sent or newer.sent or self._pinned in (older.index, newer.index) or older.key[:2] != newer.key[:2] \
                    or tag in self._unmergeable or older.size + newer.size > MAX_MERGED_BATCH_BYTES:
                continue
            if self._merge(older, newer):
                return True
            if len(self._unmergeable) > 100_000:
                self._unmergeable.clear()
            self._unmergeable.add(tag)
        return False

    def _merge(self, older: _Entry, newer: _Entry) -> bool:
        a, b = self._read(older.path), self._read(newer.path)
        if a is None or b is None:  # moved aside (and forgotten): the spool shrank all the same
            return True
        merged, merged_away = merge_batches(a["batch"], b["batch"])
        if merged_away == 0:
            return False
        counters = b["counters"] if b.get("counters") is not None else a.get("counters")
        size = self._write(older.path, {"format": FORMAT, "absorbed": [newer.index], "batch": merged, "counters": counters})
        newer.path.unlink()
        fsync_dir(self.dir)
        self._forget(newer)
        self._bytes, older.size, older.version = self._bytes + size - older.size, size, older.version + 1
        self._merged += merged_away
        return True


def merge_batches(older: Record, newer: Record) -> tuple[Record, int]:
    """One batch with ``older``'s identity holding both; and how many records were merged away."""
    intervals, n_intervals = _merge_records(older["intervals"], newer["intervals"], _INTERVAL)
    network, n_network = _merge_records(older.get("network", []), newer.get("network", []), _NETWORK)
    jobs = {job["id"]: job for job in older.get("jobs", []) + newer.get("jobs", [])}  # the newer description wins
    merged = older | {"jobs": list(jobs.values()), "intervals": intervals, "network": network}
    merged["sent_at_s"] = max(older.get("sent_at_s", 0.0), newer.get("sent_at_s", 0.0))
    if n_intervals + n_network:
        merged["merged_intervals"] = sum(b.get("merged_intervals", 0) for b in (older, newer)) + n_intervals + n_network
    return merged, n_intervals + n_network


class _Kind(NamedTuple):
    key: tuple[str, ...]  # records equal in these fields may merge
    sums: tuple[str, ...]
    maxes: tuple[str, ...]  # None when both are None
    within_span: str | None  # a sum that cannot exceed the span unless the records overlap


_INTERVAL = _Kind(("gpu_uuid", "gpu_instance", "job", "energy_method", "split", "marked"),
                  ("gpu_seconds", "busy_gpu_seconds", "energy_j"), ("max_memory_used_bytes",), "gpu_seconds")
_NETWORK = _Kind(("job",), ("seconds", "apportioned_bytes", "link_down_port_seconds"),
                 ("ports", "peak_tx_gbps", "peak_rx_gbps", "peak_link_util_pct"), None)


def _merge_records(old: list[Record], new: list[Record], kind: _Kind) -> tuple[list[Record], int]:
    out, slots, merged = list(old), dict[Hashable, list[int]](), 0
    for i, record in enumerate(out):
        slots.setdefault(tuple(record.get(k) for k in kind.key), []).append(i)
    for record in new:
        candidates = slots.setdefault(tuple(record.get(k) for k in kind.key), [])
        for i in reversed(candidates):  # the latest record of that key first
            if (combined := _combine(out[i], record, kind)) is not None:
                out[i], merged = combined, merged + 1
                break
        else:
            candidates.append(len(out))
            out.append(record)
    return out, merged


def _combine(a: Record, b: Record, kind: _Kind) -> Record | None:
    """``a`` and ``b`` as one record; None when that would span more than MAX_INTERVAL_S."""
    start_s, end_s = min(a["start_s"], b["start_s"]), max(a["end_s"], b["end_s"])
    if end_s - start_s > MAX_INTERVAL_S:
        return None
    out = a | {"start_s": start_s, "end_s": end_s}
    for name in kind.sums:
        out[name] = a.get(name, 0.0) + b.get(name, 0.0)
    for name in kind.maxes:
        values = [v for v in (a.get(name), b.get(name)) if v is not None]
        out[name] = max(values) if values else None
    if kind.within_span and out[kind.within_span] > (end_s - start_s) * (1 + 1e-9) + 1e-9:
        return None  # overlapping in time: the collector would refuse it
    if "counters" in a or "counters" in b:
        ca, cb = a.get("counters", {}), b.get("counters", {})
        out["counters"] = {name: _known_sum(ca.get(name, 0.0), cb.get(name, 0.0)) for name in ca | cb}
    if "unknown_seconds" in a or "unknown_seconds" in b:  # network: seconds with a counter's increase unknown
        out["unknown_seconds"] = a.get("unknown_seconds", 0.0) + b.get("unknown_seconds", 0.0)
    return out


def _known_sum(a: float | None, b: float | None) -> float | None:
    """A network counter over two records; None (unknown over part of them) stays None."""
    return None if a is None or b is None else a + b
