"""Several replicas of a worker sharing one store: leases with fence numbers, and once-per-period jobs.

A lease (`lease` table: name, holder, fence, expires_at) gives one replica a piece of work at a time: the
outbox relay of a service, or the work queue of one EHR subscription. Its holder renews it well before it
expires; a holder that dies (SIGKILL, lost host) stops renewing, and another replica takes it once it has
expired. Each new holder gets a larger fence number, and what a holder writes on the lease's behalf is
checked against its fence in the same transaction, so a deposed holder (paused past its expiry) writes
nothing and learns that it must stop.

A periodic job (a check-in sweep, a schedule roll-forward) runs once per period across replicas: the first
replica to move the job's slot number forward in `kv` (a compare-and-set) runs it, the others skip it.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from shared.config import env_str
from shared.fhir.store import Store


def replica_name() -> str:
    """IOP_REPLICA (a stable name such as a systemd instance or pod name), else the host name."""
    return env_str("IOP_REPLICA", "") or socket.gethostname()


def holder_id(owner: object) -> str:
    """A holder name unique to one object of one process (two relays in one process are two holders):
    "<replica>:<pid>:<object>"."""
    return f"{replica_name()}:{os.getpid()}:{id(owner):x}"


def holder_pid(holder: str) -> int:
    """The process id in a holder name (what `iop status` and the tests show)."""
    return int(holder.rsplit(":", 2)[-2])


class Lease:
    """One holder's view of one lease: acquire, renew, release; `fence` is None while it is not held."""

    def __init__(self, store: Store, name: str, holder: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive time to live")
        self.store, self.name, self.holder, self.ttl_s = store, name, holder, ttl_s
        self.fence: int | None = None
        self._renewed = 0.0  # time.monotonic() of the last successful claim or renewal
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self.fence is not None

    @property
    def renew_every_s(self) -> float:
        """Renewing three times per lifetime leaves two renewals of slack before another replica may take it."""
        return self.ttl_s / 3

    def acquire(self) -> bool:
        """Hold the lease (take it if free or expired, else keep or renew our own); False when another has it.
        Within a sixth of its lifetime of the last renewal it is ours without asking the store."""
        with self._lock:
            if self.fence is not None:
                if time.monotonic() - self._renewed < self.ttl_s / 6:
                    return True
                if self.store.renew_lease(self.name, self.holder, self.fence, self.ttl_s):
                    self._renewed = time.monotonic()
                    return True
                self.fence = None
            started = time.monotonic()
            self.fence = self.store.claim_lease(self.name, self.holder, self.ttl_s)
            if self.fence is not None:
                self._renewed = started
            return self.fence is not None

    def renew(self) -> bool:
        """Extend a lease we hold; False (and no longer held) when it was taken over or was never ours."""
        with self._lock:
            if self.fence is None:
                return False
            started = time.monotonic()
            if self.store.renew_lease(self.name, self.holder, self.fence, self.ttl_s):
                self._renewed = started
            else:
                self.fence = None
            return self.fence is not None

    def confirm(self) -> bool:
        """Whether the store still names us holder with our fence (one read): checked before each piece of work,
        so a holder that was paused past its expiry and taken over stops before the next piece."""
        with self._lock:
            if self.fence is None:
                return False
            current = self.store.lease(self.name)
            if current is None or current[:2] != (self.holder, self.fence):
                self.fence = None
            return self.fence is not None

    def lost(self) -> None:
        """What a fenced write reported: another holder has the lease now."""
        with self._lock:
            self.fence = None

    def release(self) -> None:
        with self._lock:
            if self.fence is not None:
                self.store.release_lease(self.name, self.holder, self.fence)
                self.fence = None


def claim_period(store: Store, name: str, every_s: float, now: float | None = None) -> bool:
    """Whether this replica runs job `name` for the current period of `every_s` seconds: True for exactly one
    caller per period across every replica sharing the store."""
    slot = int((time.time() if now is None else now) // max(every_s, 0.001))
    key = f"job-slot:{name}"
    with store.transaction() as tx:
        current = tx.get_value(key)
        if current is not None and int(current) >= slot:
            return False
        return tx.compare_and_set(key, current, str(slot))
