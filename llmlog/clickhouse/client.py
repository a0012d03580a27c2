"""The ClickHouse connection: CLICKHOUSE_URL (clickhouse://user:password@host:9000/database), spoken to
with clickhouse-driver over the native protocol (it works with servers from 18.x to today's; the HTTP
client clickhouse-connect fails against old servers at connect)."""

import logging
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# A dead server must not hold a request long: reads then fall back to PostgreSQL.
CONNECT_TIMEOUT_SECONDS = 2
# A mutation (ALTER ... DELETE) runs in the background; the purges wait for it this long at most.
MUTATION_WAIT_SECONDS = 300

PENDING_MUTATIONS_SQL = (
    "SELECT count() FROM system.mutations"
    " WHERE database = currentDatabase() AND table = %(t)s AND is_done = 0"
)
# A table's partitions (history's ids are YYYYMM, the rollups' days since the epoch).
PARTITIONS_SQL = (
    "SELECT DISTINCT partition FROM system.parts"
    " WHERE database = currentDatabase() AND table = %(t)s AND active"
)

_local = threading.local()


class ClickHouseUnavailable(Exception):
    """ClickHouse did not answer (down, refused, timed out) or refused a statement."""


def clickhouse_configured() -> bool:
    return bool(getattr(settings, "CLICKHOUSE_URL", None))


def _client() -> Any:
    """This thread's client for CLICKHOUSE_URL (a client is one connection, not shareable)."""
    url = settings.CLICKHOUSE_URL
    cached = getattr(_local, "client", None)
    if cached is not None and cached[0] == url:
        return cached[1]
    # Imported here, not at the top: the driver is an optional dependency (the `clickhouse` extra), and
    # with CLICKHOUSE_URL unset it is never needed.
    from clickhouse_driver import Client

    client = Client.from_url(url)
    client.connection.connect_timeout = CONNECT_TIMEOUT_SECONDS
    _local.client = (url, client)
    return client


def clickhouse_execute(sql: str, params: Any = None, **kwargs: Any) -> list[tuple]:
    """Run one statement; any failure of the server or the connection is ClickHouseUnavailable."""
    client = _client()
    try:
        return client.execute(sql, params, **kwargs)
    except Exception as exc:  # the driver's errors, socket errors, EOF: all mean "not answered"
        client.disconnect()
        raise ClickHouseUnavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def clickhouse_wait_for_mutations(table: str) -> None:
    """Wait until every mutation (ALTER ... DELETE) of `table` is done: on servers before 19.x there is
    no mutations_sync, and a purge must not return while ClickHouse still answers the deleted rows."""
    deadline = time.monotonic() + MUTATION_WAIT_SECONDS
    while clickhouse_execute(PENDING_MUTATIONS_SQL, {"t": table})[0][0]:
        if time.monotonic() > deadline:
            raise ClickHouseUnavailable(f"mutations of {table} not done after {MUTATION_WAIT_SECONDS} s")
        time.sleep(0.05)
