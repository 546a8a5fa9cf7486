"""Reference transformer client for batch-processor's batch ledger.

A transformer claims one envelope at a time, keeps its claim alive with heartbeats while it
works (a background thread does that), and acks the items it completed or failed. Every step
is one call of the ``batch_ledger`` Redis function library, so a worker that dies at any
moment loses nothing: its envelope waits in its in-flight list until the daemon's recovery
job gives it to another worker.

    import redis
    from batch_ledger import Worker

    r = redis.Redis(host="localhost", port=6379)
    worker = Worker(r, processing_queue="processing_queue")   # a unique name by default
    while True:
        batch = worker.claim(timeout=5)          # waits without busy polling
        if batch is None:
            continue
        with worker.heartbeating():              # heartbeats while the block runs
            results = [transform(item) for item in batch.items]
        batch.ack(completed=sum(results), failed=len(results) - sum(results))

Acks add to the batch's counts, so they may come item by item and from several threads or
processes. Each carries an ack id (a new UUID per ack, the same on its retries) that the
ledger applies once, so an ack retried after a lost reply counts once.
"""

from .client import (
    AckResult,
    Batch,
    LedgerRefused,
    OverReported,
    StaleDelivery,
    UnknownBatch,
    Worker,
    WrongKeyType,
)

__all__ = [
    "AckResult",
    "Batch",
    "LedgerRefused",
    "OverReported",
    "StaleDelivery",
    "UnknownBatch",
    "Worker",
    "WrongKeyType",
]
