"""The agent's answer to each collector (or proxy) status, over real HTTP to a scripted server:
what a proxy or an overload can cause is retried with the batch kept at the head; what the
collector refuses for good (422, 409) is dropped and counted; 401/403 from the collector and
repeated 500s set the batch aside (kept on disk, retried on a long backoff) so the rest flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.clock import ManualClock
from agent.push import ASIDE_BACKOFF_S, SET_ASIDE_AFTER, MemoryQueue, Pusher
from agent.spool import Spool
from tests.replay_server import ReplayServer

ACK = (200, {"applied": True, "intervals": 0})
COLLECTOR_401 = (401, {"detail": "token 1234 is unknown, revoked or wrong"}, {"WWW-Authenticate": 'Bearer realm="gpuledger"'})
PROXY_403 = (403, "<html><body>403 Forbidden</body></html>", {"Content-Type": "text/html"})


def batch(seq: int) -> dict:
    return {"node": "n1", "boot_id": "b", "seq": seq, "intervals": []}


def seqs_posted(server: ReplayServer) -> list[int]:
    import json

    return [json.loads(r.body)["seq"] for r in server.requests if r.path == "/v1/ingest"]


@pytest.mark.parametrize("answer", [(404, "not found"), (405, "no"), (408, "slow"), (429, {"detail": "busy"}),
                                    (502, "bad gateway"), (503, {"detail": "database unavailable"}), (504, "timeout"),
                                    PROXY_403, (500, {"detail": "boom"})])
def test_transient_answers_keep_the_batch_at_the_head_and_retry(answer):
    clock = ManualClock(1000.0)
    with ReplayServer({("POST", "/v1/ingest"): [answer, ACK]}) as server:
        pusher = Pusher(server.url, clock=clock.now)
        pusher.submit(batch(0))
        pusher.submit(batch(1))
        assert pusher.flush() is False
        assert len(pusher.queue) == 2 and pusher.failed_attempts == 1 and pusher.rejected == pusher.conflicts == 0
        assert pusher.flush() is False  # backing off: nothing posted
        clock.sleep(61.0)
        assert pusher.flush() is True
        assert seqs_posted(server) == [0, 0, 1]


@pytest.mark.parametrize(("answer", "rejected", "conflicts"), [
    ((422, {"detail": "invalid request: seq = -1"}), 1, 0),
    ((409, {"detail": "batch refused: ...", "outcome": "conflict"}), 0, 1),
    ((400, {"detail": "bad"}), 1, 0),
])
def test_what_the_collector_refuses_for_good_is_dropped_and_counted(answer, rejected, conflicts):
    with ReplayServer({("POST", "/v1/ingest"): [answer, ACK]}) as server:
        pusher = Pusher(server.url, clock=ManualClock(0.0).now)
        pusher.submit(batch(0))
        pusher.submit(batch(1))
        assert pusher.flush() is True
        assert (pusher.rejected, pusher.conflicts, len(pusher.queue)) == (rejected, conflicts, 0)
        assert seqs_posted(server) == [0, 1]


def test_a_batch_that_breaks_the_collector_is_set_aside_on_disk_and_the_rest_flow(tmp_path: Path):
    clock = ManualClock(0.0)
    broken = {"n": 0}

    def collector(request):  # seq 0 breaks the collector until it is fixed
        import json

        if json.loads(request.body)["seq"] == 0 and not broken.get("fixed"):
            broken["n"] += 1
            return (500, {"detail": "Internal Server Error"})
        return ACK

    spool = Spool(tmp_path / "spool")
    with ReplayServer({("POST", "/v1/ingest"): collector}) as server:
        pusher = Pusher(server.url, clock=clock.now, store=spool)
        for seq in range(3):
            pusher.submit(batch(seq))
        for _ in range(SET_ASIDE_AFTER):
            pusher.flush()
            clock.sleep(61.0)
        assert broken["n"] == SET_ASIDE_AFTER
        assert [b["seq"] for b in spool.aside()] == [0] and len(spool) == 1 and pusher.set_aside_total == 1
        assert seqs_posted(server)[-2:] == [1, 2]  # the batches behind it went through
        assert sorted(p.name for p in (tmp_path / "spool" / "aside").iterdir()) == ["000000000000-b-0.sent.json"]
        # Kept across a restart; retried on the long backoff only.
        spool = Spool(tmp_path / "spool")
        pusher = Pusher(server.url, clock=clock.now, store=spool)
        assert [b["seq"] for b in spool.aside()] == [0]
        posted = len(seqs_posted(server))
        pusher.flush()
        assert len(seqs_posted(server)) == posted  # not yet
        broken["fixed"] = True
        clock.sleep(ASIDE_BACKOFF_S + 1)
        assert pusher.flush() is True
        assert len(spool) == 0 and not list((tmp_path / "spool" / "aside").iterdir())


def test_collector_401_sets_batches_aside_and_a_fixed_token_delivers_them():
    clock = ManualClock(0.0)
    with ReplayServer({("POST", "/v1/ingest"): [COLLECTOR_401, COLLECTOR_401, ACK]}) as server:
        queue = MemoryQueue()
        pusher = Pusher(server.url, clock=clock.now, store=queue)
        pusher.submit(batch(0))
        pusher.submit(batch(1))
        assert pusher.flush() is False
        assert [b["seq"] for b in queue.aside()] == [0, 1] and pusher.rejected == 0  # kept, not dropped
        clock.sleep(ASIDE_BACKOFF_S + 1)
        assert pusher.flush() is True and len(queue) == 0
        assert seqs_posted(server) == [0, 1, 0, 1]
