#!/usr/bin/env python3
"""A small transformer speaking the batch-ledger protocol, for demos and the crash tests.

    python3 transformer.py --port 6379 --queue processing_queue --name t1 --work-seconds 0.1

It claims envelopes one at a time, heartbeats while it "works" on each (sleeps), then acks
every item completed. Each claim and ack is printed as one JSON line on stdout.
"""

import argparse
import json
import sys
import time
import uuid

import redis

from batch_ledger import StaleDelivery, Worker


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--queue", default="processing_queue")
    p.add_argument("--prefix", default="batch:state:")
    p.add_argument("--name", default=None)
    p.add_argument("--claim-timeout", type=float, default=60.0)
    p.add_argument("--work-seconds", type=float, default=0.0)
    p.add_argument("--max-batches", type=int, default=0, help="stop after this many (0: never)")
    p.add_argument("--fail-every", type=int, default=0, help="report every Nth item failed")
    p.add_argument("--idle-exit", type=float, default=0.0, help="exit after this long without work")
    a = p.parse_args()
    r = redis.Redis(host=a.host, port=a.port, socket_timeout=30)
    worker = Worker(r, processing_queue=a.queue, prefix=a.prefix, name=a.name,
                    claim_timeout=a.claim_timeout)
    done = 0
    idle_since = time.monotonic()
    while a.max_batches == 0 or done < a.max_batches:
        try:
            batch = worker.claim(timeout=1.0)
        except redis.ConnectionError:
            time.sleep(0.2)  # Redis restarting; a claim whose reply was lost is resumed
            continue
        if batch is None:
            if a.idle_exit and time.monotonic() - idle_since > a.idle_exit:
                break
            continue
        print(json.dumps({"event": "claimed", "id": batch.event_id, "delivery": batch.delivery}),
              flush=True)
        with worker.heartbeating():
            time.sleep(a.work_seconds)
        total = len(batch.items)
        failed = total // a.fail_every if a.fail_every else 0
        # One id for this logical ack, reused by every retry below: it counts once.
        ack_id = str(uuid.uuid4())
        while True:
            try:
                result = batch.ack(completed=total - failed, failed=failed, ack_id=ack_id)
                print(json.dumps({"event": "acked", "id": batch.event_id,
                                  "status": result.status}), flush=True)
            except StaleDelivery as e:
                # Presumed dead and redelivered meanwhile; another worker has the batch.
                print(json.dumps({"event": "stale", "id": batch.event_id, "error": str(e)}),
                      flush=True)
            except redis.ConnectionError:
                # Maybe applied, maybe not: the same ack id again is applied at most once.
                time.sleep(0.2)
                continue
            break
        done += 1
        idle_since = time.monotonic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
