"""Accounts (top-up, freeze), the ledger (read-only), and failed postings (resolve, ignore).

"Retry now" on failed postings reads usage rows, so llmlog's admin adds it (accounting never imports
llmlog)."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.functional import cached_property

from accounting.failures import FailureStateError, failure_ignore, failure_resolve
from accounting.ledger import LedgerError, account_create, account_update, ledger_topup
from accounting.models import Account, AccountingFailure, LedgerLine, LedgerTransaction


class BoundedCountPaginator(Paginator):
    """The ledger grows by one transaction per usage record: never COUNT it all for a page."""

    bound = 10_000

    @cached_property
    def count(self) -> int:
        return len(self.object_list[: self.bound + 1].values_list("pk", flat=True))


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is written by the ledger services only."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- accounts -------------------------------------------------------------------------------------


class AccountForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=Account.CREATABLE_KIND_CHOICES)

    class Meta:
        model = Account
        fields = ("org", "kind", "currency", "credit_limit", "status")


class TopupForm(forms.Form):
    amount = forms.DecimalField(max_digits=18, decimal_places=5, min_value=Decimal("0.00001"))
    reference = forms.CharField(
        max_length=128, required=False, help_text="Optional: the same reference twice tops up once."
    )
    memo = forms.CharField(max_length=255, required=False)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = ("org", "kind", "currency", "balance", "credit_limit", "status", "updated_at")
    list_filter = ("kind", "status", "currency")
    search_fields = ("=org",)
    ordering = ("org", "kind")
    actions = ("topup", "freeze", "unfreeze")

    def get_readonly_fields(self, request, obj=None) -> tuple[str, ...]:
        # An account's identity never changes once it has lines; only its limit and status do.
        return ("org", "kind", "currency", "balance") if obj else ("balance",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm  # kind is read-only on change: the plain form
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj: Account, form, change: bool) -> None:
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

    @admin.action(description="Top up the selected accounts")
    def topup(self, request: HttpRequest, queryset: QuerySet[Account]) -> TemplateResponse | None:
        form = TopupForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, failed = 0, []
            for account in queryset:
                reference = form.cleaned_data["reference"]
                try:
                    ledger_topup(
                        org=account.org,
                        kind=account.kind,
                        amount=form.cleaned_data["amount"],
                        reference=f"{reference}:{account.pk}" if reference else "",
                        memo=form.cleaned_data["memo"],
                        created_by=request.user.get_username(),
                    )
                    done += 1
                except (LedgerError, ValueError) as exc:
                    failed.append(f"{account}: {exc}")
            self.message_user(request, f"Topped up {done} account(s); {len(failed)} failed.")
            for message in failed:
                self.message_user(request, message, level=messages.ERROR)
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

    @admin.action(description="Freeze the selected accounts (postings to them fail)")
    def freeze(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._set_status(request, queryset, Account.Status.FROZEN)

    @admin.action(description="Unfreeze the selected accounts")
    def unfreeze(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._set_status(request, queryset, Account.Status.ACTIVE)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Account], status: str) -> None:
        accounts = list(queryset)
        for account in accounts:
            account_update(account=account, status=status)
        self.message_user(request, f"{len(accounts)} account(s) now {status}.")


# --- the ledger -----------------------------------------------------------------------------------


class LedgerLineInline(admin.TabularInline):
    model = LedgerLine
    fields = ("account", "amount")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "reference", "amount", "currency", "usage_id", "created_by")
    list_filter = ("kind", "currency")
    search_fields = ("=reference",)
    ordering = ("-id",)  # time-ordered (uuid7): newest first, by the primary key's index
    inlines = (LedgerLineInline,)
    paginator = BoundedCountPaginator
    show_full_result_count = False


@admin.register(LedgerLine)
class LedgerLineAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "amount", "transaction_kind", "reference", "created_at")
    list_filter = ("account__kind", "transaction__kind")
    search_fields = ("=account__org", "=transaction__reference")
    list_select_related = ("account", "transaction")
    ordering = ("-id",)
    paginator = BoundedCountPaginator
    show_full_result_count = False

    @admin.display(description="kind")
    def transaction_kind(self, line: LedgerLine) -> str:
        return line.transaction.kind

    @admin.display(description="reference")
    def reference(self, line: LedgerLine) -> str:
        return line.transaction.reference

    @admin.display(description="created at")
    def created_at(self, line: LedgerLine):
        return line.transaction.created_at


# --- failed postings ------------------------------------------------------------------------------


@admin.register(AccountingFailure)
class AccountingFailureAdmin(admin.ModelAdmin):
    list_display = (
        "last_failed_at",
        "transno",
        "userorgid",
        "userid",
        "model_name",
        "amount",
        "error_code",
        "attempts",
        "next_retry_at",
        "status",
        "resolved_by",
    )
    list_filter = ("status", "error_code", "use_date")
    search_fields = ("=transno", "=userorgid", "=userid", "=model_name", "=llmid")
    show_full_result_count = False
    actions = ("resolve", "ignore")

    def has_add_permission(self, request) -> bool:
        return False  # failures are recorded by posting

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        return [field.name for field in AccountingFailure._meta.fields]

    @admin.action(description="Resolve (settled outside the ledger)")
    def resolve(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        failures = list(queryset)
        for failure in failures:
            failure_resolve(failure=failure, by=request.user.get_username())
        self.message_user(request, f"Resolved {len(failures)} failure(s); 0 failed.")

    @admin.action(description="Ignore (never post; the scheduled retry skips them)")
    def ignore(self, request: HttpRequest, queryset: QuerySet[AccountingFailure]) -> None:
        done, failed = 0, 0
        for failure in queryset:
            try:
                failure_ignore(failure=failure, by=request.user.get_username())
                done += 1
            except FailureStateError:
                failed += 1
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(
            request, f"Ignored {done} failure(s); {failed} failed (already resolved).", level=level
        )
