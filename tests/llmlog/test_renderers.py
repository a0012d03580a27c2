"""The API's JSON renderer (msgspec) and content negotiation answer exactly as DRF's own would."""

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from rest_framework import renderers
from rest_framework.exceptions import ErrorDetail
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from llmlog.api.renderers import ContentNegotiation, JSONRenderer
from tests.conftest import bearer

PAYLOAD = {
    "id": uuid.UUID("0190f5a6-7b1c-7d2e-8f3a-1b2c3d4e5f60"),
    "use_time": datetime(2026, 11, 20, 10, 15, 0, 123456, tzinfo=UTC),
    "naive": datetime(2026, 11, 20, 10, 15),
    "use_date": date(2026, 11, 20),
    "amount": Decimal("0.01234"),
    "tokens": [1, 2**40, -3],
    "ratio": 0.5,
    "flags": {"is_stream": True, "missing": None},
    "text": 'naïve — 日本語 \u2028 line \u2029 paragraph "quoted" \\ </script>',
    "errors": {"page": [ErrorDetail("Expected a whole number.", code="invalid")]},
}


def test_json_is_byte_for_byte_drfs():
    assert JSONRenderer().render(PAYLOAD) == renderers.JSONRenderer().render(PAYLOAD)


def test_line_separators_are_escaped_as_drf_escapes_them():
    body = JSONRenderer().render({"text": "a\u2028b\u2029c"})

    assert body == b'{"text":"a\\u2028b\\u2029c"}'


def test_pretty_printing_is_drfs():
    media_type = "application/json; indent=4"

    assert JSONRenderer().render(PAYLOAD, media_type) == renderers.JSONRenderer().render(PAYLOAD, media_type)


def test_no_data_is_an_empty_body():
    assert JSONRenderer().render(None) == b""


RENDERERS = [JSONRenderer(), renderers.BrowsableAPIRenderer()]


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/api/llmusage/", None),
        ("/api/llmusage/", "*/*"),
        ("/api/llmusage/", "application/json"),
        ("/api/llmusage/", "application/json; indent=2"),
        ("/api/llmusage/", "text/html"),
        ("/api/llmusage/", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("/api/llmusage/?format=json", None),
        ("/api/llmusage/?format=api", "*/*"),
    ],
)
def test_negotiation_picks_what_drf_picks(path, accept):
    headers = {"HTTP_ACCEPT": accept} if accept is not None else {}
    request = Request(APIRequestFactory().get(path, **headers))

    ours = ContentNegotiation().select_renderer(request, RENDERERS)
    drfs = DefaultContentNegotiation().select_renderer(request, RENDERERS)

    assert (type(ours[0]), ours[1]) == (type(drfs[0]), drfs[1])


def test_an_unacceptable_type_is_still_406(api, acme_key):
    response = api.get("/api/llmusage/", HTTP_ACCEPT="application/xml", **bearer(acme_key))

    assert response.status_code == 406


@pytest.mark.django_db
def test_a_staff_browser_gets_the_browsable_api_and_a_client_json(client, make_staff, acme_key):
    client.force_login(make_staff("ops", perms=("llmlog.view_llmusage",)))

    page = client.get("/api/llmusage/", HTTP_ACCEPT="text/html")
    plain = client.get("/api/llmusage/", **bearer(acme_key))

    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    assert plain.status_code == 200
    assert plain["Content-Type"] == "application/json"
    assert plain.json()["results"] == []
