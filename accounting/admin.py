from django.contrib import admin

from accounting.models import AccountingFailure


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
        "status",
    )
    list_filter = ("status", "error_code", "use_date")
    search_fields = ("=transno", "=userorgid", "=userid", "=model_name")
    show_full_result_count = False
