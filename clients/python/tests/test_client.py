"""The reference client against a real redis-server and the real function library."""

import json
import threading
import time
import uuid

import pytest

from batch_ledger import OverReported, StaleDelivery, UnknownBatch, Worker

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
    with pytest.raises(StaleDelivery):
        w.ack(batch, completed=0)


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
    first = Worker(server, name="w1")
    batch = first.claim(timeout=1)
    # The same worker restarted (or its claim's reply lost): it gets its claim back first,
    # under the same delivery, before anything new.
    push_envelope(server, [3])
    again = Worker(server, name="w1").claim(timeout=1)
    assert (again.event_id, again.delivery) == (event_id, batch.delivery)
    assert again.items == [1, 2]
