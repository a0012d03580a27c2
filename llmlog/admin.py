from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from llmlog.keys import api_key_revoke
from llmlog.models import ApiKey, JobRun, LLMUsage, LLMUsageHistory, ModelPrice


class EstimatedCountPaginator(Paginator):
    """Never COUNT millions of rows for a page: past a bound, say "many" via the bound itself."""

    bound = 10_000

    @cached_property
    def count(self) -> int:
        return len(self.object_list[: self.bound + 1].values_list("pk", flat=True))


class UsageAdminBase(admin.ModelAdmin):
    list_display = (
        "use_time",
        "transno",
        "userorgid",
        "userid",
        "model_name",
        "total_tokens",
        "amount",
        "cost",
        "status",
        "accounting_status",
    )
    list_filter = ("status", "accounting_status", "use_date")
    search_fields = ("=transno", "=userid", "=userorgid", "=model_name", "=token_name")
    ordering = ("-use_time",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # usage is what the gateway reported; operators read it, services change it


@admin.register(LLMUsage)
class LLMUsageAdmin(UsageAdminBase):
    pass


@admin.register(LLMUsageHistory)
class LLMUsageHistoryAdmin(UsageAdminBase):
    list_display = (*UsageAdminBase.list_display, "backup_time")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model_name", "kind", "effective_from", "currency", "input_price", "output_price")
    list_filter = ("kind", "currency")
    search_fields = ("model_name",)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ("name", "userorgid", "role", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("key_prefix", "name", "userorgid", "role", "scopes", "created_at", "revoked_at")
    list_filter = ("role", "revoked_at")
    search_fields = ("name", "userorgid", "key_prefix")
    actions = ("revoke",)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request)

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        raw = obj.assign_new_secret()
        super().save_model(request, obj, form, change)
        messages.warning(request, f"The new API key, shown this once: {raw}")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(JobRun)
class JobRunAdmin(admin.ModelAdmin):
    list_display = ("job", "started_at", "duration", "status", "counts", "error")
    list_filter = ("job", "status")
    ordering = ("-started_at",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="duration (s)")
    def duration(self, run: JobRun) -> str:
        seconds = run.duration_seconds
        return "running" if seconds is None else f"{seconds:.1f}"
