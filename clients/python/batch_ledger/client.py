"""The protocol: claim (after a blocking wait that moves nothing), heartbeat, ack."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional

import redis


class LedgerRefused(Exception):
    """A ledger function refused the call; nothing changed in Redis."""

    code = "BATCH_ARGS"


class UnknownBatch(LedgerRefused):
    """No ledger entry for the batch (unknown id, or the entry expired)."""

    code = "BATCH_UNKNOWN"


class StaleDelivery(LedgerRefused):
    """The batch is no longer processed under this delivery: the worker was presumed dead
    and the batch redelivered (or it finished). Drop the work; another worker has it."""

    code = "BATCH_STALE"


class OverReported(LedgerRefused):
    """Completed plus failed would pass the batch's total."""

    code = "BATCH_OVER"


class WrongKeyType(LedgerRefused):
    """A key of the protocol holds another Redis type (a key clash, an operator's mistake)."""

    code = "BATCH_WRONGTYPE"


_REFUSALS = {
    cls.code: cls
    for cls in (UnknownBatch, StaleDelivery, OverReported, WrongKeyType, LedgerRefused)
}


@dataclass
class Batch:
    """A claimed envelope. ``completed`` and ``failed`` are the batch's counts under this
    delivery as the latest answer to an ack showed them (all reporters' acks added up)."""

    envelope: bytes
    event_id: str
    delivery: int
    completed: int = 0
    failed: int = 0
    _worker: Optional["Worker"] = field(default=None, repr=False, compare=False)
    _parsed: Optional[dict] = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def ack(self, completed: int = 0, failed: int = 0,
            ack_id: Optional[str] = None) -> "AckResult":
        """Add ``completed`` and ``failed`` items done; see :meth:`Worker.ack`."""
        if self._worker is None:
            raise RuntimeError("this Batch was not claimed through a Worker; use Worker.ack")
        return self._worker.ack(self, completed=completed, failed=failed, ack_id=ack_id)

    @property
    def payload(self) -> dict:
        if self._parsed is None:
            self._parsed = json.loads(self.envelope)
        return self._parsed

    @property
    def items(self) -> List[Any]:
        """The batch's messages, oldest first."""
        return self.payload["payload"]["batch"]


@dataclass
class AckResult:
    status: str
    completed: int
    failed: int
    total: int


class Worker:
    """One transformer worker.

    ``name`` names the worker's in-flight list and heartbeat, so it must be unique among live
    processes. The default, ``<hostname>-<pid>-<random>``, is unique per Worker object (two
    containers with one hostname, both PID 1, still differ). A claim whose reply was lost
    stays in the in-flight list; ``claim`` hands such envelopes out again first, but only
    those this very object claimed (the claim records a random instance token). With
    ``resume=True`` it also takes over the claims an earlier process left under the same
    ``name``: set it only when the name is stable and guaranteed unique (a StatefulSet
    ordinal), or two processes would work on one batch.
    ``claim_timeout`` is the daemon's REDIS_BATCH_CLAIM_TIMEOUT, and heartbeats go every third
    of it. ``library`` (the Lua source of the function library), when given, is loaded if
    Redis lost it; otherwise the client waits up to ``library_wait`` seconds for the daemon to
    load it again. ``ack_retries`` is how often an ack is sent again after a connection error
    (safe: the retry carries the same ack id, which the ledger applies once).
    """

    def __init__(
        self,
        client: redis.Redis,
        processing_queue: str = "processing_queue",
        prefix: str = "batch:state:",
        name: Optional[str] = None,
        claim_timeout: float = 60.0,
        library: Optional[str] = None,
        library_wait: float = 10.0,
        resume: bool = False,
        ack_retries: int = 3,
    ) -> None:
        self.redis = client
        self.queue = processing_queue
        self.prefix = prefix
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.instance = secrets.token_hex(8)
        self.resume = resume
        self.heartbeat_every = claim_timeout / 3.0
        self.library = library
        self.library_wait = library_wait
        self.ack_retries = ack_retries
        # Ids this object handed out and has not finished: anything else in the worker's
        # in-flight list under this object's instance token is a claim whose reply was lost,
        # which claim() hands out again first.
        self._held: set = set()

    # -- the protocol ---------------------------------------------------------------------

    def claim(self, timeout: float = 5.0) -> Optional[Batch]:
        """The oldest envelope, claimed; ``None`` if none came within ``timeout`` seconds.

        Waits with ``BLMOVE q q RIGHT RIGHT`` (blocks on the server, moves nothing), then
        claims with one atomic function call. Several workers may wake for one envelope;
        the others simply wait again.
        """
        deadline = time.monotonic() + timeout
        resumed = self._resume()
        if resumed is not None:
            return resumed
        while True:
            reply = self._fcall(
                "batch_claim", 1, self.queue, self.prefix, self.name, self.instance)
            if reply is not None:
                envelope, event_id, delivery = reply
                if isinstance(event_id, bytes):
                    event_id = event_id.decode()
                self._held.add(event_id)
                return Batch(envelope=envelope, event_id=event_id, delivery=int(delivery),
                             _worker=self)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # BLMOVE's timeout is in seconds (fractions allowed); the client's socket timeout
            # must be longer than it.
            self.redis.execute_command(
                "BLMOVE", self.queue, self.queue, "RIGHT", "RIGHT", max(min(left, 5.0), 0.01)
            )

    def heartbeat(self) -> int:
        """Keep this worker's claims alive. Returns how many envelopes it still holds: 0
        while it is working on one means it was presumed dead and the batch was redelivered."""
        return int(self._fcall("batch_heartbeat", 0, self.prefix, self.name))

    def ack(self, batch: Batch, completed: int = 0, failed: int = 0,
            ack_id: Optional[str] = None) -> AckResult:
        """Add ``completed`` and ``failed`` more items done to the batch's counts. Acks add
        up, so they may come item by item, from several threads or processes.

        Each ack carries an id (a new UUID unless ``ack_id`` is given) that the ledger
        applies once per batch: connection errors are retried ``ack_retries`` times under
        the same id, so an ack whose reply was lost counts once. To retry further yourself,
        pass your own ``ack_id`` and call again with the same one. When completed + failed
        reaches the total the batch is finished and leaves the in-flight list. Raises a
        :class:`LedgerRefused` subclass when refused (stale delivery, over-reporting,
        unknown batch); nothing was added then."""
        ack_id = ack_id or str(uuid.uuid4())
        try:
            status, done, bad, total = self._send_ack(batch, completed, failed, ack_id)
        except StaleDelivery:
            self._held.discard(batch.event_id)
            raise
        if isinstance(status, bytes):
            status = status.decode()
        with batch._lock:
            # Answers to concurrent acks may arrive in any order; counts only grow.
            batch.completed = max(batch.completed, int(done))
            batch.failed = max(batch.failed, int(bad))
        if status != "processing":
            self._held.discard(batch.event_id)
        return AckResult(status=status, completed=int(done), failed=int(bad), total=int(total))

    @contextlib.contextmanager
    def heartbeating(self) -> Iterator["threading.Event"]:
        """Heartbeat from a background thread while the block runs. Yields an event that is
        set if a heartbeat finds the worker holds nothing any more (its batch was
        redelivered)."""
        stop = threading.Event()
        lost = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_every):
                try:
                    if self.heartbeat() == 0:
                        lost.set()
                except redis.RedisError:
                    pass  # the next beat retries; the claim timeout allows for a few misses

        thread = threading.Thread(target=beat, name=f"heartbeat-{self.name}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join()

    # -- plumbing -------------------------------------------------------------------------

    def _send_ack(self, batch: Batch, completed: int, failed: int, ack_id: str) -> Any:
        entry = self.prefix + batch.event_id
        for attempt in range(self.ack_retries + 1):
            try:
                return self._fcall(
                    "batch_ack", 2, entry, entry + ":acks", self.prefix, batch.event_id,
                    batch.delivery, completed, failed, ack_id)
            except (redis.ConnectionError, redis.TimeoutError):
                if attempt == self.ack_retries:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _resume(self) -> Optional[Batch]:
        """The oldest envelope in this worker's in-flight list that this object did not hand
        out, that the ledger still shows claimed by this worker, and that this object claimed
        (its instance token) or, with ``resume``, an earlier process under this name. The
        entry's counts are the items acked so far under that delivery."""
        inflight = f"{self.prefix}inflight:{self.name}"
        for envelope in reversed(self.redis.lrange(inflight, 0, -1)):
            event_id = envelope[13:49].decode("ascii", "replace")
            if event_id in self._held:
                continue
            status, delivery, worker, instance, done, bad = self.redis.hmget(
                self.prefix + event_id, "status", "delivery", "worker", "instance",
                "completed", "failed")
            mine = instance == self.instance.encode() or self.resume
            if status == b"processing" and worker == self.name.encode() and mine and delivery:
                self._held.add(event_id)
                return Batch(envelope=envelope, event_id=event_id, delivery=int(delivery),
                             completed=int(done or 0), failed=int(bad or 0), _worker=self)
        return None

    def _fcall(self, function: str, numkeys: int, *args: Any) -> Any:
        deadline = time.monotonic() + self.library_wait
        while True:
            try:
                return self.redis.execute_command("FCALL", function, numkeys, *args)
            except redis.ResponseError as e:
                text = str(e)
                if text.startswith("Function not found"):
                    if self.library is not None:
                        self.redis.execute_command("FUNCTION", "LOAD", "REPLACE", self.library)
                        continue
                    if time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                code = text.split(" ", 1)[0]
                if code in _REFUSALS:
                    raise _REFUSALS[code](text) from None
                raise
