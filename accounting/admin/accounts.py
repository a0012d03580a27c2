"""Accounts: create (customer or owner), change the credit limit, top up, freeze and unfreeze, each through
`accounting.accounts` or `accounting.ledger`; an account's identity never changes once it exists."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from accounting.accounts import account_create, account_update
from accounting.ledger import LedgerError, ledger_topup
from accounting.models import Account
from core.admin import TextSafeAdmin
from core.formats import money_html
from core.money import MONEY_DIGITS, MONEY_PLACES, MONEY_QUANTUM


class AccountForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=Account.CREATABLE_KIND_CHOICES)

    class Meta:
        model = Account
        fields = ("org", "kind", "currency", "credit_limit", "status", "time_zone")


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
            account_update(
                account=obj, credit_limit=obj.credit_limit, status=obj.status, time_zone=obj.time_zone
            )
            return
        created = account_create(
            org=obj.org,
            kind=obj.kind,
            currency=obj.currency,
            credit_limit=obj.credit_limit,
            status=obj.status,
            time_zone=obj.time_zone,
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
