"""Accounts (top-up, freeze), the ledger (read-only), and the ledger's half of the failed-postings page.

The failed-postings page is registered by llmlog's admin
(`llmlog.admin.failures.AccountingFailureRetryAdmin`): it subclasses `AccountingFailureAdmin` below with
"Retry now" (which reads usage rows), the big-table filters and CSV export, because accounting never
imports llmlog. There is one failures admin, registered once, there.

Every list here is bounded: the ledger grows by one transaction and three lines per usage record, and
failures can pile up by the million when an org has no account, so no page COUNTs a whole table.
"""

from collections import Counter
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from accounting.failures import FailureStateError, failure_ignore, failure_resolve
from accounting.ledger import LedgerError, account_create, account_update, ledger_topup
from accounting.models import Account, AccountingFailure, LedgerLine, LedgerTransaction
from core.admin import (
    BigListAdmin,
    BoundedCountPaginator,
    ExactSearchAdmin,
    TextSafeAdmin,
    as_uuid,
    reasons,
    too_many,
)
from core.formats import money_html, time_text
from core.money import MONEY_DIGITS, MONEY_PLACES, MONEY_QUANTUM

# How much of an error message the failures list shows; the full text is in the tooltip and on the row.
SHORT_ERROR_CHARS = 60


class ReadOnlyAdmin(ExactSearchAdmin, BigListAdmin):
    """The ledger is written by the ledger services only."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def outcome_message(*, verb: str, done: int, failed: Counter[str]) -> str:
    """ "Resolved 3 failure(s); 1 failed (1 already resolved)." — the reasons, most frequent first."""
    return f"{verb} {done} failure(s); {failed.total()} failed{reasons(failed)}."


# --- accounts -------------------------------------------------------------------------------------


class AccountForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=Account.CREATABLE_KIND_CHOICES)

    class Meta:
        model = Account
        fields = ("org", "kind", "currency", "credit_limit", "status")


class TopupForm(forms.Form):
    amount = forms.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, min_value=MONEY_QUANTUM)
    reference = forms.CharField(
        max_length=100, required=False, help_text="Optional: the same reference twice tops up once."
    )
    memo = forms.CharField(max_length=255, required=False)


@admin.register(Account)
class AccountAdmin(TextSafeAdmin):
    form = AccountForm
    # What fits 1440 px beside the filters: money right-aligned with its currency (tests/e2e).
    list_display = (
        "org",
        "kind",
        "balance_display",
        "credit_limit_display",
        "available",
        "status",
        "ledger_lines",
    )
    list_filter = ("kind", "status", "currency")
    search_fields = ("=org",)
    search_help_text = "Exact org id."
    ordering = ("org", "kind")
    actions = ("topup", "freeze", "unfreeze")

    def get_readonly_fields(self, request: HttpRequest, obj: Account | None = None) -> tuple[str, ...]:
        # An account's identity never changes once it has lines; only its limit and status do.
        return ("org", "kind", "currency", "balance") if obj else ("balance",)

    def get_form(self, request: HttpRequest, obj: Account | None = None, change: bool = False, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm  # kind is read-only on change: the plain form
        return super().get_form(request, obj, change=change, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Account | None = None) -> bool:
        return False  # its lines refer to it (PROTECT); freeze it instead

    def save_model(self, request: HttpRequest, obj: Account, form: forms.ModelForm, change: bool) -> None:
        if change:
            account_update(account=obj, credit_limit=obj.credit_limit, status=obj.status)
            return
        created = account_create(
            org=obj.org,
            kind=obj.kind,
            currency=obj.currency,
            credit_limit=obj.credit_limit,
            status=obj.status,
        )
        obj.pk, obj.created_at, obj.updated_at = created.pk, created.created_at, created.updated_at

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, account: Account) -> str:
        return money_html(account.balance, currency=account.currency)

    @admin.display(description="credit limit", ordering="credit_limit")
    def credit_limit_display(self, account: Account) -> str:
        return money_html(account.credit_limit, currency=account.currency)

    @admin.display(description="available")
    def available(self, account: Account) -> Decimal | str:
        """What a customer can still spend: balance plus credit limit."""
        if account.kind != Account.Kind.CUSTOMER:
            return "-"
        return money_html(account.balance + account.credit_limit, currency=account.currency)

    @admin.display(description="ledger")
    def ledger_lines(self, account: Account) -> str:
        url = reverse("admin:accounting_ledgerline_changelist") + f"?account__id__exact={account.pk}"
        return format_html('<a href="{}">lines</a>', url)

    @admin.action(description="Top up the selected accounts", permissions=["change"])
    def topup(self, request: HttpRequest, queryset: QuerySet[Account]) -> TemplateResponse | None:
        form = TopupForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, repeated, errors = 0, 0, []
            reference = form.cleaned_data["reference"]
            for account in queryset:
                try:
                    _, created = ledger_topup(
                        org=account.org,
                        kind=account.kind,
                        amount=form.cleaned_data["amount"],
                        reference=f"{reference}:{account.pk}" if reference else "",
                        memo=form.cleaned_data["memo"],
                        created_by=request.user.get_username(),
                    )
                except (LedgerError, ValueError) as exc:
                    errors.append(f"{account}: {exc}")
                    continue
                done += created
                repeated += not created
            message = f"Topped up {done} account(s); {len(errors)} failed."
            if repeated:
                message += f" {repeated} already topped up with this reference: not again."
            self.message_user(request, message, level=messages.WARNING if errors else messages.SUCCESS)
            for error in errors:
                self.message_user(request, error, level=messages.ERROR)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Top up accounts",
            "opts": self.model._meta,
            "form": form,
            "accounts": queryset,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/accounting/account/topup.html", context)

    @admin.action(description="Freeze the selected accounts (postings to them fail)", permissions=["change"])
    def freeze(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._set_status(request, queryset, Account.Status.FROZEN)

    @admin.action(description="Unfreeze the selected accounts", permissions=["change"])
    def unfreeze(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._set_status(request, queryset, Account.Status.ACTIVE)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Account], status: str) -> None:
        accounts = list(queryset)
        for account in accounts:
            account_update(account=account, status=status)
        self.message_user(request, f"{len(accounts)} account(s) now {status}.")


# --- the ledger -----------------------------------------------------------------------------------


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
    fields = ("account", "amount")
    readonly_fields = fields
    extra = 0
    can_delete = False

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
        "amount",
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


# --- failed postings ------------------------------------------------------------------------------


class AccountingFailureAdmin(ExactSearchAdmin, BigListAdmin):
    """The failed-postings page ("failed_accounting.ui"), the ledger's half: what it lists, search by
    transno, resolve and ignore (who and when are recorded). Not registered here: see the module's
    docstring. The rows are written by posting only; an operator acts on them through the actions."""

    # What an operator needs at 3 am, inside 1440 px beside the filters (tests/e2e); the user, model,
    # cost and first failure are on the row's page and in the CSV export.
    list_display = (
        "last_failed",
        "transno",
        "userorgid",
        "error_code",
        "attempts",
        "last_error",
        "amount_display",
        "state",
    )
    list_display_links = ("transno",)
    search_fields = ("=transno", "=usage_id")
    search_help_text = "Exact transno (or the usage record's id)."
    # Newest failure first, as llmage's get_failed_accounting_records; the filters' indexes (use_date,
    # userorgid + use_date) narrow the rows to sort.
    ordering = ("-last_failed_at", "-id")
    fieldsets = (
        (None, {"fields": ("transno", "usage_id", "status", "resolved_by", "resolved_at")}),
        (
            "Error",
            {"fields": ("error_code", "error_message", "attempts", "first_failed_at", "last_failed_at")},
        ),
        ("Retry", {"fields": ("next_retry_at",)}),
        (
            "Record",
            {
                "fields": (
                    "use_date",
                    "userorgid",
                    "userid",
                    "ownerid",
                    "llmid",
                    "model_name",
                    "amount",
                    "cost",
                )
            },
        ),
    )
    actions = ("resolve", "ignore")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # failures are recorded by posting

    def has_delete_permission(self, request: HttpRequest, obj: AccountingFailure | None = None) -> bool:
        return False  # the record of what failed stays: resolve or ignore it

    def get_readonly_fields(self, request: HttpRequest, obj: AccountingFailure | None = None) -> list[str]:
        return [field.name for field in AccountingFailure._meta.fields]

    def search_matches(self, queryset: QuerySet, term: str) -> QuerySet:
        """Exact and case-sensitive, so the transno index (or usage_id's unique one) answers it."""
        uuid = as_uuid(term)
        return queryset.filter(Q(transno=term) | Q(usage_id=uuid) if uuid is not None else Q(transno=term))

    @admin.display(description="last failed", ordering="last_failed_at")
    def last_failed(self, failure: AccountingFailure) -> str:
        return time_text(failure.last_failed_at)

    @admin.display(description="first failed", ordering="first_failed_at")
    def first_failed(self, failure: AccountingFailure) -> str:
        return time_text(failure.first_failed_at)

    @admin.display(description="status", ordering="status")
    def state(self, failure: AccountingFailure) -> str:
        """Open, or who closed it and when."""
        if failure.status == AccountingFailure.Status.OPEN:
            return failure.get_status_display()
        return format_html(
            "{}<br><small>by {} at {}</small>",
            failure.get_status_display(),
            failure.resolved_by or "?",
            time_text(failure.resolved_at) if failure.resolved_at else "?",
        )

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, failure: AccountingFailure) -> str:
        return money_html(failure.amount)

    @admin.display(description="last error")
    def last_error(self, failure: AccountingFailure) -> str:
        short = Truncator(failure.error_message).chars(SHORT_ERROR_CHARS)
        return format_html('<span title="{}">{}</span>', failure.error_message, short)

    @admin.action(description="Resolve (settled outside the ledger)", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        if too_many(self, request, queryset):
            return
        done, failed = 0, Counter()
        for failure in queryset:
            if failure.status == AccountingFailure.Status.RESOLVED:
                failed["already resolved"] += 1
                continue
            failure_resolve(failure=failure, by=request.user.get_username())
            done += 1
        self._report(request, outcome_message(verb="Resolved", done=done, failed=failed), failed)

    @admin.action(description="Ignore (never post; the scheduled retry skips them)", permissions=["change"])
    def ignore(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        if too_many(self, request, queryset):
            return
        done, failed = 0, Counter()
        for failure in queryset:
            if failure.status == AccountingFailure.Status.IGNORED:
                failed["already ignored"] += 1
                continue
            try:
                failure_ignore(failure=failure, by=request.user.get_username())
                done += 1
            except FailureStateError:
                failed["already resolved"] += 1
        self._report(request, outcome_message(verb="Ignored", done=done, failed=failed), failed)

    def _report(self, request: HttpRequest, message: str, failed: Counter[str]) -> None:
        self.message_user(request, message, level=messages.WARNING if failed else messages.SUCCESS)


# The budgets page, holds and the alert log (issue 19) live in their own module; registered on import.
from accounting import budget_admin  # noqa: E402, F401
