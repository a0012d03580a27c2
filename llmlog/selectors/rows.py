"""Records as plain {attname: value} rows: get-item and the API's pages, read without model instances."""

import functools
import uuid
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, connections
from django.db.models import QuerySet

from llmlog.db import bound_cursor
from llmlog.models import LLMUsageHistory, UsageAll
from llmlog.replicas import PRIMARY, read_alias, reading_from, replica_read


@replica_read
def usage_record_values(
    *,
    org: str = "",
    id: str | uuid.UUID,  # noqa: A002 - the design's name
    model: type[UsageAll] | type[LLMUsageHistory] = UsageAll,
) -> dict[str, Any]:
    """One record by id as {attname: value}: hot or history (`UsageAll`), or history only. Raises
    `model.DoesNotExist` when absent or of another org.

    Get-item is the hottest read, and on PostgreSQL compiling its 50-column SELECT and building a model
    instance cost twice the query itself: the statement is composed once per model and its rows read
    plain. Elsewhere (SQLite) the ORM does it, with its own conversions.

    Read from a replica, a record not there yet (written within the replica's lag: a gateway reading
    back what it just sent) is asked of the primary before it is a 404; only misses pay the second read.
    """
    try:
        return _record_values(org=org, id=id, model=model)
    except model.DoesNotExist:
        if read_alias() == PRIMARY:
            raise
    with reading_from(PRIMARY):
        return _record_values(org=org, id=id, model=model)


def _record_values(
    *,
    org: str,
    id: str | uuid.UUID,  # noqa: A002 - the design's name
    model: type[UsageAll] | type[LLMUsageHistory],
) -> dict[str, Any]:
    if connection.vendor != "postgresql":
        queryset = model.objects.using(read_alias())
        return (queryset.filter(userorgid=org) if org else queryset).values().get(pk=id)
    row = fetch_one(_record_statement(model), [id], org=org)
    if row is None:
        raise model.DoesNotExist(f"No {model._meta.verbose_name} {id}.")
    return _plain_row(model, tuple(_attnames(model).values()), row)


@replica_read
def usage_rows(queryset: QuerySet, *, prepare: bool = False) -> list[dict[str, Any]]:
    """A queryset of usage records (any filters, order and slice) as {attname: value} rows, as get-item
    reads its one: what a page of the API shows.

    On PostgreSQL the ORM composes the statement and its rows are read plain, only the JSON columns
    converted: building twenty 50-column model instances and running each value through the ORM's
    converters costs as much as the query. With `prepare` the statement is prepared (llmlog.db): for
    statements whose plan does not hang on the values, not for a search, whose generic plan cannot use
    the trigram index. Elsewhere (SQLite) `.values()`, with the ORM's conversions. Read on the database
    the queryset was built for (a replica, llmlog.replicas), the primary if that replica fails.
    """
    if connection.vendor != "postgresql":
        return list(queryset.values())
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:  # a condition nothing can meet (`id IN ()`): the ORM answers no rows unasked
        return []
    with bound_cursor(queryset.db) as cursor:
        cursor.execute(sql, params, prepare=prepare)
        attnames = _attnames(queryset.model)
        names = tuple(attnames.get(column.name, column.name) for column in cursor.description)
        rows = cursor.fetchall()
    return [_plain_row(queryset.model, names, row) for row in rows]


def _plain_row(model, names: tuple[str, ...], row: tuple) -> dict[str, Any]:
    values = dict(zip(names, row, strict=True))
    for name, field in _json_fields(model):
        if name in values:  # Django's connection loads jsonb as text; the field decodes it
            values[name] = field.from_db_value(values[name], None, connections[read_alias()])
    return values


@functools.cache
def _json_fields(model) -> tuple[tuple[str, Any], ...]:
    return tuple((f.attname, f) for f in model._meta.concrete_fields if f.get_internal_type() == "JSONField")


@functools.cache
def _attnames(model) -> dict[str, str]:
    """column -> attname, in the model's column order (the same names today; a db_column someday must
    not rename a key of the answer)."""
    return {field.column: field.attname for field in model._meta.concrete_fields}


@functools.cache
def _record_statement(model) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return f"SELECT {columns} FROM {quote(model._meta.db_table)} WHERE id = %s"


def fetch_one(sql: str, params: list[Any], *, org: str) -> tuple | None:
    """The first row of a composed statement (its WHERE ends the SQL), scoped to `org` unless "" (all);
    on the read's database (llmlog.replicas.read_alias)."""
    if org:
        sql, params = f"{sql} AND userorgid = %s", [*params, org]
    with bound_cursor(read_alias()) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()
