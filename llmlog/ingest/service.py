"""The ingest service: the records of one request in, each one created, a duplicate (same payload),
a conflict, or field errors; stored once.

Idempotency is the unique constraint on (`transno`, `userorgid`): within an org, a resend whose payload
hash matches is a duplicate, anything else under a known transno is a conflict; another org's same
transno is simply another record. Records are priced (llmlog.pricing) before they are stored, and a
posting run is requested after commit (llmlog.tasks).

On PostgreSQL the single-record requests a process has in flight at once are written by a group commit
(llmlog.ingest.group, LLMLOG_INGEST_GROUP_COMMIT): one transaction and one commit for the group, each
request answered once its record is committed, each record's outcome its own.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from llmlog.budget_spent import budgets_count_ingested
from llmlog.ingest.group import GroupCommitter, GroupFailed
from llmlog.ingest.rules import PreparedRecord, prepare_record
from llmlog.ingest.stated import (
    MONEY_FIELDS,
    PLATFORM_ONLY_FIELDS,
    money_text_problem,
    refuse_stated_by_org,
    stated_fields,
)
from llmlog.ingest.storage import (
    insert_usage_row_if_new,
    insert_usage_rows_if_new,
    known_transnos,
    write_usage_rows,
)
from llmlog.ingest.wire import RecordError, UsageIn, decode_record, parse_body
from llmlog.metrics import count_ingest
from llmlog.models import AccountingStatus
from llmlog.pricing import apply_prices
from llmlog.rollups import usage_rollups_mark_late
from llmlog.tasks import request_posting_soon


@dataclass
class ItemResult:
    index: int
    status: Literal["created", "duplicate", "conflict", "error"]
    transno: str | None = None
    id: str | None = None
    errors: dict[str, str] | None = None
    row: dict[str, Any] | None = field(default=None, repr=False)  # the stored columns, when created

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None and key != "row"}


@dataclass
class IngestResult:
    is_bulk: bool
    items: list[ItemResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item.status == status)


def usage_ingest(*, body: bytes, org: str = "") -> IngestResult:
    """Store the records of one request: created, duplicate (same payload), conflict, or field errors.

    `org` is the ingesting key's org ("" for a platform key): records are pinned to it.
    """
    raw_items, is_bulk = parse_body(body)
    stated = [stated_fields(raw) for raw in raw_items]
    # Before anything is decoded or stored: an org key stating money is refused whole.
    refuse_stated_by_org(org=org, stated=[name for fields in stated if fields for name in fields.stated()])
    records: list[UsageIn | RecordError] = []
    for raw, fields in zip(raw_items, stated, strict=True):
        money_errors = {
            name: problem
            for name in MONEY_FIELDS
            if fields is not None
            and (text := fields.sent(name)) is not None
            and (problem := money_text_problem(text))
        }
        if money_errors:
            records.append(RecordError(money_errors))
            continue
        try:
            records.append(decode_record(raw))
        except RecordError as exc:
            records.append(exc)
    return usage_ingest_records(records=records, org=org, is_bulk=is_bulk)


def usage_ingest_records(
    *, records: list[UsageIn | RecordError], org: str = "", is_bulk: bool = True
) -> IngestResult:
    """`usage_ingest` for records already decoded (the gateway adapters map theirs onto UsageIn).

    A RecordError in the list is a record that could not be decoded: it is reported at its index.
    Raises StatedByOrgKey, before anything is stored, when an org key's record states amount, cost,
    ownerid or price.
    """
    if org:  # a platform key may state anything: its records are not read for it
        refuse_stated_by_org(
            org=org,
            stated=[
                name
                for record in records
                if isinstance(record, UsageIn)
                for name in PLATFORM_ONLY_FIELDS
                if getattr(record, name) not in (None, "")
            ],
        )
    result = IngestResult(
        is_bulk=is_bulk, items=[ItemResult(index=i, status="error") for i in range(len(records))]
    )
    prepared = _prepared_and_priced(records, result, org=org)
    if _written_in_group(prepared, result) or _inserted_alone(prepared, result):
        return result
    # Three tries: a transno taken by a concurrent request between our look-up and our insert makes
    # the COPY fail whole; the next look-up sees it and sorts it into duplicate or conflict.
    for attempt in range(3):
        to_insert = _classify(prepared, result)
        try:
            with transaction.atomic():
                write_usage_rows([record.row for _, record in to_insert])
                _count_written([record.row for _, record in to_insert])
        except IntegrityError:
            if attempt == 2:
                raise
            continue
        _created(to_insert, result)
        return result
    raise AssertionError("unreachable")


def _prepared_and_priced(
    records: list[UsageIn | RecordError], result: IngestResult, *, org: str
) -> dict[int, PreparedRecord]:
    """The records that pass their rules and can be priced, by index; the others' errors go in `result`."""
    now, tz = timezone.now(), timezone.get_current_timezone()
    prepared: dict[int, PreparedRecord] = {}
    for index, record in enumerate(records):
        if isinstance(record, RecordError):
            result.items[index].errors = record.errors
            continue
        try:
            prepared[index] = prepare_record(record, now=now, org=org, tz=tz)
        except RecordError as exc:
            result.items[index].errors = exc.errors
    positions = list(prepared)
    unpriceable = apply_prices([prepared[index].row for index in positions])
    for position, errors in unpriceable.items():
        result.items[positions[position]].errors = errors
        del prepared[positions[position]]
    return prepared


def _count_written(rows: list[dict[str, Any]]) -> None:
    """What every write does in its own transaction, beside the rows: the budgets count them, and the
    hours they land in, if the rollups may have summed those already, read rows until rebuilt."""
    budgets_count_ingested(rows=rows)
    usage_rollups_mark_late(use_times=[row["use_time"] for row in rows])


def _inserted_alone(prepared: dict[int, PreparedRecord], result: IngestResult) -> bool:
    """The hot path of a gateway sending one record at a time: on PostgreSQL a new record is inserted
    in one statement, without the look-up. False when it does not apply or the transno is taken (the
    look-up then tells duplicate from conflict)."""
    if len(prepared) != 1 or connection.vendor != "postgresql":
        return False
    ((index, record),) = prepared.items()
    with transaction.atomic():  # the record and its count in the budgets, together
        if not insert_usage_row_if_new(record.row):
            return False
        _count_written([record.row])
    result.items[index].transno = record.row["transno"]
    _created([(index, record)], result)
    return True


def _written_in_group(prepared: dict[int, PreparedRecord], result: IngestResult) -> bool:
    """A single record on PostgreSQL, outside any transaction of the caller's (a transaction of its own
    could not be committed by another thread's group): written by this process's group commit, and
    True once committed. False when it does not apply, or when its group failed or its transno
    vanished between the insert and the look-up: the record is then written alone."""
    if (
        len(prepared) != 1
        or connection.vendor != "postgresql"
        or connection.in_atomic_block
        or not settings.LLMLOG_INGEST_GROUP_COMMIT
    ):
        return False
    ((index, record),) = prepared.items()
    try:
        outcome = GROUP_COMMIT.submit(record)
    except GroupFailed:
        return False
    if outcome is None:
        return False
    outcome.index = index
    result.items[index] = outcome
    count_ingest(item.status for item in result.items)
    return True


def _write_group(records: Sequence[PreparedRecord]) -> list[ItemResult | None]:
    """The group commit's write, on the leader's connection: every record of the group in one
    transaction, each inserted unless its transno is taken (a transno twice in the group: the first
    is inserted, the second is then its duplicate or conflict, as if they came one after the other).
    Each record's outcome at index 0; None for a transno neither inserted nor found (deleted meanwhile),
    which its own request then writes alone."""
    with transaction.atomic():
        inserted = insert_usage_rows_if_new([record.row for record in records])
        pairs = list(zip(records, inserted, strict=True))
        _count_written([record.row for record, new in pairs if new])
        known = known_transnos([(r.row["transno"], r.row["userorgid"]) for r, new in pairs if not new])
        outcomes: list[ItemResult | None] = []
        for record, new in pairs:
            transno = record.row["transno"]
            existing = known.get((transno, record.row["userorgid"]))
            if new:
                outcome = ItemResult(index=0, status="created", id=str(record.row["id"]), row=record.row)
            elif existing is None:
                outcome = None
            elif existing[1] == record.payload_hash:
                outcome = ItemResult(index=0, status="duplicate", id=existing[0])
            else:
                outcome = ItemResult(index=0, status="conflict", id=existing[0], errors=_conflict(transno))
            if outcome is not None:
                outcome.transno = transno
            outcomes.append(outcome)
        if any(new and r.row["accounting_status"] == AccountingStatus.PENDING for r, new in pairs):
            transaction.on_commit(request_posting_soon)  # debounced: one task per few seconds at most
    return outcomes


# One per process: the single-record requests of gunicorn's threads (config/gunicorn.py) group here.
# 64 bounds a group's statement list and the wait of its last member; a process serves fewer at once.
GROUP_COMMIT: GroupCommitter[PreparedRecord, ItemResult | None] = GroupCommitter(_write_group, max_size=64)


def _created(inserted: list[tuple[int, PreparedRecord]], result: IngestResult) -> None:
    for index, record in inserted:
        result.items[index].status = "created"
        result.items[index].id = str(record.row["id"])
        result.items[index].row = record.row
    if any(record.row["accounting_status"] == AccountingStatus.PENDING for _, record in inserted):
        transaction.on_commit(request_posting_soon)  # debounced: one task per few seconds at most
    count_ingest(item.status for item in result.items)  # /metrics: llmlog_ingest_records_total


def _classify(prepared: dict[int, PreparedRecord], result: IngestResult) -> list[tuple[int, PreparedRecord]]:
    """Mark duplicates and conflicts (against the tables and within the batch); return what to insert."""
    known = known_transnos([(r.row["transno"], r.row["userorgid"]) for r in prepared.values()])
    to_insert: list[tuple[int, PreparedRecord]] = []
    for index, record in prepared.items():
        item = result.items[index]
        transno = record.row["transno"]
        key = (transno, record.row["userorgid"])
        item.transno, item.errors = transno, None
        if key in known:
            existing_id, existing_hash = known[key]
            item.id = existing_id
            if existing_hash == record.payload_hash:
                item.status = "duplicate"
            else:
                item.status = "conflict"
                item.errors = _conflict(transno)
            continue
        known[key] = (str(record.row["id"]), record.payload_hash)
        to_insert.append((index, record))
    return to_insert


def _conflict(transno: str) -> dict[str, str]:
    return {"transno": f"{transno!r} was already recorded with a different payload."}
