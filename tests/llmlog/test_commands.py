import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from accounting.models import Account
from llmlog.models import ApiKey, LLMUsage
from llmlog.posting import account_pending_usage
from tests.conftest import bearer
from tests.factories import org_payload

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_alone_on_the_last_line(api):
    out = StringIO()
    call_command(
        "create_api_key",
        "--org",
        "acme",
        "--role",
        "admin",
        "--scope",
        "ingest",
        stdout=out,
        stderr=StringIO(),
    )

    raw = out.getvalue().strip().splitlines()[-1]
    key = ApiKey.objects.get()
    assert (key.userorgid, key.role, key.scopes) == ("acme", "admin", ["ingest"])
    assert raw not in {key.key_hash, key.key_prefix}
    response = api.post(
        "/api/llmusage/", json.dumps(org_payload()), content_type="application/json", **bearer(raw)
    )
    assert response.status_code == 201


def test_create_api_key_platform_defaults_to_both_scopes():
    call_command("create_api_key", "--platform", stdout=StringIO(), stderr=StringIO())

    key = ApiKey.objects.get()
    assert key.is_platform
    assert key.scopes == ["ingest", "read"]


def test_create_api_key_needs_an_owner():
    with pytest.raises(CommandError):
        call_command("create_api_key", "--role", "admin")


def test_load_demo_data_makes_varied_realistic_usage():
    out = StringIO()
    call_command("load_demo_data", "--rows", "3000", stdout=out)

    assert "Loaded 3000" in out.getvalue()
    assert LLMUsage.objects.count() == 3000
    assert LLMUsage.objects.values("userorgid").distinct().count() >= 10
    assert LLMUsage.objects.values("model_name").distinct().count() >= 8
    assert LLMUsage.objects.values("use_date").distinct().count() >= 28
    statuses = dict(LLMUsage.objects.values_list("status").annotate(n=Count("id")))
    assert statuses["success"] > statuses["failed"] > 0
    assert not LLMUsage.objects.filter(accounting_status="pending", amount=0, cost=0).exists()


def test_demo_data_comes_with_accounts_so_posting_mostly_succeeds():
    call_command("load_demo_data", "--rows", "2000", stdout=StringIO())
    account_pending_usage(batch_size=1000)

    assert Account.objects.filter(kind="customer").count() == 20
    assert Account.objects.filter(kind="platform").exists()
    outcomes = dict(LLMUsage.objects.values_list("accounting_status").annotate(n=Count("id")))
    assert outcomes.get("pending", 0) == 0
    assert outcomes["accounted"] > 0.9 * 2000 * 0.97
    # The shoestring org and the unpriced model give the failures page something to show.
    assert outcomes.get("failed", 0) > 0
