"""Model prices and API keys (a new key is shown once, on the page that created it)."""

from django import forms
from django.contrib import admin
from django.http import HttpResponse
from django.template.response import TemplateResponse

from core.admin import (
    TextSafeAdmin,
)
from llmlog.keys import api_key_revoke
from llmlog.models import ApiKey, ModelPrice


@admin.register(ModelPrice)
class ModelPriceAdmin(TextSafeAdmin):
    list_display = ("model_name", "kind", "effective_from", "currency", "input_price", "output_price")
    list_filter = ("kind", "currency")
    search_fields = ("model_name",)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ("name", "userorgid", "role", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(TextSafeAdmin):
    form = ApiKeyForm
    list_display = ("key_prefix", "name", "userorgid", "role", "scopes", "created_at", "revoked_at")
    list_filter = ("role", "revoked_at")
    search_fields = ("name", "userorgid", "key_prefix")
    actions = ("revoke",)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request)

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        obj._new_raw_key = obj.assign_new_secret()  # never stored: response_add shows it, then it is gone
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiKey, post_url_continue=None) -> HttpResponse:
        """The new key, shown once on this page: not in a message (Django keeps messages in a cookie),
        not in a redirect's URL, not cached."""
        context = {
            **self.admin_site.each_context(request),
            "title": "New API key",
            "opts": self.opts,
            "key": obj,
            "raw_key": obj._new_raw_key,
        }
        response = TemplateResponse(request, "admin/llmlog/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
