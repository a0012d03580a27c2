"""Budgets: what a scope of an org spent in a period, kept as a counter the usage path moves.

Spent is a counter per (budget, period), `BudgetSpend`, not a scan. A hold is granted on the hot path
of every LLM call (p99 < 20 ms with a million usage rows), and a month of an org's rows is far too many
to sum per call. The hourly rollups are no substitute: they are per (hour, org, model, status) in UTC,
so they cannot answer a user, key or feature scope, nor a day in a time zone off the hour, and they
lag edits until rebuilt. A counter answers any scope and zone with one row read.

How the counter stays equal to the rows (every record in the period and scope, whatever its
accounting status: pending included, so that posting lag opens no gap):
- ingest, edits, deletes and the posting's late pricing call `budget_usage_apply` with the change
  of each record as plain values (`UsageChange`: +amount when a record appears, -old +new when it
  changes, -amount when it goes), in the same transaction as the change of the row;
- a budget starts from the rows: `budget_create` seeds its current period with a scan of the rows
  (`LLMLOG_BUDGET_SPENT_SCANNER`, a function of llmlog's given by its dotted path: this app never
  imports llmlog, DESIGN.md), and `budget_reconcile` redoes that scan on demand.
The race between a budget being created and a record being ingested is closed by an advisory lock per
org on PostgreSQL: `budget_usage_apply` takes it shared before it reads the org's budgets, budget
creation takes it exclusively before its insert and scan. Either the ingest commits first (and the
scan, which starts after the lock, sees its rows) or the budget does (and the ingest, which reads the
budgets after the lock, counts its records). SQLite has one writer at a time, which does the same.
The nightly move to history changes nothing here; a retention purge does not refund a budget either
(a `total` quota is what was consumed, whatever is kept of its rows).

A record counts in the period of its `use_time` in the budget's time zone; a counter row exists only
for a period something was counted in.
"""

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from accounting.models import Budget, BudgetSpend, Hold
from core.money import quantize_money

TOTAL_PERIOD_START = datetime(1970, 1, 1, tzinfo=UTC)
MAX_THRESHOLDS = 10
# The advisory lock's key space (pg_advisory_xact_lock(int, int)): the first key says "budgets of an
# org", the second is the org's crc32, so no other user of advisory locks collides with it.
ADVISORY_NAMESPACE = 0x6C6C_6D62  # "llmb"


@dataclass(frozen=True)
class UsageChange:
    """One usage record's change of what it counts: +amount when it appears, -amount when it goes."""

    userorgid: str
    userid: str
    token_name: str
    model_name: str
    feature: str
    use_time: datetime
    amount: Decimal


@dataclass(frozen=True)
class BudgetStatus:
    """What a budget answers: spent in the current period, held by active holds, what remains."""

    budget: Budget
    period_start: datetime
    period_end: datetime | None
    spent: Decimal
    held: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.budget.limit - self.spent - self.held

    @property
    def ratio(self) -> Decimal:
        return self.spent / self.budget.limit


# --- periods --------------------------------------------------------------------------------------


def zone_of(name: str) -> ZoneInfo:
    """The zone, or ValueError naming the field."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a folder
        raise ValueError(f"time_zone: {name!r} is not an IANA time zone such as Europe/Paris") from None


def period_bounds(*, period: str, time_zone: str, at: datetime) -> tuple[datetime, datetime | None]:
    """The period of `at`: its start and end (end exclusive; None for `total`), as aware UTC times."""
    if period == Budget.Period.TOTAL:
        return TOTAL_PERIOD_START, None
    zone = zone_of(time_zone)
    local = at.astimezone(zone)
    day = local.date()
    if period == Budget.Period.DAY:
        start_day, end_day = day, day + timedelta(days=1)
    elif period == Budget.Period.WEEK:
        start_day = day - timedelta(days=day.weekday())
        end_day = start_day + timedelta(days=7)
    elif period == Budget.Period.MONTH:
        start_day = day.replace(day=1)
        end_day = (start_day + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"period: must be one of {', '.join(Budget.Period.values)}")

    def midnight(value) -> datetime:  # local midnight; a DST gap at midnight resolves forward
        return datetime(value.year, value.month, value.day, tzinfo=zone).astimezone(UTC)

    return midnight(start_day), midnight(end_day)


def in_scope(budget: Budget, *, userid: str, token_name: str, model_name: str, feature: str) -> bool:
    values = {"userid": userid, "token_name": token_name, "model_name": model_name, "feature": feature}
    return all(
        not getattr(budget, name) or getattr(budget, name) == values[name] for name in Budget.SCOPE_FIELDS
    )


# --- locks ----------------------------------------------------------------------------------------


def _org_key(org: str) -> int:
    return zlib.crc32(org.encode()) - 2**31  # a signed int4


def _lock_org_exclusive(org: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_NAMESPACE, _org_key(org)])


# --- the counters ---------------------------------------------------------------------------------


def budget_usage_apply(*, changes: Sequence[UsageChange]) -> int:
    """Add each record's change to the counters of every budget whose scope it is in, in the period of
    its use_time. Call it inside the transaction that changes the rows. Returns the counters touched.

    An org without budgets costs one round trip (the lock and the read). The counters are written in
    (budget, period) order, one statement: two ingests that touch the same counters queue on them
    rather than deadlock."""
    changes = [change for change in changes if change.amount]
    if not changes:
        return 0
    budgets_of: dict[str, list[tuple[int, str, str, tuple[str, ...]]]] = defaultdict(list)
    for budget_id, org, period, time_zone, *scope in _budgets_of({change.userorgid for change in changes}):
        budgets_of[org].append((budget_id, period, time_zone, tuple(scope)))
    if not budgets_of:
        return 0
    deltas: dict[tuple[int, datetime], Decimal] = defaultdict(Decimal)
    starts: dict[tuple, datetime] = {}  # a bulk request's records share a few periods
    for change in changes:
        values = (change.userid, change.token_name, change.model_name, change.feature)
        for budget_id, period, time_zone, scope in budgets_of.get(change.userorgid, ()):
            if any(wanted and wanted != value for wanted, value in zip(scope, values, strict=True)):
                continue  # an empty scope field means any
            deltas[(budget_id, _period_start(period, time_zone, change.use_time, starts))] += change.amount
    _add_to_counters({key: delta for key, delta in deltas.items() if delta})
    return len(deltas)


def _budgets_of(orgs: set[str]) -> list[tuple]:
    """(id, org, period, time_zone, *SCOPE_FIELDS) of these orgs' budgets, read under the orgs' shared
    lock (see the module docstring)."""
    fields = ("id", "org", "period", "time_zone", *Budget.SCOPE_FIELDS)
    if connection.vendor != "postgresql":
        return list(Budget.objects.filter(org__in=orgs).values_list(*fields))
    columns = ", ".join(connection.ops.quote_name(Budget._meta.get_field(name).column) for name in fields)
    keys = sorted({_org_key(org) for org in orgs})
    # Two statements in one round trip (the simple query protocol, values bound by the client). Under
    # READ COMMITTED each statement reads with a snapshot taken when it starts, so the read sees a budget
    # whose creation the lock waited for; one statement would read with the snapshot taken before the
    # wait. The read is the check "has this org a budget?" of every ingest: one round trip, not two.
    sql = (
        "SELECT pg_advisory_xact_lock_shared(%s, k) FROM unnest(%s::int[]) AS k ORDER BY k; "
        f"SELECT {columns} FROM {Budget._meta.db_table} WHERE org = ANY(%s)"
    )
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.ClientCursor(connection.connection) as cursor:
        cursor.execute(sql, [ADVISORY_NAMESPACE, keys, sorted(orgs)])
        cursor.nextset()
        return cursor.fetchall()


def _period_start(period: str, time_zone: str, at: datetime, starts: dict[tuple, datetime]) -> datetime:
    """period_bounds(...)[0], remembered per local day in `starts`."""
    if period == Budget.Period.TOTAL:
        return TOTAL_PERIOD_START
    key = (period, time_zone, at.astimezone(zone_of(time_zone)).date())
    if key not in starts:
        starts[key] = period_bounds(period=period, time_zone=time_zone, at=at)[0]
    return starts[key]


def _add_to_counters(deltas: dict[tuple[int, datetime], Decimal], *, replace: bool = False) -> None:
    if not deltas:
        return
    table = BudgetSpend._meta.db_table
    rows = sorted(deltas.items())
    placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params: list = []
    # Adapted as the ORM would: SQLite compares the text, which must be the ORM's own format.
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    for (budget_id, start), delta in rows:
        params += [budget_id, adapt(start), connection.ops.adapt_decimalfield_value(delta), now]
    new_value = "EXCLUDED.spent" if replace else f"{table}.spent + EXCLUDED.spent"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (budget_id, period_start, spent, updated_at) VALUES {placeholders} "
            f"ON CONFLICT (budget_id, period_start) DO UPDATE SET spent = {new_value}, "
            "updated_at = EXCLUDED.updated_at",
            params,
        )


def spent_scanner():
    """llmlog's function that sums the rows of a scope and period (a dotted path in settings)."""
    path = getattr(settings, "LLMLOG_BUDGET_SPENT_SCANNER", "")
    return import_string(path) if path else None


def _scan(budget: Budget, start: datetime, end: datetime | None) -> Decimal:
    scanner = spent_scanner()
    if scanner is None:
        return Decimal(0)
    return scanner(
        org=budget.org,
        userid=budget.userid,
        token_name=budget.token_name,
        model_name=budget.model_name,
        feature=budget.feature,
        start=start,
        end=end,
    )


@transaction.atomic
def budget_reconcile(*, budget: Budget, now: datetime | None = None) -> Decimal:
    """Set the current period's counter to the sum of the rows (the creation seed; an operator's check).
    Returns the spent it set."""
    _lock_org_exclusive(budget.org)
    start, end = period_bounds(period=budget.period, time_zone=budget.time_zone, at=now or timezone.now())
    spent = quantize_money(_scan(budget, start, end))
    _add_to_counters({(budget.pk, start): spent}, replace=True)
    return spent


# --- budgets --------------------------------------------------------------------------------------


def checked_thresholds(thresholds: Iterable) -> list[int]:
    values = list(thresholds)
    if not values or len(values) > MAX_THRESHOLDS:
        raise ValueError(f"thresholds: between 1 and {MAX_THRESHOLDS} percents, e.g. [50, 80, 100]")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ValueError("thresholds: each a whole percent from 1 to 1000")
    return sorted(set(values))


@transaction.atomic
def budget_create(
    *,
    org: str,
    limit: Decimal,
    period: str = Budget.Period.MONTH,
    time_zone: str = "",
    userid: str = "",
    token_name: str = "",
    model_name: str = "",
    feature: str = "",
    thresholds: Iterable[int] | None = None,
    action: str = Budget.Action.ALERT,
    name: str = "",
    currency: str = "USD",
    webhook_url: str = "",
    webhook_secret: str = "",
    created_by: str = "",
    now: datetime | None = None,
) -> Budget:
    """A new budget, its current period seeded from the rows. Raises ValueError naming a bad argument."""
    org = org.strip()
    if not org:
        raise ValueError("org: must not be empty")
    if limit <= 0:
        raise ValueError("limit: must be positive")
    if period not in Budget.Period.values:
        raise ValueError(f"period: must be one of {', '.join(Budget.Period.values)}")
    if action not in Budget.Action.values:
        raise ValueError(f"action: must be one of {', '.join(Budget.Action.values)}")
    time_zone = time_zone or settings.TIME_ZONE
    zone_of(time_zone)
    _lock_org_exclusive(org)  # before the insert: see the module docstring
    budget = Budget.objects.create(
        org=org,
        name=name,
        userid=userid,
        token_name=token_name,
        model_name=model_name,
        feature=feature,
        period=period,
        time_zone=time_zone,
        limit=quantize_money(limit),
        currency=currency,
        thresholds=checked_thresholds(thresholds if thresholds is not None else [50, 80, 100]),
        action=action,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        created_by=created_by[:150],
    )
    budget_reconcile(budget=budget, now=now)
    return budget


UPDATABLE_FIELDS = ("name", "limit", "thresholds", "action", "webhook_url", "webhook_secret")


@transaction.atomic
def budget_update(*, budget: Budget, **changes) -> Budget:
    """Change what may change (UPDATABLE_FIELDS); the scope, period and time zone are fixed."""
    fixed = set(changes) - set(UPDATABLE_FIELDS)
    if fixed:
        name = sorted(fixed)[0]
        raise ValueError(f"{name}: fixed once the budget exists; create another budget instead")
    if "limit" in changes:
        if changes["limit"] <= 0:
            raise ValueError("limit: must be positive")
        changes["limit"] = quantize_money(changes["limit"])
    if "thresholds" in changes:
        changes["thresholds"] = checked_thresholds(changes["thresholds"])
    if "action" in changes and changes["action"] not in Budget.Action.values:
        raise ValueError(f"action: must be one of {', '.join(Budget.Action.values)}")
    # Locked against a concurrent update of the same budget (admission reads the limit under the
    # org account's lock, in one statement: the old limit or the new, never half).
    locked = Budget.objects.select_for_update().get(pk=budget.pk)
    for name, value in changes.items():
        setattr(locked, name, value)
    locked.updated_at = timezone.now()
    locked.save()
    return locked


def budget_statuses(*, budgets: Sequence[Budget], now: datetime | None = None) -> list[BudgetStatus]:
    """Spent, held and the period of each budget, now: two queries whatever the number of budgets."""
    now = now or timezone.now()
    periods = {b.pk: period_bounds(period=b.period, time_zone=b.time_zone, at=now) for b in budgets}
    spent = {
        (budget_id, start): value
        for budget_id, start, value in BudgetSpend.objects.filter(budget_id__in=list(periods)).values_list(
            "budget_id", "period_start", "spent"
        )
    }
    holds = list(
        Hold.objects.filter(
            org__in={b.org for b in budgets}, status=Hold.Status.ACTIVE, expires_at__gt=now
        ).values_list("org", "userid", "token_name", "model_name", "feature", "amount")
    )
    statuses = []
    for budget in budgets:
        start, end = periods[budget.pk]
        held = sum(
            (
                amount
                for org, userid, token_name, model_name, feature, amount in holds
                if org == budget.org
                and in_scope(
                    budget, userid=userid, token_name=token_name, model_name=model_name, feature=feature
                )
            ),
            Decimal(0),
        )
        statuses.append(
            BudgetStatus(
                budget=budget,
                period_start=start,
                period_end=end,
                spent=quantize_money(spent.get((budget.pk, start), Decimal(0))),
                held=quantize_money(held),
            )
        )
    return statuses


def budget_status(*, budget: Budget, now: datetime | None = None) -> BudgetStatus:
    (status,) = budget_statuses(budgets=[budget], now=now)
    return status
