"""OneUptime's LLM Log fields: the columns each reads, its value in an answer, how `query` and `sort` use it,
and `select`."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from llmlog.api.dialects.common import (
    bad_input,
    ioinfo_side,
    iso,
    money_number,
)
from llmlog.models import AccountingStatus, UsageStatus

DEFAULT_LIMIT = 10
# The largest number a query compares with: the columns are 64-bit integers or Decimal(18, 5).
NUMBER_LIMIT = 2**63 - 1
STATUS_NAMES = {UsageStatus.SUCCESS: "Success", UsageStatus.FAILED: "Error"}
# OneUptime's third status is for calls it refused for want of balance; llmlog stores no such record,
# so querying it (or any other text) is valid and finds nothing.
STATUS_VALUES = {"Success": UsageStatus.SUCCESS, "Error": UsageStatus.FAILED, "Insufficient Balance": None}

Row = Mapping[str, Any]


def _relation(column: str) -> Callable[[Row], Any]:
    return lambda row: {"_id": row[column]} if row[column] else None


def _metadata_key(key: str) -> Callable[[Row], Any]:
    return lambda row: (row["metadata"] or {}).get(key)


def _metadata_relation(key: str) -> Callable[[Row], Any]:
    def value(row: Row) -> Any:
        found = (row["metadata"] or {}).get(key)
        return {"_id": found} if found else None

    return value


def _completed_at(row: Row) -> str | None:
    if row["finish_seconds"] is None:
        return None
    return iso(row["use_time"] + timedelta(seconds=row["finish_seconds"]))


def _cents(row: Row) -> float:
    # Required (a Number) in the seed: a record not priced yet has been charged nothing so far.
    return money_number(row["amount"] * 100) if row["amount"] is not None else 0


@dataclass(frozen=True)
class LogField:
    """One field of OneUptime's LLM Log: the columns it reads, its value, and how it is queried."""

    reads: tuple[str, ...]
    value: Callable[[Row], Any]
    column: str | None = None  # the column `query` and `sort` use; None: select only
    kind: str = "text"  # how query values are read, see _operand
    sortable: bool = False


def _col(column: str, kind: str = "text", *, sortable: bool = False) -> LogField:
    return LogField(
        reads=(column,), value=lambda row: row[column], column=column, kind=kind, sortable=sortable
    )


FIELDS: dict[str, LogField] = {
    "_id": LogField(("id",), lambda row: str(row["id"]), "id", "uuid", sortable=True),
    "createdAt": LogField(("use_time",), lambda row: iso(row["use_time"]), "use_time", "date", sortable=True),
    "updatedAt": LogField(
        ("accounted_at", "created_at"), lambda row: iso(row["accounted_at"] or row["created_at"])
    ),
    "projectId": _col("userorgid"),
    "project": LogField(("userorgid",), _relation("userorgid")),
    "llmProviderId": _col("channel_id"),
    "llmProvider": LogField(("channel_id",), _relation("channel_id")),
    "llmProviderName": _col("provider"),
    "llmType": _col("provider_type"),
    "modelName": _col("model_name"),
    "isGlobalProvider": _col("is_global_provider", "bool"),
    "inputTokens": _col("input_tokens", "number", sortable=True),
    "outputTokens": _col("output_tokens", "number", sortable=True),
    "totalTokens": _col("total_tokens", "number", sortable=True),
    "costInUSDCents": LogField(("amount",), _cents, "amount", "cents", sortable=True),
    "wasBilled": LogField(
        ("accounting_status",),
        lambda row: row["accounting_status"] == AccountingStatus.ACCOUNTED,
        "accounting_status",
        "billed",
    ),
    "status": LogField(
        ("status",), lambda row: STATUS_NAMES.get(row["status"], row["status"]), "status", "status"
    ),
    "statusMessage": _col("error_message"),
    "feature": _col("feature"),
    "requestPrompt": LogField(("ioinfo",), lambda row: ioinfo_side(row["ioinfo"], "request")[0]),
    "responsePreview": LogField(("ioinfo",), lambda row: ioinfo_side(row["ioinfo"], "response")[0]),
    "incidentId": LogField(("metadata",), _metadata_key("incidentId"), "metadata__incidentId", "meta"),
    "incident": LogField(("metadata",), _metadata_relation("incidentId")),
    "alertId": LogField(("metadata",), _metadata_key("alertId"), "metadata__alertId", "meta"),
    "alert": LogField(("metadata",), _metadata_relation("alertId")),
    "scheduledMaintenanceId": LogField(
        ("metadata",), _metadata_key("scheduledMaintenanceId"), "metadata__scheduledMaintenanceId", "meta"
    ),
    "scheduledMaintenance": LogField(("metadata",), _metadata_relation("scheduledMaintenanceId")),
    "userId": _col("userid"),
    "user": LogField(("userid",), _relation("userid")),
    "requestStartedAt": LogField(
        ("use_time",), lambda row: iso(row["use_time"]), "use_time", "date", sortable=True
    ),
    "requestCompletedAt": LogField(("use_time", "finish_seconds"), _completed_at),
    "durationMs": LogField(
        ("finish_seconds",),
        lambda row: None if row["finish_seconds"] is None else round(row["finish_seconds"] * 1000),
        "finish_seconds",
        "ms",
        sortable=True,
    ),
}
SORTABLE = [name for name, field in FIELDS.items() if field.sortable]
QUERYABLE = [name for name, field in FIELDS.items() if field.column]


# --- select ---------------------------------------------------------------------------------------


def parse_select(select: Any) -> list[str]:
    """The fields to answer: `_id` and each field `select` sets (true, or a relation's sub-select)."""
    if select is None:
        return ["_id"]
    if not isinstance(select, Mapping):
        raise bad_input("select", "Expected an object mapping field names to true.")
    names = ["_id"]
    for name, wanted in select.items():
        if name not in FIELDS:
            raise bad_input(f"select.{name}", f"Unknown field. Fields: {', '.join(FIELDS)}.")
        if wanted not in (False, None, 0) and name not in names:
            names.append(name)
    return names


def shape(row: Row, names: list[str]) -> dict[str, Any]:
    return {name: FIELDS[name].value(row) for name in names}


def columns_for(names: list[str]) -> list[str]:
    return sorted({column for name in names for column in FIELDS[name].reads})
