"""PostgreSQL statements with their parameters bound by the server, on Django's own connection.

Django's psycopg cursors bind on the client: each value is quoted into the SQL text, which the server
then parses and plans whole, every time. For the hottest statements (get-item, RPM/TPM, list pages,
single-record ingest) a plain psycopg cursor sends the values apart (the extended protocol) and, with
`execute(..., prepare=True)`, keeps the statement prepared on the connection: after five runs
PostgreSQL settles on a generic plan when it costs no more, and stops planning. Planning the
`llmusage_all` view over history's partitions takes longer than running a page of it (1 ms against
0.4 ms at 1M rows).

Same connection, same transaction and the same error translation as Django's cursors; only the binding
differs. `DATABASE_PREPARED_STATEMENTS=false` turns preparing off (settings), for a pooler that cannot
keep prepared statements.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def bound_cursor(alias: str = DEFAULT_DB_ALIAS, *, native: bool = False) -> Iterator[psycopg.Cursor]:
    """A psycopg cursor on the Django connection of `alias` (the primary unless a read names a replica).

    native=True: a RawCursor, whose SQL names its values as PostgreSQL does ($1, $2, ...) and is sent as
    written. psycopg rewrites `%s` into `$n` on every call, caching the rewrite only for statements of
    at most 50 values; the single-record insert has more (about 14% of its request's CPU went there)."""
    connection = connections[alias]
    connection.ensure_connection()
    cursor_class = psycopg.RawCursor if native else psycopg.Cursor
    with connection.wrap_database_errors, cursor_class(connection.connection) as cursor:
        yield cursor
