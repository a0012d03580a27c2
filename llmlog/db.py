"""PostgreSQL statements with their parameters bound by the server, on Django's own connection.

Django's psycopg cursors bind on the client: each value is quoted into the SQL text, which the server
then parses whole. For the hottest statements (get-item, RPM/TPM, single-record ingest) that quoting
costs more than the query; a plain psycopg cursor sends the values apart (the extended protocol) and
can keep the statement prepared on the connection. Same connection, same transaction and the same
error translation as Django's cursors; only the binding differs.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection


@contextmanager
def bound_cursor() -> Iterator[psycopg.Cursor]:
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
