"""The budgets page (spent / held / limit bars, filter by org, its alert log), holds and alert deliveries.

Imported by accounting.admin (the package), which registers every page of the app. Saving a budget goes
through the services (budget_create seeds its counter from the rows; budget_update locks it like
admission does).
"""

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from accounting.budgets import (
    UPDATABLE_FIELDS,
    BudgetStatus,
    budget_create,
    budget_status,
    budget_statuses,
    budget_update,
    checked_thresholds,
    zone_of,
)
from accounting.models import Budget, BudgetAlert, Hold
from core.formats import money_html, money_text, time_text


class BudgetAlertInline(admin.TabularInline):
    model = BudgetAlert
    extra = 0
    can_delete = False
    ordering = ["-id"]
    fields = ("period_start", "threshold", "spent", "status", "attempts", "last_status_code", "last_error")
    readonly_fields = fields
    max_num = 0  # read-only: alerts are made by the job

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class BudgetForm(forms.ModelForm):
    webhook_secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="Leave empty to keep it."
    )

    class Meta:
        model = Budget
        fields = (*Budget.CHOSEN_FIELDS, "webhook_secret")

    def clean(self) -> dict:
        data = super().clean()
        try:
            if "thresholds" in data:
                data["thresholds"] = checked_thresholds(data["thresholds"])
            if data.get("time_zone"):
                zone_of(data["time_zone"])
        except ValueError as exc:
            name, _, message = str(exc).partition(": ")
            raise forms.ValidationError({name: message}) from None
        return data


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetForm
    list_display = (
        "__str__",
        "org",
        "period",
        "action",
        "usage_bar",
        "spent_text",
        "held_text",
        "limit_text",
    )
    list_filter = ("org", "period", "action")
    search_fields = ("org", "name", "userid", "token_name", "model_name", "feature")
    inlines = [BudgetAlertInline]
    list_per_page = 50

    def get_readonly_fields(self, request: HttpRequest, obj: Budget | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("org", *Budget.SCOPE_FIELDS, "period", "time_zone", "currency")  # fixed once created

    def get_changelist_instance(self, request: HttpRequest):
        changelist = super().get_changelist_instance(request)
        # One read of the counters and holds for the whole page, not one per row. Each status goes on
        # its own budget object, which this request alone holds: the ModelAdmin is one instance shared
        # by every request and thread of the process, so nothing of a request is kept on it.
        for status in budget_statuses(budgets=list(changelist.result_list)):
            status.budget.page_status = status
        return changelist

    def _status(self, budget: Budget) -> BudgetStatus:
        status = getattr(budget, "page_status", None)
        if status is None:  # a budget shown outside the changelist's page
            status = budget.page_status = budget_status(budget=budget)
        return status

    @admin.display(description="spent / held of the limit")
    def usage_bar(self, budget: Budget) -> str:
        status = self._status(budget)
        limit = budget.limit or Decimal(1)
        spent = min(100, int(status.spent * 100 / limit))
        held = min(100 - spent, int(status.held * 100 / limit))
        colour = "#ba2121" if spent >= 100 else "#c98a00" if spent >= 80 else "#447e9b"
        return format_html(
            '<div title="{}% spent, {}% held" style="width:160px;height:10px;background:#eee;display:flex">'
            '<div style="width:{}%;background:{}"></div><div style="width:{}%;background:#9bc"></div></div>',
            spent,
            held,
            spent,
            colour,
            held,
        )

    @admin.display(description="spent")
    def spent_text(self, budget: Budget) -> str:
        return money_html(self._status(budget).spent)

    @admin.display(description="held")
    def held_text(self, budget: Budget) -> str:
        return money_html(self._status(budget).held)

    @admin.display(description="limit")
    def limit_text(self, budget: Budget) -> str:
        return money_html(budget.limit, currency=budget.currency)

    def save_model(self, request: HttpRequest, obj: Budget, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            changes = {name: data[name] for name in UPDATABLE_FIELDS if name in form.changed_data}
            if not data.get("webhook_secret"):
                changes.pop("webhook_secret", None)
            saved = budget_update(budget=Budget.objects.get(pk=obj.pk), **changes)
        else:
            saved = budget_create(
                **{name: data[name] for name in BudgetForm.Meta.fields if name in data},
                created_by=request.user.get_username(),
            )
        obj.pk = saved.pk


@admin.register(Hold)
class HoldAdmin(admin.ModelAdmin):
    list_display = (
        "transno",
        "org",
        "amount_text",
        "status",
        "token_name",
        "model_name",
        "created",
        "expires",
    )
    list_filter = ("status", "org")
    search_fields = ("=transno", "=org")
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="amount")
    def amount_text(self, hold: Hold) -> str:
        return money_html(hold.amount, currency=hold.currency)

    @admin.display(description="created", ordering="created_at")
    def created(self, hold: Hold) -> str:
        return time_text(hold.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, hold: Hold) -> str:
        return time_text(hold.expires_at)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    """The alert log: every crossing and how its webhook delivery went."""

    list_display = (
        "budget",
        "threshold",
        "period",
        "spent_text",
        "status",
        "attempts",
        "last_status_code",
        "error",
    )
    list_filter = ("status", "threshold", "budget__org")
    list_select_related = ("budget",)
    search_fields = ("budget__org", "budget__name")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[BudgetAlert]:
        return super().get_queryset(request).select_related("budget")

    @admin.display(description="period", ordering="period_start")
    def period(self, alert: BudgetAlert) -> str:
        return time_text(alert.period_start)

    @admin.display(description="spent")
    def spent_text(self, alert: BudgetAlert) -> str:
        return f"{money_text(alert.spent)} of {money_text(alert.limit)}"

    @admin.display(description="last error")
    def error(self, alert: BudgetAlert) -> str:
        return alert.last_error[:80]
