"""Secrets: keys stored only as hashes and compared in constant time, never logged; ingest throttled per
key; CSRF on for the admin and for session-authenticated API writes."""

import hashlib
import json
import logging
import re
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client

from config.env import env_rate
from llmlog.api import auth, throttling
from llmlog.keys import api_key_create, api_key_revoke
from llmlog.logging import JsonFormatter
from llmlog.models import ApiKey, LLMUsage
from tests.conftest import bearer
from tests.factories import org_payload

pytestmark = pytest.mark.django_db
URL = "/api/llmusage/"
GATEWAY_KEY = "sk-gateway-3f9c1e7a5b2d4c6e8f0a1b3c5d7e9f11"
IO_MARKER = "PROMPT-BODY-8d1f2c"


def post(api, key: str, payload, **extra):
    return api.post(URL, data=json.dumps(payload), content_type="application/json", **bearer(key), **extra)


def table_text(table: str) -> str:
    """Every value of every row of `table`, as text: what a database dump would show."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
        return "\n".join(" | ".join(str(value) for value in row) for row in cursor.fetchall())


# --- stored only as hashes ------------------------------------------------------------------------


def test_api_key_rows_hold_the_sha256_never_the_key():
    key, raw = api_key_create(userorgid="acme", scopes=["ingest"])

    stored = table_text(ApiKey._meta.db_table)

    assert raw not in stored
    assert raw[12:] not in stored  # not even the part after the prefix the admin shows
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert key.key_hash in stored


def test_gateway_key_is_stored_only_as_its_sha256(api, acme_key):
    single = post(api, acme_key, org_payload(transno="s-1", token_key=GATEWAY_KEY))
    bulk = post(api, acme_key, [org_payload(transno=f"b-{n}", token_key=GATEWAY_KEY) for n in range(3)])

    assert (single.status_code, bulk.status_code) == (201, 201)
    assert GATEWAY_KEY not in single.content.decode() + bulk.content.decode()
    stored = table_text(LLMUsage._meta.db_table)
    assert GATEWAY_KEY not in stored
    digest = hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()
    assert set(LLMUsage.objects.values_list("token_key_hash", flat=True)) == {digest}


def test_the_same_record_resent_with_its_key_is_a_duplicate_not_a_conflict(api, acme_key):
    """The payload hash is taken after the raw key is replaced by its hash, so a resend matches."""
    payload = org_payload(transno="dup-1", token_key=GATEWAY_KEY)
    post(api, acme_key, payload)

    assert post(api, acme_key, payload).status_code == 200


# --- never in logs --------------------------------------------------------------------------------


def test_no_key_or_body_is_logged_on_ingest_errors_or_auth_failures(
    api, acme_key, make_key, caplog, monkeypatch
):
    """Everything logged at DEBUG and above, while ingest succeeds, fails validation, conflicts, is
    refused for a wrong or revoked key, and crashes: no API key, gateway key or ioinfo text in any line."""
    caplog.set_level(logging.DEBUG)
    connection.force_debug_cursor = True  # the SQL logger would carry ioinfo in its parameters
    revoked = make_key(org="acme")
    api_key_revoke(key=ApiKey.objects.get(key_hash=hashlib.sha256(revoked.encode()).hexdigest()))
    wrong = "llk_" + "W" * 43
    io = {"request": f"{IO_MARKER} request", "response": f"{IO_MARKER} response"}
    try:
        post(api, acme_key, org_payload(transno="ok", token_key=GATEWAY_KEY, ioinfo=io))
        post(api, acme_key, org_payload(transno="ok", token_key=GATEWAY_KEY, ioinfo=io, output_tokens=1))
        post(api, acme_key, org_payload(input_tokens=-1, token_key=GATEWAY_KEY, ioinfo=io))
        post(api, acme_key, [org_payload(token_key=GATEWAY_KEY, ioinfo=io), {"ioinfo": io}])
        assert post(api, wrong, org_payload(token_key=GATEWAY_KEY, ioinfo=io)).status_code == 401
        assert post(api, revoked, org_payload(token_key=GATEWAY_KEY, ioinfo=io)).status_code == 401
        api.get(URL, HTTP_APIKEY=wrong)
        api.get(f"/api/log/token?key={GATEWAY_KEY}", **bearer(acme_key))

        def crash(**kwargs):
            raise RuntimeError("storage failed")

        monkeypatch.setattr("llmlog.api.views.usage_ingest", crash)
        api.raise_request_exception = False
        crashed = post(api, acme_key, org_payload(token_key=GATEWAY_KEY, ioinfo=io))
        assert crashed.status_code == 500
    finally:
        connection.force_debug_cursor = False

    assert any(record.levelno >= logging.ERROR for record in caplog.records)  # the crash was logged
    formatter = JsonFormatter()
    written = caplog.text + "\n".join(formatter.format(record) for record in caplog.records)
    for secret in (acme_key, revoked, wrong, GATEWAY_KEY, IO_MARKER):
        assert secret not in written


# --- constant-time comparison ---------------------------------------------------------------------


def test_key_is_accepted_through_a_constant_time_compare_of_the_hash(api, acme_key, monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)

    assert api.get(URL, **bearer(acme_key)).status_code == 200
    digest = hashlib.sha256(acme_key.encode()).hexdigest()
    assert calls == [(digest, digest)]


def test_a_row_whose_hash_does_not_match_the_key_is_refused(api, acme_key, globex_key, monkeypatch):
    """The compare decides, not the lookup: a lookup that ever returned the wrong row lets no one in."""
    globex = ApiKey.objects.get(key_hash=hashlib.sha256(globex_key.encode()).hexdigest())
    monkeypatch.setattr(auth, "api_key_lookup", lambda raw: globex)

    assert api.get(URL, **bearer(acme_key)).status_code == 401


# --- ingest throttled per key ---------------------------------------------------------------------


@pytest.fixture
def ingest_rate(settings, monkeypatch):
    """3 ingest requests per day per key, counted in a cache namespace of this test's own (the cache is
    the configured one: Redis in the PostgreSQL pass, files in the SQLite pass)."""
    settings.LLMLOG_INGEST_RATE = (3, 86400)
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    monkeypatch.setattr(throttling, "_cache_down_until", 0.0)


def test_fourth_ingest_in_the_window_is_429_with_retry_after(api, acme_key, ingest_rate):
    for n in range(3):
        assert post(api, acme_key, org_payload(transno=f"t-{n}")).status_code == 201

    response = post(api, acme_key, org_payload(transno="t-3"))

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 86400
    assert "LLMLOG_INGEST_RATE" in response.json()["detail"]
    assert not LLMUsage.objects.filter(transno="t-3").exists()


def test_the_limit_is_per_key(api, acme_key, globex_key, ingest_rate):
    for n in range(4):
        post(api, acme_key, org_payload(transno=f"a-{n}"))

    assert post(api, globex_key, org_payload(transno="g-1", userorgid="globex")).status_code == 201


def test_reads_are_never_throttled(api, acme_key, ingest_rate):
    for n in range(4):
        post(api, acme_key, org_payload(transno=f"r-{n}"))

    assert [api.get(URL, **bearer(acme_key)).status_code for _ in range(5)] == [200] * 5


def test_the_gateway_adapters_share_the_ingest_limit(api, acme_key, ingest_rate):
    for n in range(3):
        post(api, acme_key, org_payload(transno=f"l-{n}"))

    response = api.post(
        "/api/ingest/litellm/", data="[]", content_type="application/json", **bearer(acme_key)
    )

    assert response.status_code == 429
    assert "Retry-After" in response


def test_rate_off_never_throttles(api, acme_key, settings):
    settings.LLMLOG_INGEST_RATE = None

    assert {post(api, acme_key, org_payload()).status_code for _ in range(5)} == {201}


def test_unreachable_cache_lets_ingest_through(api, acme_key, settings, monkeypatch, caplog):
    """A rate limiter that is down must not cost records: ingest goes on, the failure is logged."""
    settings.LLMLOG_INGEST_RATE = (1, 86400)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    monkeypatch.setattr(throttling, "_cache_down_until", 0.0)

    codes = [post(api, acme_key, org_payload()).status_code for _ in range(3)]

    assert codes == [201, 201, 201]
    assert LLMUsage.objects.count() == 3
    assert sum("ingest rate limit skipped" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("6000/min", (6000, 60)),
        ("10/s", (10, 1)),
        ("100/hour", (100, 3600)),
        ("5/day", (5, 86400)),
        ("off", None),
    ],
)
def test_rate_setting_is_read_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("LLMLOG_INGEST_RATE", raw)

    assert env_rate("LLMLOG_INGEST_RATE", "6000/min") == expected


@pytest.mark.parametrize("raw", ["fast", "6000", "0/min", "-1/min", "10/week", "1.5/s"])
def test_bad_rate_setting_stops_start_up_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("LLMLOG_INGEST_RATE", raw)

    with pytest.raises(ImproperlyConfigured, match="LLMLOG_INGEST_RATE"):
        env_rate("LLMLOG_INGEST_RATE", "6000/min")


# --- CSRF -----------------------------------------------------------------------------------------


@pytest.fixture
def staff_browser(django_user_model) -> Client:
    """A signed-in superuser whose browser enforces CSRF, as a real one does."""
    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    return browser


def test_admin_post_without_the_csrf_token_is_refused(staff_browser):
    response = staff_browser.post("/admin/llmlog/apikey/add/", {"name": "forged", "role": "admin"})

    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert not ApiKey.objects.exists()


def test_admin_post_with_the_csrf_token_goes_through(staff_browser):
    page = staff_browser.get("/admin/llmlog/apikey/add/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value

    response = staff_browser.post("/admin/logout/", {"csrfmiddlewaretoken": token})

    assert response.status_code == 200  # logged out: the token is what the 403 above was missing


def test_session_authenticated_api_write_needs_the_csrf_token(staff_browser):
    response = staff_browser.post(URL, org_payload(), content_type="application/json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not LLMUsage.objects.exists()


# --- a new key is shown once on a page, never in a cookie or a log line ---------------------------


def test_a_key_made_in_the_admin_is_on_the_page_never_in_a_cookie_or_a_log_line(admin_client, caplog):
    caplog.set_level(logging.DEBUG)

    response = admin_client.post(
        "/admin/llmlog/apikey/add/",
        {"name": "acme gateway", "userorgid": "acme", "role": "member", "scopes": ["ingest", "read"]},
    )

    assert response.status_code == 200
    page = response.content.decode()
    key = ApiKey.objects.get(name="acme gateway")
    raw = re.search(r'id="new-api-key"[^>]*value="(llk_[^"]+)"', page).group(1)
    assert hashlib.sha256(raw.encode()).hexdigest() == key.key_hash
    assert "no-store" in response["Cache-Control"]
    set_cookies = "\n".join(morsel.OutputString() for morsel in response.cookies.values())
    assert raw not in set_cookies and raw[12:] not in set_cookies
    assert "messages" not in response.cookies or raw not in response.cookies["messages"].value
    logged = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    assert raw[12:] not in logged
    # Shown once: the next pages never have it.
    later = admin_client.get("/admin/llmlog/apikey/").content.decode()
    assert raw[12:] not in later


# --- API-key guessing is throttled per client address -------------------------------------------


@pytest.fixture
def auth_failure_rate(settings, monkeypatch):
    """3 API-key failures per minute per address, counted in a cache namespace of this test's own."""
    settings.LLMLOG_AUTH_FAILURE_RATE = (3, 60)
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    monkeypatch.setattr(throttling, "_cache_down_until", 0.0)
    monkeypatch.setattr(throttling, "_suspects", {})


def get_with(api, key: str, address: str = "192.0.2.7"):
    return api.get("/api/llmusage/count/", REMOTE_ADDR=address, **bearer(key))


def test_after_n_bad_keys_an_address_gets_429_with_retry_after(api, acme_key, auth_failure_rate):
    assert [get_with(api, f"llk_guess{n}").status_code for n in range(3)] == [401, 401, 401]

    guessed = get_with(api, "llk_guess3")
    good_from_there = get_with(api, acme_key)

    assert guessed.status_code == 429
    assert 0 < int(guessed["Retry-After"]) <= 60
    assert "LLMLOG_AUTH_FAILURE_RATE" in guessed.json()["detail"]
    # Refused before the key is looked up: the answer says nothing about whether a key is real.
    assert good_from_there.status_code == 429


def test_the_limit_is_per_address_and_counts_only_failures(api, acme_key, make_key, auth_failure_rate):
    revoked_key, raw = api_key_create(userorgid="acme", scopes=["read"])
    api_key_revoke(key=revoked_key)
    for _ in range(10):
        assert get_with(api, acme_key).status_code == 200  # successes never count
    for n in range(3):
        get_with(api, raw if n % 2 else f"llk_guess{n}")  # a revoked key counts as a failure too

    assert get_with(api, "llk_guess9").status_code == 429
    assert get_with(api, "llk_guess9", address="198.51.100.1").status_code == 401
    assert get_with(api, acme_key, address="198.51.100.1").status_code == 200


def test_behind_a_trusted_proxy_the_limit_is_per_address_the_proxy_saw(
    api, acme_key, auth_failure_rate, settings
):
    """Behind the deployment's nginx every request comes from 127.0.0.1: one guesser must not lock out
    every gateway. The address is the one the proxy appended, never what the client wrote left of it."""
    settings.LLMLOG_TRUSTED_PROXIES = 1

    def via_proxy(key: str, client: str, written: str = ""):
        forwarded = f"{written}, {client}" if written else client
        return api.get(
            "/api/llmusage/count/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded, **bearer(key)
        )

    for n in range(3):  # a guesser rotating what it writes into X-Forwarded-For
        assert via_proxy(f"llk_guess{n}", "203.0.113.9", written=f"10.0.0.{n}").status_code == 401

    assert via_proxy("llk_guess3", "203.0.113.9", written="10.0.0.99").status_code == 429
    assert via_proxy(acme_key, "198.51.100.1").status_code == 200  # another client through the same proxy


def test_with_no_trusted_proxy_x_forwarded_for_is_ignored(api, auth_failure_rate, settings):
    settings.LLMLOG_TRUSTED_PROXIES = 0
    for n in range(3):
        get_with(api, f"llk_guess{n}")

    forwarded = {"HTTP_X_FORWARDED_FOR": "203.0.113.50"}  # written by the client: no proxy to trust
    rotated = api.get("/api/llmusage/count/", REMOTE_ADDR="192.0.2.7", **forwarded, **bearer("llk_9"))
    assert rotated.status_code == 429


def test_admin_logins_behind_a_trusted_proxy_lock_the_address_the_proxy_saw(operator, settings):
    settings.LLMLOG_TRUSTED_PROXIES = 1

    def login(address: str, password: str):
        return Client().post(
            "/admin/login/?next=/admin/",
            {"username": "operator", "password": password},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=address,
        )

    assert [login("203.0.113.9", "wrong").status_code for _ in range(3)][-1] == 429
    assert login("198.51.100.1", "right-password").status_code == 302
    # Not an address where the proxy writes one: not a proxy's; the socket's address counts (no 500).
    written = ("", "not-an-ip", "1.2.3.4, \x00", " , ")
    assert {login(hop, "wrong").status_code for hop in written} <= {200, 429}


def test_auth_failure_limit_off_never_throttles(api, settings, monkeypatch):
    settings.LLMLOG_AUTH_FAILURE_RATE = None
    monkeypatch.setattr(throttling, "_suspects", {})

    assert {get_with(api, f"llk_guess{n}").status_code for n in range(30)} == {401}


def test_auth_failure_rate_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLMLOG_AUTH_FAILURE_RATE", "5/hour")
    assert env_rate("LLMLOG_AUTH_FAILURE_RATE", "20/min") == (5, 3600)


# --- admin logins are throttled per client address (django-axes) -------------------------------


@pytest.fixture
def operator(django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 3
    return django_user_model.objects.create_superuser("operator", "ops@example.com", "right-password")


def admin_login(client: Client, password: str, address: str = "192.0.2.7"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "operator", "password": password},
        REMOTE_ADDR=address,
    )


def test_after_n_failed_admin_logins_the_address_gets_429_with_retry_after(operator):
    browser = Client()
    assert [admin_login(browser, "wrong").status_code for _ in range(2)] == [200, 200]

    locked = admin_login(browser, "wrong")
    right_but_locked = admin_login(browser, "right-password")
    elsewhere = admin_login(Client(), "right-password", address="198.51.100.1")

    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    assert right_but_locked.status_code == 429
    assert elsewhere.status_code == 302  # another address logs in


def test_a_successful_admin_login_resets_the_count(operator):
    browser = Client()
    admin_login(browser, "wrong")
    admin_login(browser, "wrong")
    assert admin_login(browser, "right-password").status_code == 302
    browser.logout()

    assert [admin_login(browser, "wrong").status_code for _ in range(2)] == [200, 200]
