"""The ledger, read-only: transactions with their lines, and lines by account. Written by the ledger
services only; searched by usage id, transaction id, org (its newest 10,000) or a top-up's reference,
each through an index."""

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from accounting.models import Account, LedgerLine, LedgerTransaction
from core.admin import BigListAdmin, BoundedCountPaginator, ExactSearchAdmin, as_uuid
from core.formats import money_html


class ReadOnlyAdmin(ExactSearchAdmin, BigListAdmin):
    """The ledger is written by the ledger services only."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def org_account_ids(org: str) -> list[int]:
    """The accounts of an org (a customer and an owner account at most): read first, so that the lines'
    (account, -id) index answers the rest."""
    return list(Account.objects.filter(org=org).values_list("pk", flat=True))


def reference_match(term: str) -> Q:
    """A top-up's or adjustment's reference, in the form of the partial unique index that serves it
    (ledger_transaction_reference_idempotency). A usage transaction's reference is its transno, which
    no ledger index holds: search usage by its id, or the transno on the failures and usage pages."""
    return Q(reference=term) & ~Q(kind=LedgerTransaction.Kind.USAGE) & ~Q(reference="")


class LedgerLineInline(admin.TabularInline):
    model = LedgerLine
    fields = ("account", "amount_display")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="amount")
    def amount_display(self, line: LedgerLine) -> str:
        return money_html(line.amount)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "kind",
        "reference",
        "amount_display",
        "currency",
        "usage_id",
        "memo",
        "created_by",
    )
    list_filter = ("kind", "currency")
    search_fields = ("=usage_id", "=id", "=reference")  # and an org: see get_search_results
    search_help_text = "A usage id or transaction id; an org (its newest 10,000); a top-up's reference."
    ordering = ("-id",)  # time-ordered (uuid7): newest first, by the primary key's index
    inlines = (LedgerLineInline,)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, transaction: LedgerTransaction) -> str:
        return money_html(transaction.amount)

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        uuid = as_uuid(term)
        if uuid is not None:  # served by the primary key and the unique usage_id index
            return queryset.filter(Q(pk=uuid) | Q(usage_id=uuid))
        # An org's transactions: the ids of its newest lines (the (account, -id) index), bounded like
        # the list's count, so a big org costs no more than a small one.
        newest = (
            LedgerLine.objects.filter(account_id__in=org_account_ids(term))
            .order_by("-id")
            .values("transaction_id")[: BoundedCountPaginator.bound + 1]
        )
        return queryset.filter(Q(pk__in=newest) | reference_match(term))


@admin.register(LedgerLine)
class LedgerLineAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "amount_display",
        "transaction_kind",
        "reference",
        "usage_id",
        "created_at",
    )
    list_filter = ("account__kind", "transaction__kind")
    search_fields = ("=account__org", "=transaction__usage_id", "=transaction__reference")
    search_help_text = "An org, a usage id or transaction id, or a top-up's reference (exact)."
    list_select_related = ("account", "transaction")
    ordering = ("-id",)

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        uuid = as_uuid(term)
        if uuid is not None:
            transactions = LedgerTransaction.objects.filter(Q(pk=uuid) | Q(usage_id=uuid)).values("pk")
            return queryset.filter(transaction_id__in=transactions)
        topups = LedgerTransaction.objects.filter(reference_match(term)).values("pk")
        return queryset.filter(Q(account_id__in=org_account_ids(term)) | Q(transaction_id__in=topups))

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, line: LedgerLine) -> str:
        return money_html(line.amount)

    @admin.display(description="kind")
    def transaction_kind(self, line: LedgerLine) -> str:
        return line.transaction.kind

    @admin.display(description="reference")
    def reference(self, line: LedgerLine) -> str:
        return line.transaction.reference

    @admin.display(description="usage id")
    def usage_id(self, line: LedgerLine):
        return line.transaction.usage_id

    @admin.display(description="created at")
    def created_at(self, line: LedgerLine):
        return line.transaction.created_at
