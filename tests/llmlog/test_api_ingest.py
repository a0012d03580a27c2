import gzip
import json
import re

import pytest
from django.test import override_settings
from django.utils import timezone

from llmlog.keys import api_key_revoke
from llmlog.models import ApiKey, LLMUsage
from tests.conftest import bearer
from tests.factories import org_payload, usage_payload

pytestmark = pytest.mark.django_db
URL = "/api/llmusage/"


def post(api, key: str | None, payload, **headers):
    if key:
        headers.update(bearer(key))
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    return api.post(URL, data=body, content_type="application/json", **headers)


def test_post_then_get_back_the_record(api, platform_key):
    created = post(api, platform_key, usage_payload(transno="api-1"))
    assert created.status_code == 201, created.content
    record_id = created.json()["id"]

    fetched = api.get(f"{URL}{record_id}/", **bearer(platform_key))

    assert fetched.status_code == 200
    body = fetched.json()
    assert body["transno"] == "api-1"
    assert body["amount"] == "0.00600"  # money is a string, never a float
    assert "payload_hash" not in body


def test_same_post_again_returns_the_record_and_writes_nothing(api, platform_key):
    first = post(api, platform_key, usage_payload(transno="api-2"))
    again = post(api, platform_key, usage_payload(transno="api-2"))

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert LLMUsage.objects.count() == 1


def test_different_payload_under_known_transno_is_409(api, platform_key):
    post(api, platform_key, usage_payload(transno="api-3"))
    response = post(api, platform_key, usage_payload(transno="api-3", output_tokens=1))

    assert response.status_code == 409
    assert "api-3" in response.json()["detail"]


def test_invalid_single_record_is_400_naming_the_field(api, acme_key):
    response = post(api, acme_key, org_payload(input_tokens=-1))

    assert response.status_code == 400
    assert "input_tokens" in response.json()["errors"]


def test_bulk_reports_every_item_and_keeps_the_good_ones(api, platform_key):
    items = [
        usage_payload(transno="b-1"),
        usage_payload(transno="b-2", reasoning_tokens=10**6),
        usage_payload(),
    ]
    response = post(api, platform_key, items)

    assert response.status_code == 207
    body = response.json()
    assert (body["created"], body["errors"]) == (2, 1)
    assert [item["status"] for item in body["items"]] == ["created", "error", "created"]
    assert "reasoning_tokens" in body["items"][1]["errors"]
    assert LLMUsage.objects.count() == 2


def test_bulk_all_new_is_201_and_all_known_is_200(api, platform_key):
    items = [usage_payload(transno=f"c-{i}") for i in range(5)]

    assert post(api, platform_key, items).status_code == 201
    again = post(api, platform_key, items)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 5
    assert LLMUsage.objects.count() == 5


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"transno": ', "Malformed JSON"),
        (b"", "empty"),
        (b"[]", "empty"),
    ],
)
def test_unreadable_bodies_are_400(api, acme_key, body, fragment):
    response = post(api, acme_key, body)

    assert response.status_code == 400
    assert fragment in response.json()["detail"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024)
def test_oversized_body_is_413(api, acme_key):
    response = post(api, acme_key, b"[" + b" " * (2 * 1024 * 1024) + b"]")

    assert response.status_code == 413
    detail = response.json()["detail"]
    assert re.fullmatch(r"The body is \d+ bytes; this endpoint takes at most \d+ bytes\.", detail)


def test_ten_megabyte_body_is_refused_with_the_default_limit(api, acme_key):
    payload = [usage_payload(ioinfo={"request": "x" * 10_000}) for _ in range(1000)]

    response = post(api, acme_key, payload)

    assert response.status_code == 413
    assert not LLMUsage.objects.exists()


# --- the auth matrix ----------------------------------------------------------------------------


def test_no_key_is_401(api):
    assert post(api, None, usage_payload()).status_code == 401
    assert api.get(URL).status_code == 401


def test_unknown_key_is_401(api, db):
    response = post(api, "llk_not-a-key", usage_payload())

    assert response.status_code == 401
    assert response.json()["detail"] == "Unknown API key."


def test_revoked_key_is_401(api, acme_key):
    api_key_revoke(key=ApiKey.objects.get(userorgid="acme"))

    response = post(api, acme_key, usage_payload())

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_key_without_ingest_scope_cannot_post(api, acme_reader_key):
    response = post(api, acme_reader_key, usage_payload())

    assert response.status_code == 403
    assert "ingest" in response.json()["detail"]


def test_key_without_read_scope_cannot_list(api, make_key):
    ingest_only = make_key(org="acme", scopes=("ingest",))

    assert api.get(URL, **bearer(ingest_only)).status_code == 403


def test_apikey_header_works_like_bearer(api, acme_key):
    response = api.post(
        URL, data=json.dumps(org_payload()), content_type="application/json", HTTP_APIKEY=acme_key
    )

    assert response.status_code == 201


def test_org_key_reads_only_its_org(api, acme_key, globex_key, platform_key):
    acme_id = post(api, acme_key, org_payload(transno="iso-1")).json()["id"]
    post(api, platform_key, usage_payload(transno="iso-2", userorgid="globex"))

    assert api.get(f"{URL}{acme_id}/", **bearer(globex_key)).status_code == 404
    globex_list = api.get(URL, **bearer(globex_key)).json()
    assert [r["transno"] for r in globex_list["results"]] == ["iso-2"]
    everything = api.get(URL, **bearer(platform_key)).json()
    assert {r["transno"] for r in everything["results"]} == {"iso-1", "iso-2"}


def test_org_key_cannot_ingest_for_another_org(api, acme_key):
    response = post(api, acme_key, org_payload(userorgid="globex"))

    assert response.status_code == 400
    assert "userorgid" in response.json()["errors"]


def test_non_uuid_id_is_400(api, acme_key):
    response = api.get(f"{URL}not-a-uuid/", **bearer(acme_key))

    assert response.status_code == 400
    assert "id" in response.json()


def test_list_is_paginated_with_a_bounded_page_size(api, acme_key, django_assert_max_num_queries):
    post(api, acme_key, [org_payload() for _ in range(120)])

    with django_assert_max_num_queries(3):
        response = api.get(URL, {"page_size": 100}, **bearer(acme_key))

    assert response.status_code == 200
    assert len(response.json()["results"]) == 100
    # over the bound: a 400 naming the parameter (llmlog.api.pagination.UsagePagination)
    too_big = api.get(URL, {"page_size": 500}, **bearer(acme_key))
    assert too_big.status_code == 400 and "page_size" in too_big.json()


def test_staff_session_reads_everything_but_plain_user_does_not(
    api, platform_key, django_user_model, make_staff
):
    post(api, platform_key, usage_payload(userorgid="globex"))
    staff = make_staff(perms=("llmlog.view_llmusage",))
    plain = django_user_model.objects.create_user("plain", password="pw")
    unpermitted = make_staff("staff-without-view")

    api.force_login(plain)
    assert api.get(URL).status_code == 403
    api.force_login(unpermitted)  # staff, but reading usage needs the view permission
    assert "'llmlog.view_llmusage'" in api.get(URL).json()["detail"]
    api.force_login(staff)
    assert len(api.get(URL).json()["results"]) == 1


def test_openapi_schema_and_docs_are_served_without_a_cdn(client, db):
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/api/llmusage/" in schema.content
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.content.decode())
    assert assets, "the docs page loads its scripts and styles"
    assert all(url.startswith("/static/") for url in assets), assets


def test_a_key_revoked_in_another_process_stops_working_within_the_cache_time(api, acme_key, settings):
    assert api.get(URL, **bearer(acme_key)).status_code == 200
    # Another process revokes it: this one does not hear of it until its remembered lookup expires.
    ApiKey.objects.filter(userorgid="acme").update(revoked_at=timezone.now())

    settings.LLMLOG_API_KEY_CACHE_SECONDS = 60
    assert api.get(URL, **bearer(acme_key)).status_code == 200
    settings.LLMLOG_API_KEY_CACHE_SECONDS = 0
    assert api.get(URL, **bearer(acme_key)).status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_a_gzip_body_is_ingested_as_the_adapters_take_it(api, platform_key, bulk):
    records = [usage_payload(), usage_payload()] if bulk else usage_payload()
    body = gzip.compress(json.dumps(records).encode())

    response = api.post(
        "/api/llmusage/",
        data=body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
        **bearer(platform_key),
    )

    assert response.status_code == 201, response.content
    assert LLMUsage.objects.count() == (2 if bulk else 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [("br", b"{}", 415), ("gzip", b"not gzip", 400), ("gzip", gzip.compress(b"{" * 10)[:-4], 400)],
    ids=["unsupported", "not-gzip", "truncated"],
)
def test_a_body_in_another_or_a_broken_encoding_is_a_4xx_naming_it(api, platform_key, encoding, body, status):
    response = api.post(
        "/api/llmusage/",
        data=body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING=encoding,
        **bearer(platform_key),
    )

    assert response.status_code == status
    assert "gzip" in response.json()["detail"]
    assert not LLMUsage.objects.exists()


@pytest.mark.django_db
def test_a_gzip_body_that_inflates_past_the_limit_is_a_413(api, platform_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = gzip.compress(
        json.dumps(usage_payload(taskid="x" * 100) | {"metadata": {"k": "y" * 8000}}).encode()
    )
    assert len(body) < 4096

    response = api.post(
        "/api/llmusage/",
        data=body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
        **bearer(platform_key),
    )

    assert response.status_code == 413
    assert not LLMUsage.objects.exists()
