"""The reference client against a real redis-server and the real function library."""

import json
import multiprocessing
import threading
import time
import uuid

import pytest

import redis

from batch_ledger import Batch, LedgerRefused, OverReported, StaleDelivery, UnknownBatch, Worker

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
    assert batch.ack(completed=2, ack_id="final").status == "completed"
    # The final ack again (its reply lost) gets the same answer; any other is stale.
    assert batch.ack(completed=2, ack_id="final").status == "completed"
    with pytest.raises(StaleDelivery):
        batch.ack(failed=1)


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
                batch.ack(completed=1)
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
    assert (batch.completed, batch.failed) == (400, 0)


def ack_from_another_process(port, event_id, delivery, client_no, acks):
    """One reporting process: its own connection and Worker, ``acks`` acks of one item,
    every third one failed; each ack sent twice under one id (a retry), counted once."""
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    w = Worker(r, name=f"reporter-{client_no}")
    batch = Batch(envelope=b"", event_id=event_id, delivery=delivery, _worker=w)
    for n in range(acks):
        failed = 1 if n % 3 == 0 else 0
        ack_id = f"client-{client_no}-ack-{n}"
        first = batch.ack(completed=1 - failed, failed=failed, ack_id=ack_id)
        again = batch.ack(completed=1 - failed, failed=failed, ack_id=ack_id)
        if first != again:
            raise SystemExit(f"a retry got another answer: {first} then {again}")


def test_acks_from_several_processes_add_up_exactly(server):
    event_id = push_envelope(server, list(range(120)))
    batch = Worker(server, name="w1").claim(timeout=1)
    port = server.connection_pool.connection_kwargs["port"]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=ack_from_another_process,
                         args=(port, event_id, batch.delivery, n, 30)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    entry = server.hgetall(PREFIX + event_id)
    # 30 acks per process, 10 of them failed: 80 completed and 40 failed of 120.
    assert (entry[b"completed"], entry[b"failed"]) == (b"80", b"40")
    assert entry[b"status"] == b"completed_with_failures"
    assert server.hget(PREFIX + "totals", "items_completed") == b"80"
    assert server.hget(PREFIX + "totals", "items_failed") == b"40"
    assert server.llen(PREFIX + "inflight:w1") == 0


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
    assert batch.ack(completed=1).completed == 1   # sent twice, counted once
    assert batch.ack(completed=2).status == "completed"
    entry = server.hgetall(PREFIX + event_id)
    assert (entry[b"completed"], entry[b"status"]) == (b"3", b"completed")
    assert server.hget(PREFIX + "totals", "items_completed") == b"3"


def test_raw_acks_add_and_an_ack_id_is_applied_once(server):
    event_id = push_envelope(server, [1, 2, 3])
    batch = Worker(server, name="w1").claim(timeout=1)
    entry = PREFIX + event_id

    def ack(done, failed, ack_id, keys=(entry, entry + ":acks")):
        return server.execute_command(
            "FCALL", "batch_ack", len(keys), *keys, PREFIX, event_id, batch.delivery, done,
            failed, ack_id)

    assert ack(1, 0, "a") == [b"processing", 1, 0, 3]
    assert ack(1, 0, "a") == [b"processing", 1, 0, 3]      # a retry: no change
    assert ack(1, 0, "b") == [b"processing", 2, 0, 3]      # another ack adds
    with pytest.raises(redis.ResponseError, match="BATCH_ARGS"):
        ack(0, 1, "a")                                     # an id reused for another ack
    with pytest.raises(redis.ResponseError, match="BATCH_ARGS"):
        ack(0, 1, "")                                      # no id
    with pytest.raises(redis.ResponseError, match="BATCH_ARGS"):
        ack(0, 1, "c", keys=())                            # keys not declared
    with pytest.raises(redis.ResponseError, match="BATCH_OVER"):
        ack(1, 1, "c")
    assert ack(0, 1, "c") == [b"completed_with_failures", 2, 1, 3]
    assert ack(0, 1, "c") == [b"completed_with_failures", 2, 1, 3]   # the final ack again
    assert ack(1, 0, "a") == [b"processing", 1, 0, 3]      # an old ack again: its own answer
    with pytest.raises(redis.ResponseError, match="BATCH_STALE"):
        ack(0, 0, "d")
    assert server.hget(PREFIX + "totals", "items_completed") == b"2"
    assert server.hget(PREFIX + "totals", "items_failed") == b"1"
    assert 0 < server.ttl(entry + ":acks") <= 86400
