"""The ingest throttle's rule (llmlog.api.throttling): an org key is limited to LLMLOG_INGEST_RATE; a
platform key, the gateway's own, is never refused by default (LLMLOG_PLATFORM_INGEST_RATE is off)."""

import json
import uuid

import pytest

from llmlog.api import throttling
from llmlog.models import LLMUsage
from tests.conftest import bearer
from tests.factories import org_payload, usage_payload

pytestmark = pytest.mark.django_db
URL = "/api/llmusage/"


def post(api, key: str, payload):
    return api.post(URL, data=json.dumps(payload), content_type="application/json", **bearer(key))


@pytest.fixture
def org_rate(settings, monkeypatch):
    """Org keys: 3 ingest requests per day; the platform rate left at its default. Counted in a cache
    namespace of this test's own (Redis in the PostgreSQL pass, files in the SQLite pass)."""
    settings.LLMLOG_INGEST_RATE = (3, 86400)
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    monkeypatch.setattr(throttling, "_cache_down_until", 0.0)


def test_defaults_leave_platform_keys_unlimited_and_org_keys_at_60000_per_minute(settings):
    assert settings.LLMLOG_PLATFORM_INGEST_RATE is None
    assert settings.LLMLOG_INGEST_RATE == (60000, 60)


def test_a_platform_key_past_the_org_limit_is_never_429(api, platform_key, org_rate):
    statuses = [post(api, platform_key, usage_payload(transno=f"p-{n}")).status_code for n in range(8)]

    assert statuses == [201] * 8
    assert LLMUsage.objects.filter(transno__startswith="p-").count() == 8


def test_a_platform_key_past_the_org_limit_is_not_refused_by_an_adapter_either(api, platform_key, org_rate):
    for n in range(4):
        post(api, platform_key, usage_payload(transno=f"pa-{n}"))

    response = api.post(
        "/api/ingest/litellm/", data="[]", content_type="application/json", **bearer(platform_key)
    )

    assert response.status_code != 429, response.content


def test_an_org_key_past_its_limit_is_429_naming_the_setting(api, acme_key, org_rate):
    assert [post(api, acme_key, org_payload(transno=f"o-{n}")).status_code for n in range(3)] == [201] * 3

    response = post(api, acme_key, org_payload(transno="o-3"))

    assert response.status_code == 429
    assert "LLMLOG_INGEST_RATE" in response.json()["detail"]
    assert 0 < int(response["Retry-After"]) <= 86400
    assert not LLMUsage.objects.filter(transno="o-3").exists()


def test_an_org_key_is_limited_while_a_platform_key_goes_on(api, acme_key, platform_key, org_rate):
    for n in range(3):
        post(api, acme_key, org_payload(transno=f"m-{n}"))

    assert post(api, acme_key, org_payload(transno="m-3")).status_code == 429
    assert post(api, platform_key, usage_payload(transno="m-4")).status_code == 201


def test_a_platform_rate_when_set_limits_platform_keys_naming_its_setting(
    api, platform_key, org_rate, settings
):
    settings.LLMLOG_PLATFORM_INGEST_RATE = (2, 86400)
    for n in range(2):
        assert post(api, platform_key, usage_payload(transno=f"ps-{n}")).status_code == 201

    response = post(api, platform_key, usage_payload(transno="ps-2"))

    assert response.status_code == 429
    assert "LLMLOG_PLATFORM_INGEST_RATE" in response.json()["detail"]
    assert not LLMUsage.objects.filter(transno="ps-2").exists()
