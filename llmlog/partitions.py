"""Upkeep of the monthly partitions of `llmusage_history` on PostgreSQL (migration 0006 made them).

History is PARTITIONED BY RANGE (use_date): one partition per calendar month, `llmusage_history_y2026m11`
holding [2026-11-01, 2026-12-01), plus a DEFAULT partition that takes a row whose month has none yet,
so an insert never fails for want of a partition. The nightly backup creates the months it is about to
fill (`ensure_history_partitions`), and the retention purge drops whole months (`drop_history_partition`).

A month created while the DEFAULT partition holds some of its rows gets them moved in, in the way the
PostgreSQL manual recommends for adding a partition without blocking the table: the month is built as a
plain table (LIKE the parent), the rows are moved into it from the DEFAULT partition, and it is attached
with ATTACH PARTITION, which takes only a SHARE UPDATE EXCLUSIVE lock on the parent (reads and the backup
go on) and an ACCESS EXCLUSIVE lock on the DEFAULT partition while it checks that no row of the month is
left there. All of it is one transaction: it happens whole or not at all.

On SQLite (and on a PostgreSQL history that is not partitioned) there are no partitions:
`history_partitions` is empty and `ensure_history_partitions` does nothing.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from django.db import connection, transaction

logger = logging.getLogger(__name__)

HISTORY_TABLE = "llmusage_history"
DEFAULT_PARTITION = f"{HISTORY_TABLE}_default"
# DDL here waits at most this long for a lock, then gives up (the caller carries on without it): a
# partition change queued behind a long report would otherwise block every query that comes after it.
LOCK_TIMEOUT = "5s"
# Serializes partition changes between processes (two backups at once): pg_advisory_xact_lock's key.
PARTITION_LOCK_KEY = 0x6C6C6D70  # "llmp"

_BOUNDS = re.compile(r"FOR VALUES FROM \('([0-9-]+)'\) TO \('([0-9-]+)'\)")


@dataclass(frozen=True)
class Partition:
    """One partition of history and its range [start, end); both None for the DEFAULT partition."""

    name: str
    start: date | None
    end: date | None

    @property
    def is_default(self) -> bool:
        return self.start is None


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """The first days of the months from `first`'s to `last`'s, both included."""
    month, end, found = month_start(first), month_start(last), []
    while month <= end:
        found.append(month)
        month = next_month(month)
    return found


def month_partition_name(month: date) -> str:
    return f"{HISTORY_TABLE}_y{month:%Y}m{month:%m}"


def history_is_partitioned() -> bool:
    """True on PostgreSQL once migration 0006 has run."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))",
            [HISTORY_TABLE],
        )
        return cursor.fetchone()[0]


def history_partitions() -> list[Partition]:
    """Every partition of history with its bounds, read from the catalog; oldest month first, DEFAULT
    last. Empty when history is not partitioned."""
    if not history_is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = %s::regclass
            """,
            [HISTORY_TABLE],
        )
        rows = cursor.fetchall()
    partitions = [_partition(name, bound) for name, bound in rows]
    return sorted(partitions, key=lambda p: (p.is_default, p.start or date.max))


def _partition(name: str, bound: str) -> Partition:
    if bound == "DEFAULT":
        return Partition(name, None, None)
    found = _BOUNDS.fullmatch(bound)
    if not found:  # only this module and migration 0006 make partitions, always by month
        raise ValueError(f"partition {name} of {HISTORY_TABLE} has unexpected bounds: {bound}")
    return Partition(name, date.fromisoformat(found[1]), date.fromisoformat(found[2]))


def ensure_history_partitions(first: date, last: date) -> list[str]:
    """Create the monthly partitions of history covering every month from `first` to `last` that has none
    yet, moving each month's rows out of the DEFAULT partition. Returns the names created.

    See `ensure_history_months`, which this calls, for locks and failures."""
    return ensure_history_months(months_between(first, last)) if first <= last else []


def ensure_history_months(months: Iterable[date]) -> list[str]:
    """Create the partitions of the given months (any day of a month stands for it) that have none yet,
    moving each month's rows out of the DEFAULT partition. Returns the names created.

    The usual night finds every month there: one catalog query, no lock. Otherwise one transaction,
    serialized with any other run by an advisory lock, creates what is still missing. Raises
    django.db.OperationalError when a lock is not granted within LOCK_TIMEOUT (nothing changed then).
    """
    wanted = sorted({month_start(month) for month in months})
    if not wanted or not history_is_partitioned() or not _missing(wanted):
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITION_LOCK_KEY])
        has_default = any(p.is_default for p in history_partitions())
        for month in _missing(wanted):  # again: another run may have made some meanwhile
            _create_month(cursor, month, has_default=has_default)
            created.append(month_partition_name(month))
    logger.info("created history partitions: %s", ", ".join(created))
    return created


def _missing(months: list[date]) -> list[date]:
    covered = [p for p in history_partitions() if not p.is_default]
    return [
        month for month in months if not any(p.start <= month and next_month(month) <= p.end for p in covered)
    ]


def _create_month(cursor, month: date, *, has_default: bool) -> None:
    name, start, end = month_partition_name(month), month.isoformat(), next_month(month).isoformat()
    # Same columns, defaults, NOT NULL and CHECK constraints as the parent (ATTACH requires them); its
    # indexes, keys included, are made by ATTACH from the parent's.
    cursor.execute(f"CREATE TABLE {name} (LIKE {HISTORY_TABLE} INCLUDING ALL EXCLUDING INDEXES)")
    if has_default:
        columns = _columns(cursor)
        cursor.execute(
            f"""
            WITH moved AS (
                DELETE FROM {DEFAULT_PARTITION} WHERE use_date >= %s AND use_date < %s RETURNING {columns}
            )
            INSERT INTO {name} ({columns}) SELECT {columns} FROM moved
            """,
            [start, end],
        )
        if cursor.rowcount:
            logger.info("moved %d history rows from %s to %s", cursor.rowcount, DEFAULT_PARTITION, name)
    # A CHECK matching the bounds spares ATTACH a scan of the new table; dropped once it is a partition.
    in_month = f"use_date >= '{start}' AND use_date < '{end}'"
    cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK ({in_month})")
    bounds = f"FOR VALUES FROM ('{start}') TO ('{end}')"
    cursor.execute(f"ALTER TABLE {HISTORY_TABLE} ATTACH PARTITION {name} {bounds}")
    cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
    # Small now. Gives the planner (and the row estimate of llmlog.selectors.totals.usage_count) a figure at
    # once: autovacuum may not analyse a partition holding a few moved rows for a long time.
    cursor.execute(f"ANALYZE {name}")


def _columns(cursor) -> str:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        [HISTORY_TABLE],
    )
    return ", ".join(connection.ops.quote_name(name) for (name,) in cursor.fetchall())


def drop_history_partition(partition: Partition) -> int:
    """Detach and drop one monthly partition of history; returns how many rows it held.

    The rows are counted under a lock that keeps writers out (SHARE ROW EXCLUSIVE on the parent: reads
    go on), so the count is the number dropped. DETACH and DROP then need a brief ACCESS EXCLUSIVE lock
    on the parent. Raises django.db.OperationalError when a lock is not granted within LOCK_TIMEOUT
    (nothing changed then).
    """
    if partition.is_default:
        raise ValueError("the DEFAULT partition of history is never dropped")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # ONLY: the parent alone; every write to history goes through it.
        cursor.execute(f"LOCK TABLE ONLY {HISTORY_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"SELECT count(*) FROM {partition.name}")
        (rows,) = cursor.fetchone()
        cursor.execute(f"ALTER TABLE {HISTORY_TABLE} DETACH PARTITION {partition.name}")
        cursor.execute(f"DROP TABLE {partition.name}")
    logger.info("dropped history partition %s (%d rows)", partition.name, rows)
    return rows
