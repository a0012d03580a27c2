"""No slash trap: every write route under /api/ and /v1/ answers the same with or without its trailing
slash. Django's APPEND_SLASH answers a path without it with a 301, which clients follow as a GET: the
record they sent is lost. The routes are read from the URL resolver, so a new one is covered by
existing."""

import json
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.regex_helper import normalize

from llmlog.models import LLMUsage
from tests.conftest import bearer
from tests.factories import usage_payload

pytestmark = pytest.mark.django_db

WRITES = ("POST", "PUT", "PATCH", "DELETE")
# A value for each named part of a path: an id that is no record's (a 404 either way), an org.
SAMPLES = {"pk": str(uuid.uuid4()), "id": str(uuid.uuid4()), "org": "acme", "group": "acme"}


def _regex(pattern) -> str:
    return pattern.pattern.regex.pattern.removeprefix("^").removesuffix("$").removesuffix(r"\Z")


def api_routes(patterns=None, prefix: str = "") -> list[str]:
    """Every URL pattern's full regex under /api/ or /v1/ (the catch-all JSON 404 left out)."""
    found = []
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        regex = prefix + _regex(pattern)
        if isinstance(pattern, URLResolver):
            found += api_routes(pattern.url_patterns, regex)
        elif isinstance(pattern, URLPattern) and regex.startswith(("api/", "v1/")):
            found += [regex] if pattern.name != "api-not-found" else []
    return found


def both_forms(regex: str) -> tuple[str, str]:
    """The route's path without and with its trailing slash, its named parts filled in."""
    template, names = normalize(regex)[0]
    path = "/" + template % {name: SAMPLES.get(name, "x") for name in names}
    bare = path.rstrip("/")
    return bare, bare + "/"


def test_every_write_route_answers_the_same_with_or_without_its_slash(api, platform_key, settings):
    settings.LLMLOG_INGEST_RATE = None
    routes = api_routes()
    paths = {both_forms(regex)[1] for regex in routes}
    assert {"/api/llmusage/", "/api/llm-log/get-list/", "/api/log/", "/v1/traces/"} <= paths
    assert f"/api/accounts/{SAMPLES['org']}/topup/" in paths

    for regex in routes:
        bare, slashed = both_forms(regex)
        for method in WRITES:
            answers = {}
            for path in (bare, slashed):
                response = api.generic(
                    method, path, data="{}", content_type="application/json", **bearer(platform_key)
                )
                assert not 300 <= response.status_code < 400, (method, path, response.status_code)
                answers[path] = response.status_code
            if answers[slashed] != 405:  # a route that takes this method: the same answer either way
                assert answers[bare] == answers[slashed], (method, answers)


@pytest.mark.parametrize("path", ["/api/llmusage", "/api/llmusage/"])
def test_a_record_posted_without_the_slash_is_stored(api, platform_key, settings, path):
    settings.LLMLOG_INGEST_RATE = None
    payload = usage_payload()

    response = api.post(
        path, data=json.dumps(payload), content_type="application/json", **bearer(platform_key)
    )

    assert response.status_code == 201, response.content[:300]
    assert LLMUsage.objects.filter(transno=payload["transno"], userorgid="acme").exists()


@pytest.mark.parametrize("path", ["/api/log", "/api/log/"])
def test_newapi_delete_without_the_slash_is_the_same_delete(api, platform_key, path):
    response = api.delete(f"{path}?target_timestamp=1", **bearer(platform_key))

    assert response.status_code == 200, response.content[:300]
    assert response.json()["success"] is True
