"""The reference client against a real redis-server and the real function library."""

import json
import threading
import time
import uuid

import pytest

import redis

from batch_ledger import BehindReport, OverReported, StaleDelivery, UnknownBatch, Worker

PREFIX = "batch:state:"
QUEUE = "processing_queue"


def push_envelope(r, items, ledger=True):
    """LPUSH an envelope as the daemon writes it, with its ledger entry."""
    event_id = str(uuid.uuid4())
    envelope = json.dumps({
        "event_id": event_id,
        "event_type": "batch_processing",
        "payload": {"batch": items, "size": len(items)},
        "timestamp": "2026-11-30T00:00:00.000000+00:00",
        "service": "batch_processor",
    }, separators=(",", ":"))
    r.lpush(QUEUE, envelope)
    if ledger:
        r.hset(PREFIX + event_id, mapping={
            "status": "queued", "total": len(items), "completed": 0, "failed": 0,
            "deliveries": 0, "created_at": 1, "source": "raw_data_queue", "ttl": 86400})
    return event_id


def test_claim_then_ack_completes_and_empties_the_in_flight_list(server):
    event_id = push_envelope(server, [{"seq": 1}, {"seq": 2}])
    w = Worker(server, name="w1")
    batch = w.claim(timeout=1)
    assert batch.event_id == event_id and batch.delivery == 1
    assert batch.items == [{"seq": 1}, {"seq": 2}]
    entry = server.hgetall(PREFIX + event_id)
    assert entry[b"status"] == b"processing" and entry[b"worker"] == b"w1"
    assert server.llen(PREFIX + "inflight:w1") == 1
    result = w.ack(batch, completed=2)
    assert (result.status, result.completed, result.total) == ("completed", 2, 2)
    assert server.llen(PREFIX + "inflight:w1") == 0
    assert server.hget(PREFIX + event_id, "finished_at") is not None


def test_an_empty_queue_waits_without_claiming(server):
    w = Worker(server, name="w1")
    started = time.monotonic()
    assert w.claim(timeout=0.3) is None
    assert time.monotonic() - started >= 0.3
    # Work pushed while a worker waits is claimed as soon as it arrives.
    threading.Timer(0.2, push_envelope, args=(server, [1])).start()
    batch = w.claim(timeout=5)
    assert batch is not None and batch.items == [1]
    calls = server.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0)
    assert calls < 10, f"claim busy-polled: {calls} FCALLs"


def test_failures_mark_the_batch_completed_with_failures(server):
    push_envelope(server, [1, 2, 3])
    w = Worker(server, name="w1")
    batch = w.claim(timeout=1)
    assert w.ack(batch, completed=1).status == "processing"
    assert w.ack(batch, completed=1, failed=1).status == "completed_with_failures"


def test_over_reporting_and_stale_deliveries_are_refused(server):
    event_id = push_envelope(server, [1, 2])
    w = Worker(server, name="w1")
    batch = w.claim(timeout=1)
    with pytest.raises(OverReported):
        w.ack(batch, completed=3)
    stale = type(batch)(envelope=batch.envelope, event_id=event_id, delivery=batch.delivery + 1)
    with pytest.raises(StaleDelivery):
        w.ack(stale, completed=1)
    with pytest.raises(UnknownBatch):
        w.ack(type(batch)(envelope=b"", event_id="nope", delivery=1), completed=1)
    # Nothing changed: the right delivery still completes.
    assert w.ack(batch, completed=2).status == "completed"
    # The final report again (its reply lost) gets the same answer; any other is stale.
    assert w.ack(batch).status == "completed"
    with pytest.raises(StaleDelivery):
        w.ack(batch, failed=1)


def test_a_dead_workers_batch_is_redelivered_and_its_late_ack_refused(server):
    event_id = push_envelope(server, [1])
    dead = Worker(server, name="dead")
    first = dead.claim(timeout=1)
    time.sleep(0.05)
    requeued, dead_lettered, workers = server.execute_command(
        "FCALL", "batch_recover", 2, QUEUE, "dlq", PREFIX, 10, 5, "2026-11-30T00:00:00+00:00", 100)
    assert (requeued, dead_lettered, workers) == (1, 0, 1)
    assert dead.heartbeat() == 0
    other = Worker(server, name="other")
    second = other.claim(timeout=1)
    assert second.event_id == event_id and second.delivery == 2
    with pytest.raises(StaleDelivery):
        dead.ack(first, completed=1)
    assert other.ack(second, completed=1).status == "completed"
    assert server.hget(PREFIX + event_id, "deliveries") == b"2"


def test_concurrent_acks_add_up_exactly(server):
    items = list(range(400))
    event_id = push_envelope(server, items)
    w = Worker(server, name="w1")
    batch = w.claim(timeout=1)
    errors = []

    def report():
        try:
            for _ in range(100):
                w.ack(batch, completed=1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entry = server.hgetall(PREFIX + event_id)
    assert entry[b"completed"] == b"400" and entry[b"status"] == b"completed"


def test_the_heartbeat_thread_keeps_a_long_claim_alive(server):
    push_envelope(server, [1])
    w = Worker(server, name="slow", claim_timeout=0.3)
    batch = w.claim(timeout=1)
    with w.heartbeating() as lost:
        for _ in range(6):
            time.sleep(0.1)
            server.execute_command("FCALL", "batch_recover", 2, QUEUE, "dlq", PREFIX, 300, 5,
                                   "2026-11-30T00:00:00+00:00", 100)
    assert not lost.is_set()
    assert w.ack(batch, completed=1).status == "completed"


def test_a_lost_library_is_loaded_again(server, library):
    push_envelope(server, [1])
    server.execute_command("FUNCTION", "FLUSH")
    w = Worker(server, name="w1", library=library)
    assert w.claim(timeout=1) is not None


def test_a_claim_whose_reply_was_lost_is_handed_out_again(server):
    event_id = push_envelope(server, [1, 2])
    w = Worker(server)
    # The claim runs, its reply is lost (the call made as the client makes it).
    delivery = server.execute_command(
        "FCALL", "batch_claim", 1, QUEUE, PREFIX, w.name, w.instance)[2]
    push_envelope(server, [3])
    again = w.claim(timeout=1)
    assert (again.event_id, again.delivery) == (event_id, delivery)
    assert again.items == [1, 2]


def test_a_restart_under_a_stable_name_resumes_only_when_asked(server):
    event_id = push_envelope(server, [1, 2])
    batch = Worker(server, name="w1").claim(timeout=1)
    # A second process under the same name does not take it; one that asks to resume does.
    assert Worker(server, name="w1").claim(timeout=0.2) is None
    again = Worker(server, name="w1", resume=True).claim(timeout=1)
    assert (again.event_id, again.delivery) == (event_id, batch.delivery)


def test_workers_with_one_name_never_share_a_batch(server):
    # review/same_name.py: two containers from one service, one hostname, both PID 1.
    event_id = push_envelope(server, [1, 2, 3])
    w1, w2 = Worker(server, name="web-1"), Worker(server, name="web-1")
    b1 = w1.claim(timeout=1)
    assert b1.event_id == event_id
    assert w2.claim(timeout=0.3) is None
    assert w1.ack(b1, completed=3).status == "completed"
    # Default names are unique per Worker object, whatever the host and PID.
    assert Worker(server).name != Worker(server).name


class DropsFirstAckReply:
    """A client whose first batch_ack runs on the server but whose reply is lost."""

    def __init__(self, inner):
        self.inner, self.dropped = inner, False

    def execute_command(self, *args):
        reply = self.inner.execute_command(*args)
        if args[:2] == ("FCALL", "batch_ack") and not self.dropped:
            self.dropped = True
            raise redis.ConnectionError("reply lost")
        return reply

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_ack_retried_after_a_lost_reply_counts_once(server):
    event_id = push_envelope(server, [1, 2, 3])
    w = Worker(DropsFirstAckReply(server), name="w1")
    batch = w.claim(timeout=1)
    assert w.ack(batch, completed=1).completed == 1   # sent twice, counted once
    assert w.ack(batch, completed=2).status == "completed"
    entry = server.hgetall(PREFIX + event_id)
    assert (entry[b"completed"], entry[b"status"]) == (b"3", b"completed")
    assert server.hget(PREFIX + "totals", "items_completed") == b"3"


def test_acks_carry_totals_that_never_go_down(server):
    event_id = push_envelope(server, [1, 2, 3])
    batch = Worker(server, name="w1").claim(timeout=1)

    def ack(done, failed=0):
        return server.execute_command(
            "FCALL", "batch_ack", 0, PREFIX, event_id, batch.delivery, done, failed)

    assert ack(2)[0] == b"processing"
    assert ack(2)[1:] == [2, 0, 3]            # the same report again: no change
    with pytest.raises(redis.ResponseError, match="BATCH_BEHIND"):
        ack(1)
    assert ack(2, 1)[0] == b"completed_with_failures"
    assert ack(2, 1)[0] == b"completed_with_failures"   # the final report again
    with pytest.raises(redis.ResponseError, match="BATCH_STALE"):
        ack(3)
    assert server.hget(PREFIX + "totals", "items_completed") == b"2"
    w = Worker(server, name="w2")
    push_envelope(server, [1, 2])
    other = w.claim(timeout=1)
    w.ack(other, completed=1)
    with pytest.raises(BehindReport):
        w._fcall("batch_ack", 0, PREFIX, other.event_id, other.delivery, 0, 0)
