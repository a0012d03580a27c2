"""Group commit: the single-record ingests that arrive together in one process share one transaction.

A gateway reports each call as it ends, so most requests carry one record, and on PostgreSQL the cost
of one is mostly its commit (a WAL flush) and its round trips, not its INSERT. gunicorn's threads
(config/gunicorn.py) have several such requests in flight in a process at once; here they queue, and
one thread at a time, the leader, writes everything queued in one transaction on its own connection
and commits once. Requests that arrive while a group is being written wait and form the next group:
under load the groups grow by themselves, and a lone request is written at once (`window` can hold the
leader a little longer for company, at the cost of that much latency).

Each request is answered only after the group holding its record has committed (acknowledged means
durable): a thread waits on its own entry, which the leader fills with that record's outcome after
the commit. When the group's write fails, every entry gets `failed`, and each request then writes
its record alone, so one bad row never fails its neighbours.

Generic on purpose: the write (what a group is, in SQL) is the caller's, llmlog.ingest.service.
"""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


@dataclass
class _Entry(Generic[Item, Outcome]):
    item: Item
    outcome: Outcome | None = None
    failed: bool = False
    lead: bool = False  # set when the thread waiting on this entry is to write the next group
    ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class GroupStats:
    """Groups written and records in them since start (or `reset`): for tests and the benchmark."""

    groups: int = 0
    records: int = 0


class GroupFailed(Exception):
    """The group's write failed: the caller writes its record alone."""


class GroupCommitter(Generic[Item, Outcome]):
    """Leader/follower queue around `write(items) -> outcomes` (one transaction, one outcome per item,
    in order). `submit` returns the item's outcome once the group holding it has been written."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Sequence[Outcome]],
        *,
        max_size: int = 64,
        window: float = 0.0,
    ) -> None:
        self._write = write
        self._max_size = max_size
        self.window = window
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)  # the leader's wait for a full group
        self._queue: list[_Entry[Item, Outcome]] = []
        self._writing = False  # a leader exists: new entries queue behind it
        self.stats = GroupStats()

    def submit(self, item: Item) -> Outcome:
        """The outcome of writing `item` in a group; raises GroupFailed when the group's write failed."""
        entry: _Entry[Item, Outcome] = _Entry(item)
        with self._lock:
            self._queue.append(entry)
            # While nobody writes the queue is empty, so a new leader's entry is always the first.
            entry.lead = not self._writing
            self._writing = True
            if len(self._queue) >= self._max_size:
                self._filled.notify()
        if not entry.lead:
            entry.ready.wait()
        if entry.lead:  # the first arrival, or promoted by the leader before us
            self._lead()
        if entry.failed:
            raise GroupFailed
        return entry.outcome  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            if self.window and len(self._queue) < self._max_size:
                deadline = time.monotonic() + self.window
                self._filled.wait_for(
                    lambda: len(self._queue) >= self._max_size or time.monotonic() >= deadline,
                    timeout=self.window,
                )
            group, self._queue = self._queue[: self._max_size], self._queue[self._max_size :]
        interrupted: BaseException | None = None
        try:
            outcomes = self._write([entry.item for entry in group])
        except BaseException as exc:
            # Nothing of the group is committed (one transaction): each request retries alone. Even an
            # interrupt wakes the group first: a waiter left behind would wait for ever.
            for entry in group:
                entry.failed = True
            interrupted = None if isinstance(exc, Exception) else exc
        else:
            for entry, outcome in zip(group, outcomes, strict=True):
                entry.outcome = outcome
        with self._lock:
            self.stats.groups += 1
            self.stats.records += len(group)
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._writing = False
            else:
                successor.lead = True  # _writing stays set: later arrivals queue behind the successor
        for entry in group:
            if not entry.lead:
                entry.ready.set()
        if successor is not None:
            successor.ready.set()
        if interrupted is not None:
            raise interrupted

    def reset_stats(self) -> GroupStats:
        with self._lock:
            stats, self.stats = self.stats, GroupStats()
        return stats
