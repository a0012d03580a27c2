"""Edits are the platform's: only a platform admin changes or deletes a usage record (DESIGN.md: "Only a
platform admin edits or deletes usage"); any org key, whatever its role or the field, gets a 403 naming
why and nothing changes. Every edit and delete is audited in its own transaction, and a record that no
longer owes anything closes its open accounting failure."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from accounting.failures import failure_record
from accounting.models import AccountingFailure
from llmlog.edits import usage_delete, usage_update
from llmlog.models import LLMUsage, UsageAudit
from tests.conftest import bearer
from tests.factories import QUERY_RECORD, make_usage

pytestmark = pytest.mark.django_db


def failed_usage(**overrides) -> tuple[LLMUsage, AccountingFailure]:
    """A record whose posting failed (no account), with its open failure row."""
    usage = make_usage(QUERY_RECORD, accounting_status="failed", **overrides)
    failure = failure_record(
        usage_id=usage.pk,
        transno=usage.transno,
        use_date=usage.use_date,
        userorgid=usage.userorgid,
        error_code="no_account",
        error_message="Org 'acme' has no customer account.",
        amount=usage.amount,
        cost=usage.cost,
    )
    return usage, failure


def patch(api, key: str, usage: LLMUsage, body: dict):
    return api.patch(f"/api/llmusage/{usage.pk}/", body, format="json", **bearer(key))


def refusal(doing: str) -> str:
    """The 403's detail for an org key (llmlog.api.views.LLMUsageViewSet._editor)."""
    return f"Only a platform admin (a platform key with role admin or owner) may {doing} a usage record."


# --- an org key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
@pytest.mark.parametrize(
    "body",
    [{"amount": "0"}, {"cost": "0"}, {"ownerid": "acme"}, {"price": {}}, {"currency": "EUR"}],
    ids=lambda body: next(iter(body)),
)
def test_an_org_key_may_not_change_money_fields(api, make_key, role, body):
    usage = make_usage(QUERY_RECORD, accounting_status="pending")

    response = patch(api, make_key(org="acme", role=role), usage, {**body, "feature": "x"})

    assert response.status_code == 403
    assert response.json() == {"detail": refusal("change")}
    usage.refresh_from_db()
    assert (usage.amount, usage.cost, usage.ownerid, usage.feature) == (
        Decimal("0.01000"),
        Decimal("0.00800"),
        "openai",
        "",
    )
    assert not UsageAudit.objects.exists()


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_an_org_key_may_not_delete_its_unpaid_usage(api, make_key, role):
    usage, failure = failed_usage()

    response = api.delete(f"/api/llmusage/{usage.pk}/", **bearer(make_key(org="acme", role=role)))

    assert response.status_code == 403
    assert response.json() == {"detail": refusal("delete")}
    assert LLMUsage.objects.filter(pk=usage.pk).exists()
    failure.refresh_from_db()
    assert failure.status == "open"


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_an_org_admin_may_not_correct_even_a_descriptive_field(api, make_key, role):
    usage = make_usage(QUERY_RECORD, accounting_status="pending", feature="chat")

    response = patch(api, make_key(org="acme", role=role), usage, {"feature": "agent"})

    assert response.status_code == 403
    assert response.json() == {"detail": refusal("change")}
    usage.refresh_from_db()
    assert usage.feature == "chat"
    assert not UsageAudit.objects.exists()


# --- a platform admin -----------------------------------------------------------------------------


def test_a_platform_admins_descriptive_correction_is_audited(api, platform_key):
    usage = make_usage(QUERY_RECORD, accounting_status="pending", feature="chat")

    response = patch(api, platform_key, usage, {"feature": "agent"})

    assert response.status_code == 200
    assert response.json()["feature"] == "agent"
    audit = UsageAudit.objects.get()
    assert (audit.action, audit.before, audit.after) == ("update", {"feature": "chat"}, {"feature": "agent"})
    assert audit.actor.startswith("api key llk_")


def test_a_platform_admin_zeroes_a_failed_record_audited_and_its_failure_closed(api, platform_key):
    usage, failure = failed_usage()

    response = patch(api, platform_key, usage, {"amount": "0", "cost": "0"})

    assert response.status_code == 200
    usage.refresh_from_db()
    assert (usage.amount, usage.cost, usage.accounting_status) == (Decimal(0), Decimal(0), "skipped")
    audit = UsageAudit.objects.get(usage_id=usage.pk)
    assert audit.action == "update" and audit.transno == usage.transno and audit.userorgid == "acme"
    assert audit.before == {"amount": "0.01000", "cost": "0.00800", "accounting_status": "failed"}
    assert audit.after == {"amount": "0.00000", "cost": "0.00000", "accounting_status": "skipped"}
    failure.refresh_from_db()
    assert failure.status == "resolved" and failure.resolved_at is not None
    assert "corrected to amount 0" in failure.resolved_by and "api key" in failure.resolved_by


def test_a_platform_admin_deletes_a_failed_record_audited_and_its_failure_closed(api, platform_key):
    usage, failure = failed_usage()

    response = api.delete(f"/api/llmusage/{usage.pk}/", **bearer(platform_key))

    assert response.status_code == 204
    assert not LLMUsage.objects.filter(pk=usage.pk).exists()
    audit = UsageAudit.objects.get(usage_id=usage.pk)
    assert audit.action == "delete" and audit.after is None
    assert audit.before["transno"] == usage.transno and audit.before["amount"] == "0.01000"
    failure.refresh_from_db()
    assert failure.status == "resolved" and "deleted" in failure.resolved_by


def test_a_non_zero_correction_leaves_the_failure_open(api, platform_key):
    usage, failure = failed_usage()

    assert patch(api, platform_key, usage, {"amount": "0.02"}).status_code == 200

    failure.refresh_from_db()
    assert failure.status == "open"
    assert UsageAudit.objects.get().before == {"amount": "0.01000"}
    assert failure.amount == Decimal("0.02")  # the failures page shows what the record owes now


def test_a_corrected_failed_record_is_found_among_the_failures_by_what_it_now_says(api, platform_key):
    usage, failure = failed_usage()

    body = {"model_name": "gpt-4o-mini", "userid": "u-corrected", "amount": "0.5"}
    assert patch(api, platform_key, usage, body).status_code == 200

    failure.refresh_from_db()
    assert (failure.model_name, failure.userid, failure.amount) == (
        "gpt-4o-mini",
        "u-corrected",
        Decimal("0.5"),
    )
    found = api.get("/api/accounting-failures/?model_name=gpt-4o-mini", **bearer(platform_key)).json()
    assert [f["transno"] for f in found["results"]] == [usage.transno]


def test_an_ignored_failure_stays_ignored_when_its_record_is_deleted():
    usage, failure = failed_usage()
    AccountingFailure.objects.filter(pk=failure.pk).update(status="ignored", resolved_by="ops")

    usage_delete(id=usage.pk, actor="ops")

    failure.refresh_from_db()
    assert (failure.status, failure.resolved_by) == ("ignored", "ops")


def test_a_change_to_nothing_writes_no_audit_row():
    usage = make_usage(QUERY_RECORD, accounting_status="pending", feature="chat")

    usage_update(id=usage.pk, changes={"feature": "chat"}, actor="ops")

    assert not UsageAudit.objects.exists()


def test_a_failing_edit_leaves_no_audit_row(monkeypatch):
    """The audit row and the change commit together or not at all."""
    usage = make_usage(QUERY_RECORD, accounting_status="pending")

    def broken(**kwargs):
        raise RuntimeError("rollups down")

    monkeypatch.setattr("llmlog.edits.usage_rollups_refresh", broken)
    with pytest.raises(RuntimeError):
        usage_update(id=usage.pk, changes={"amount": Decimal("2")}, actor="ops")

    usage.refresh_from_db()
    assert usage.amount == Decimal("0.01000")
    assert not UsageAudit.objects.exists()


# --- the admin ------------------------------------------------------------------------------------


def test_an_admin_edit_is_audited_and_listed_on_the_record_and_the_audit_page(admin_client):
    usage = make_usage(
        QUERY_RECORD, accounting_status="pending", model_name="gpt-4o", amount=Decimal("0.01000")
    )
    url = reverse("admin:llmlog_llmusage_change", args=[usage.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    data.update(model_name="gpt-4o", amount="0.03000", code="200", status="success")

    assert admin_client.post(url, data).status_code == 302

    audit = UsageAudit.objects.get(usage_id=usage.pk)
    assert audit.actor == "admin"
    assert (audit.before["amount"], audit.after["amount"]) == ("0.01000", "0.03000")
    assert "model_name" not in audit.before  # unchanged fields are not audited
    page = admin_client.get(url).content.decode()
    assert reverse("admin:llmlog_usageaudit_change", args=[audit.pk]) in page
    listed = admin_client.get(reverse("admin:llmlog_usageaudit_changelist") + f"?usage_id={usage.pk}")
    assert listed.status_code == 200 and usage.transno in listed.content.decode()
    detail = admin_client.get(reverse("admin:llmlog_usageaudit_change", args=[audit.pk]))
    assert detail.status_code == 200 and not detail.context["has_change_permission"]


def test_an_admin_delete_is_audited_and_the_audit_list_is_read_only(admin_client):
    usage, failure = failed_usage()

    delete = reverse("admin:llmlog_llmusage_delete", args=[usage.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302

    audit = UsageAudit.objects.get(usage_id=usage.pk)
    assert audit.action == "delete"
    failure.refresh_from_db()
    assert failure.status == "resolved"
    assert admin_client.get(reverse("admin:llmlog_usageaudit_add")).status_code == 403
    searched = admin_client.get(reverse("admin:llmlog_usageaudit_changelist") + f"?q={usage.transno}")
    assert "(deleted)" in searched.content.decode()


def test_staff_without_the_change_permission_cannot_edit_usage_in_the_admin(client):
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    client.force_login(user)
    usage = make_usage(QUERY_RECORD, accounting_status="pending")

    response = client.post(reverse("admin:llmlog_llmusage_change", args=[usage.pk]), {"amount": "0"})

    assert response.status_code == 403
    assert not UsageAudit.objects.exists()
    usage.refresh_from_db()
    assert usage.amount == Decimal("0.01000")
