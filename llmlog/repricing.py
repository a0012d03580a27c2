"""Re-pricing past usage with the price book as it is now, with an audit trail (issue 20).

`repricing_create` prices every record in scope again (`llmlog.pricing.apply_prices`: the price in
effect at the record's use_time, as the book holds it now) and keeps the result as a `Repricing`: its
parameters, a report per (org, model) and a `RepricingItem` per record whose amount or cost changes.
Nothing else changes until it is applied (`repricing_apply`, or `apply=True` at once):

- an accounted record (hot or history) keeps its `amount`/`cost` and its usage posting; the delta is
  posted as `adjustment` transactions (`accounting.adjustments`), and its item links to the adjustment;
- a pending or failed record was never charged: it is re-priced in place (amount, cost, ownerid, the
  price snapshot) and its hour is marked stale for the rollups, as every change of amount/cost is; the
  posting charges the new figures;
- skipped records (nothing billable) and failed calls (billed only when the gateway says so) are out of
  scope; a record whose model has no sale price in effect, in its currency, is left as it is and counted
  `unpriced`.

A record's "old" figures are what it was charged plus the adjustments applied to it before, so a second
re-pricing with the same prices changes nothing. Applying is exactly-once: the Repricing row is locked
and its status checked, the adjustments' references are unique, and applies are serialized (an advisory
lock on PostgreSQL; SQLite writes one at a time) so two overlapping re-pricings cannot both adjust a
record from the same "old". A kept dry run whose records changed since (posted, edited, adjusted by
another re-pricing) is refused with `RepricingStale`: run a new one.
"""

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Sum, UUIDField, Value, When
from django.utils import timezone

from accounting.adjustments import AdjustmentGroup, ledger_post_repricing, repricing_items_insert
from accounting.failures import DESCRIBED_FIELDS, failures_redescribe
from accounting.models import Repricing, RepricingItem
from core.money import quantize_money
from llmlog.models import TOKEN_COUNT_FIELDS, AccountingStatus, LLMUsage, UsageAll, UsageStatus
from llmlog.pricing import apply_prices
from llmlog.rollups import usage_rollups_refresh

Treatment = RepricingItem.Treatment
# Records are read, priced and their items written this many at a time: a batch's rows, its earlier
# adjustments and its items stay a few MB whatever the range holds.
BATCH_SIZE = 5000
# pg_advisory_xact_lock's key for "a re-pricing is being applied": applies run one at a time.
APPLY_LOCK_KEY = 0x6C6C_6D72  # "llmr"
IN_SCOPE = (AccountingStatus.ACCOUNTED, AccountingStatus.PENDING, AccountingStatus.FAILED)
RECORD_FIELDS = (
    "id",
    "transno",
    "userorgid",
    "ownerid",
    "model_name",
    "use_date",
    "use_time",
    "currency",
    "amount",
    "cost",
    "status",
    "accounting_status",
    *TOKEN_COUNT_FIELDS,
)
SUMMARY_MONEY = ("old_amount", "new_amount", "old_cost", "new_cost", "delta_amount", "delta_cost")


class RepricingInvalid(ValueError):
    """Bad parameters: `field` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RepricingStale(Exception):
    """A kept dry run whose records changed since it was made: applying it would post a wrong delta."""


def repricing_create(
    *,
    start: date,
    end: date,
    model_name: str = "",
    userorgid: str = "",
    created_by: str = "",
    apply: bool = False,
    now: datetime | None = None,
) -> Repricing:
    """Price the records of [start, end] (use_date, inclusive) again and keep the report; with `apply`
    apply it in the same transaction. Raises RepricingInvalid, and what `repricing_apply` raises."""
    if end < start:
        raise RepricingInvalid("end", "Must not be before start.")
    now = now or timezone.now()
    with transaction.atomic():
        if apply:
            _serialize_applies()
        repricing = Repricing.objects.create(
            start=start,
            end=end,
            model_name=model_name,
            userorgid=userorgid,
            created_by=created_by[:150],
            created_at=now,
        )
        _compute(repricing)
        if apply:
            _apply(repricing, applied_by=created_by, now=now)
    return repricing


def repricing_apply(
    *, repricing_id: int, applied_by: str = "", now: datetime | None = None
) -> tuple[Repricing, bool]:
    """Apply a kept dry run. Returns (repricing, applied now); an applied one is returned unchanged with
    False. Raises Repricing.DoesNotExist, RepricingStale, LedgerError(no_account), BalanceOverflow."""
    with transaction.atomic():
        _serialize_applies()
        repricing = Repricing.objects.select_for_update().get(pk=repricing_id)
        if repricing.status == Repricing.Status.APPLIED:
            return repricing, False
        _check_current(repricing)
        _apply(repricing, applied_by=applied_by, now=now or timezone.now())
    return repricing, True


def _serialize_applies() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPLY_LOCK_KEY])


# --- computing ------------------------------------------------------------------------------------


def _compute(repricing: Repricing) -> None:
    """Fill the repricing's report and items from the records in scope."""
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for rows in _records_in_scope(repricing):
        items = []
        for row, new in zip(rows, _priced(rows), strict=True):
            group = summary.setdefault((row["userorgid"], row["model_name"]), _empty_group())
            _count(group, row, new)
            if new is not None and (new["amount"], new["cost"]) != (row["amount"], row["cost"]):
                items.append(_item(repricing, row, new))
        repricing_items_insert(items)
    repricing.summary = [
        {"userorgid": org, "model_name": model, **_json_money(group)}
        for (org, model), group in sorted(summary.items())
    ]
    totals = _empty_group()
    for group in summary.values():
        for name, value in group.items():
            totals[name] += value
    repricing.records, repricing.changed = totals["records"], totals["changed"]
    repricing.delta_amount, repricing.delta_cost = totals["delta_amount"], totals["delta_cost"]
    repricing.save(update_fields=["summary", "records", "changed", "delta_amount", "delta_cost"])


def _records_in_scope(repricing: Repricing) -> Iterator[list[dict[str, Any]]]:
    """The records of the scope in batches, keyset on id over the read model (hot and history alike: a
    record the nightly move takes between two batches keeps its id and is read once), each with its
    "old" figures: what it was charged plus the adjustments applied to it before."""
    records = UsageAll.objects.filter(
        use_date__gte=repricing.start,
        use_date__lte=repricing.end,
        status=UsageStatus.SUCCESS,
        accounting_status__in=IN_SCOPE,
        amount__isnull=False,  # an unpriced record is priced when it is posted
        cost__isnull=False,
    )
    if repricing.model_name:
        records = records.filter(model_name=repricing.model_name)
    if repricing.userorgid:
        records = records.filter(userorgid=repricing.userorgid)
    last = None
    while True:
        page = records.filter(id__gt=last) if last is not None else records
        rows = list(page.order_by("id").values(*RECORD_FIELDS)[:BATCH_SIZE])
        if not rows:
            return
        earlier = earlier_adjustments([row["id"] for row in rows])
        for row in rows:
            delta_amount, delta_cost = earlier.get(row["id"], (Decimal(0), Decimal(0)))
            row["amount"] += delta_amount
            row["cost"] += delta_cost
        yield rows
        last = rows[-1]["id"]


def earlier_adjustments(usage_ids: list, *, exclude: int | None = None) -> dict[Any, tuple[Decimal, Decimal]]:
    """{usage_id: (Δamount, Δcost)} the applied re-pricings posted for these records."""
    items = RepricingItem.objects.filter(usage_id__in=usage_ids, adjustment__isnull=False)
    if exclude is not None:
        items = items.exclude(repricing_id=exclude)
    sums = (
        items.values("usage_id")
        .annotate(amount=Sum(F("new_amount") - F("old_amount")), cost=Sum(F("new_cost") - F("old_cost")))
        .values_list("usage_id", "amount", "cost")
    )
    # Rounded to the money places: SQLite sums decimals as floating point.
    return {usage_id: (_money(amount), _money(cost)) for usage_id, amount, cost in sums}


def _money(value: Any) -> Decimal:
    return quantize_money(Decimal(value or 0))


def _priced(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Each row as the price book prices it now: {amount, cost, ownerid, price}, or None (unpriced)."""
    fresh = [{**row, "amount": None, "cost": None} for row in rows]
    errors = apply_prices(fresh)
    priced: list[dict[str, Any] | None] = []
    for position, (row, new) in enumerate(zip(rows, fresh, strict=True)):
        sale = (new.get("price") or {}).get("sale")
        if position in errors or new["amount"] is None or sale is None or sale["currency"] != row["currency"]:
            priced.append(None)
            continue
        cost_price = new["price"].get("cost")
        if cost_price is not None and cost_price["currency"] != row["currency"]:
            priced.append(None)
            continue
        priced.append({name: new[name] for name in ("amount", "cost", "ownerid", "price")})
    return priced


def _item(repricing: Repricing, row: dict[str, Any], new: dict[str, Any]) -> tuple:
    """An item in accounting.adjustments.ITEM_COLUMNS order."""
    accounted = row["accounting_status"] == AccountingStatus.ACCOUNTED
    treatment = Treatment.ADJUSTMENT.value if accounted else Treatment.IN_PLACE.value
    return (
        repricing.pk,
        row["id"],
        row["transno"],
        row["userorgid"],
        new["ownerid"],
        row["model_name"],
        row["use_date"],
        row["currency"],
        treatment,
        row["amount"],
        new["amount"],
        row["cost"],
        new["cost"],
    )


def _empty_group() -> dict[str, Any]:
    return {"records": 0, "changed": 0, "unpriced": 0, **{name: Decimal(0) for name in SUMMARY_MONEY}}


def _count(group: dict[str, Any], row: dict[str, Any], new: dict[str, Any] | None) -> None:
    new_amount, new_cost = (row["amount"], row["cost"]) if new is None else (new["amount"], new["cost"])
    group["records"] += 1
    group["unpriced"] += new is None
    group["changed"] += (new_amount, new_cost) != (row["amount"], row["cost"])
    group["old_amount"] += row["amount"]
    group["new_amount"] += new_amount
    group["old_cost"] += row["cost"]
    group["new_cost"] += new_cost
    group["delta_amount"] += new_amount - row["amount"]
    group["delta_cost"] += new_cost - row["cost"]


def _json_money(group: dict[str, Any]) -> dict[str, Any]:
    return {name: str(value) if isinstance(value, Decimal) else value for name, value in group.items()}


# --- applying -------------------------------------------------------------------------------------


def _check_current(repricing: Repricing) -> None:
    """RepricingStale unless every adjustment item's "old" figures are still the record's: charged plus
    earlier adjustments, still accounted. (In-place items are checked as they are written.)"""
    items = repricing.items.filter(treatment=Treatment.ADJUSTMENT).order_by("id")
    last = 0
    while True:
        batch = list(
            items.filter(id__gt=last).values("id", "usage_id", "transno", "old_amount", "old_cost")[
                :BATCH_SIZE
            ]
        )
        if not batch:
            return
        ids = [item["usage_id"] for item in batch]
        current = {
            row["id"]: row
            for row in UsageAll.objects.filter(id__in=ids).values("id", "amount", "cost", "accounting_status")
        }
        earlier = earlier_adjustments(ids, exclude=repricing.pk)
        for item in batch:
            row = current.get(item["usage_id"])
            delta_amount, delta_cost = earlier.get(item["usage_id"], (Decimal(0), Decimal(0)))
            if (
                row is None
                or row["accounting_status"] != AccountingStatus.ACCOUNTED
                or row["amount"] + delta_amount != item["old_amount"]
                or row["cost"] + delta_cost != item["old_cost"]
            ):
                raise _stale(item["transno"], repricing)
        last = batch[-1]["id"]


def _stale(transno: str, repricing: Repricing) -> RepricingStale:
    return RepricingStale(
        f"Record {transno} changed since re-pricing {repricing.pk} was made: run a new one."
    )


def _apply(repricing: Repricing, *, applied_by: str, now: datetime) -> None:
    """Post the adjustments, link the items to them, re-price the uncharged records in place."""
    adjusted = repricing.items.filter(treatment=Treatment.ADJUSTMENT)
    groups = [
        AdjustmentGroup(
            userorgid=group["userorgid"],
            ownerid=group["ownerid"],
            currency=group["currency"],
            delta_amount=_money(group["amount"]),
            delta_cost=_money(group["cost"]),
        )
        for group in adjusted.values("userorgid", "ownerid", "currency")
        .order_by("userorgid", "ownerid", "currency")
        .annotate(amount=Sum(F("new_amount") - F("old_amount")), cost=Sum(F("new_cost") - F("old_cost")))
    ]
    posted = ledger_post_repricing(repricing_id=repricing.pk, groups=groups, created_by=applied_by, now=now)
    if posted:  # every item to its group's adjustment, in one pass over the items
        adjustment_of = Case(
            *(
                When(userorgid=userorgid, ownerid=ownerid, currency=currency, then=Value(txn.pk))
                for (userorgid, ownerid, currency), txn in posted.items()
            ),
            output_field=UUIDField(),
        )
        adjusted.update(adjustment_id=adjustment_of)
    _reprice_in_place(repricing)
    repricing.status = Repricing.Status.APPLIED
    repricing.applied_by = applied_by[:150]
    repricing.applied_at = now
    repricing.save(update_fields=["status", "applied_by", "applied_at"])


def _reprice_in_place(repricing: Repricing) -> None:
    """The pending and failed records' new figures, written if the record is still uncharged and as the
    item found it (else RepricingStale); their hours are marked stale for the rollups. The rows are
    locked first (`select_for_update`), so the posting cannot charge them between the check and the
    write: it waits, then finds the new figures."""
    items = repricing.items.filter(treatment=Treatment.IN_PLACE).order_by("id")
    uncharged = (AccountingStatus.PENDING, AccountingStatus.FAILED)
    last = 0
    while True:
        batch = list(items.filter(id__gt=last)[:BATCH_SIZE])
        if not batch:
            return
        locked = LLMUsage.objects.select_for_update().filter(
            id__in=[item.usage_id for item in batch], accounting_status__in=uncharged
        )
        rows = {row["id"]: row for row in locked.order_by("id").values(*RECORD_FIELDS)}
        priced = dict(zip(rows, _priced(list(rows.values())), strict=True))
        records = []
        for item in batch:
            row, new = rows.get(item.usage_id), priced.get(item.usage_id)
            if (
                row is None
                or new is None
                or (row["amount"], row["cost"]) != (item.old_amount, item.old_cost)
                or (new["amount"], new["cost"]) != (item.new_amount, item.new_cost)
            ):
                raise _stale(item.transno, repricing)
            records.append(LLMUsage(id=item.usage_id, **new))
        LLMUsage.objects.bulk_update(records, fields=["amount", "cost", "ownerid", "price"], batch_size=500)
        failures_redescribe(records=LLMUsage.objects.filter(id__in=rows).values("id", *DESCRIBED_FIELDS))
        usage_rollups_refresh(use_times=[row["use_time"] for row in rows.values()])
        last = batch[-1].id
