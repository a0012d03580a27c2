"""Read replicas: which database a read of usage goes to, and how far behind each replica is.

`DATABASE_REPLICA_URLS` (settings) adds the aliases `replica1`, `replica2`… and names them in
`LLMLOG_REPLICA_ALIASES`. The selectors (llmlog.selectors) are the only code that reads from them: each
public read is wrapped in `replica_read`, which pins one alias for the whole read (`read_alias()` inside
it answers that alias), so a stats answer never mixes the rollup state of one server with the rows of
another. Every other read (ingest's transno look-ups, posting, holds, edits, accounts, budgets, the
admin, the metrics) keeps Django's default alias, the primary: it must see its own writes.

Why explicit aliases and not a database router (DATABASE_ROUTERS, Django's other documented way): a
router's `db_for_read` is asked for every ORM read of a model, so ingest's duplicate look-up, the edit
that reads the record it just changed and the budget seeding would all read a replica unless each one
opted out; a forgotten opt-out is a lost read-your-write, found in production. Here a forgotten opt-in
only costs the primary a read. Raw SQL (`connections[alias]`) is no router's business either.

A replica serves a read when it answered its last check and its lag is at most
`LLMLOG_REPLICA_MAX_LAG_SECONDS`; otherwise the read goes to the primary. Each process checks each
replica at most once per CHECK_SECONDS (two small queries, one on each server), so the check costs
nothing per request. A replica that fails (refused, timed out, killed mid-query) is skipped for
DOWN_SECONDS, and the read that met the failure runs again on the primary: a replica going away never
fails a request. `/healthz` stays about the primary (a replica down is not a 503); `/metrics` shows each
replica's lag and whether it answered.

Lag, measured without trusting an idle primary. `now() - pg_last_xact_replay_timestamp()` alone is wrong
when nothing is written: the last replayed commit gets old while the replica is perfectly current. So:
- the replica has replayed everything the primary had flushed when we asked it (replay LSN >= the
  primary's flush LSN, read first): lag 0, and the replica is "caught up" as of that moment;
- otherwise it is behind by at most the time since its last replayed commit, and by at most the time
  since it was last seen caught up: the lag is the smaller of the two. An idle primary's first write
  after an hour then reads as a second of lag (the last check found the replica caught up), not an hour;
  paused or stuck replay grows both bounds, as it should.
- a server that is not in recovery (a primary listed as a replica, or a test's mirror) has lag 0.
"""

import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections
from django.db.models import QuerySet

logger = logging.getLogger(__name__)

PRIMARY = DEFAULT_DB_ALIAS
# How long a process trusts a replica's last check: lag within a second or two, one check a second.
CHECK_SECONDS = 1.0
# How long a replica that failed is skipped before it is tried again (a restart takes seconds; a dead
# host must not cost every request a connect timeout).
DOWN_SECONDS = 10.0

T = TypeVar("T")

_pinned: ContextVar[str | None] = ContextVar("llmlog_read_alias", default=None)


@dataclass
class ReplicaState:
    """What this process last learnt about one replica."""

    alias: str
    checked_at: float = -math.inf  # time.monotonic() of the last check
    lag: float | None = None  # seconds behind the primary; None: unknown (never answered, or down)
    up: bool = False
    down_until: float = -math.inf  # skipped until this monotonic time
    caught_up_at: float | None = None  # wall time the replica last held all the primary had flushed
    lock: threading.Lock = field(default_factory=threading.Lock)  # one check at a time


_states: dict[str, ReplicaState] = {}
_states_lock = threading.Lock()
_turn = itertools.count()


def replica_aliases() -> list[str]:
    return list(getattr(settings, "LLMLOG_REPLICA_ALIASES", ()))


def _state(alias: str) -> ReplicaState:
    state = _states.get(alias)  # every read asks: no lock, no new state, once it exists
    if state is None:
        with _states_lock:
            state = _states.setdefault(alias, ReplicaState(alias))
    return state


def forget_replica_states() -> None:
    """Drop what this process knows of its replicas (tests, or after DATABASES changed)."""
    with _states_lock:
        _states.clear()


def read_alias() -> str:
    """The database a read of usage goes to: the alias pinned by the enclosing `replica_read`, else a
    replica that answered its last check and lags at most LLMLOG_REPLICA_MAX_LAG_SECONDS (in turns when
    there are several), else the primary."""
    pinned = _pinned.get()
    if pinned is not None:
        return pinned
    aliases = replica_aliases()
    if not aliases:
        return PRIMARY
    start = next(_turn)
    for offset in range(len(aliases)):
        state = _fresh_state(aliases[(start + offset) % len(aliases)])
        if state.up and state.lag is not None and state.lag <= settings.LLMLOG_REPLICA_MAX_LAG_SECONDS:
            return state.alias
    return PRIMARY


@contextmanager
def reading_from(alias: str) -> Iterator[None]:
    """Every selector called inside reads `alias` (PRIMARY: a caller that must see its own write)."""
    token = _pinned.set(alias)
    try:
        yield
    finally:
        _pinned.reset(token)


def replica_read(function: Callable[..., T]) -> Callable[..., T]:
    """A selector that reads from one database, chosen once: a fresh replica or the primary.

    A queryset given as its first argument (or `queryset=`) keeps the database it was built for. When
    the replica fails during the read (down, restarted, the connection killed), it is marked down and
    the read runs again, whole, on the primary. Inside another `replica_read` (or `reading_from`) the
    outer choice holds."""

    @functools.wraps(function)
    def read(*args: Any, **kwargs: Any) -> T:
        if _pinned.get() is not None:
            return function(*args, **kwargs)
        given = _given_queryset(args, kwargs)
        alias = given.db if given is not None else read_alias()
        if alias == PRIMARY:
            with reading_from(PRIMARY):
                return function(*args, **kwargs)
        try:
            with reading_from(alias):
                return function(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            mark_down(alias, exc)
        args, kwargs = _on_primary(args, kwargs)
        with reading_from(PRIMARY):
            return function(*args, **kwargs)

    return read


def _given_queryset(args: tuple, kwargs: dict) -> QuerySet | None:
    if isinstance(kwargs.get("queryset"), QuerySet):
        return kwargs["queryset"]
    if args and isinstance(args[0], QuerySet):
        return args[0]
    return None


def _on_primary(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The arguments with any queryset moved to the primary."""
    args = tuple(arg.using(PRIMARY) if isinstance(arg, QuerySet) else arg for arg in args)
    kwargs = {name: v.using(PRIMARY) if isinstance(v, QuerySet) else v for name, v in kwargs.items()}
    return args, kwargs


def mark_down(alias: str, exc: BaseException | None = None) -> None:
    """Skip `alias` for DOWN_SECONDS and drop this thread's connection to it."""
    state = _state(alias)
    state.up, state.lag = False, None
    state.down_until = time.monotonic() + DOWN_SECONDS
    state.checked_at = time.monotonic()
    logger.warning(
        "replica %s failed (%s): reads go to the primary for %.0f s",
        alias,
        type(exc).__name__ if exc else "check",
        DOWN_SECONDS,
    )
    with suppress(DatabaseError):  # already broken: Django drops it either way
        connections[alias].close()


def _fresh_state(alias: str) -> ReplicaState:
    """The replica's state, checked again when older than CHECK_SECONDS (by one thread; the others use
    the last answer meanwhile)."""
    state = _state(alias)
    now = time.monotonic()
    if now < state.down_until or now - state.checked_at < CHECK_SECONDS:
        return state
    if state.lock.acquire(blocking=False):
        try:
            check_replica(state)
        finally:
            state.lock.release()
    return state


def check_replica(state: ReplicaState) -> None:
    """Ask the primary for its flushed WAL position and the replica how far it has replayed."""
    try:
        with connections[PRIMARY].cursor() as cursor:
            asked_at = time.time()
            cursor.execute("SELECT pg_current_wal_flush_lsn()::text")
            primary_lsn = cursor.fetchone()[0]
    except DatabaseError:
        logger.warning("replica check: the primary's WAL position could not be read", exc_info=True)
        state.up, state.lag, state.checked_at = False, None, time.monotonic()
        return
    replica = connections[state.alias]
    if replica.connection is not None and not replica.is_usable():  # restarted since: a new connection
        replica.close()
    try:
        with replica.cursor() as cursor:
            cursor.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
            )
            in_recovery, replay_lsn, replay_age = cursor.fetchone()
    except DatabaseError as exc:
        mark_down(state.alias, exc)
        return
    state.lag = _lag(state, asked_at, in_recovery, primary_lsn, replay_lsn, replay_age)
    state.up, state.checked_at = True, time.monotonic()


def _lag(
    state: ReplicaState,
    asked_at: float,
    in_recovery: bool,
    primary_lsn: str,
    replay_lsn: str | None,
    replay_age: float | None,
) -> float | None:
    """Seconds the replica is behind (the module's docstring says why it is measured this way)."""
    if not in_recovery:
        return 0.0
    if replay_lsn is not None and lsn(replay_lsn) >= lsn(primary_lsn):
        state.caught_up_at = asked_at
        return 0.0
    bounds = [max(0.0, replay_age)] if replay_age is not None else []
    if state.caught_up_at is not None:
        bounds.append(max(0.0, time.time() - state.caught_up_at))
    return min(bounds) if bounds else None


def lsn(text: str) -> int:
    """A pg_lsn ("16/B374D848") as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def replica_statuses() -> list[tuple[str, bool, float | None]]:
    """(alias, up, lag seconds or None) of every replica, each checked unless checked within
    CHECK_SECONDS (or skipped after a failure: down until DOWN_SECONDS have passed)."""
    statuses = []
    for alias in replica_aliases():
        state = _fresh_state(alias)
        statuses.append((alias, state.up, state.lag))
    return statuses
