"""Schema fuzzing: schemathesis generates requests for every operation of the app's own OpenAPI schema
(/api/schema/, served by the WSGI app itself, no server) and checks every answer: never a 5xx, a
status code and body the schema documents, a 4xx for input the schema says is invalid.

Runs in-process on the test database with a platform admin key (sees and may do everything). The
example budget is fixed and small in CI (the whole file well under a minute); for a longer run:

    LLMLOG_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/test_fuzz_schema.py

A longer run draws new random examples each time (CI's are derandomized, so a failure there repeats).

Every check of schemathesis runs but one: `positive_data_acceptance` (a request the schema allows must
be accepted). The API has rules a JSON Schema cannot state (a page no deeper than 10,000 records, a
cursor only from an earlier answer, cached tokens within input tokens, use_time within a day of now,
an org key ingesting for its own org): such a request is rightly refused, with a documented 4xx that
names the problem, and that is what the other checks hold it to. The reverse check stays on: what the
schema forbids must be refused.
"""

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig

from config.wsgi import application
from tests.hardening import seed_orgs

EXAMPLES = int(os.environ.get("LLMLOG_FUZZ_EXAMPLES", "0")) or None
LONG_RUN = EXAMPLES is not None

# The key goes in as a header of every call (it lives in the test's database); schemathesis does not
# generate Authorization values of its own, which the real key would then override.
CONFIG = SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})
schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)

# OpenAPI matches a concrete path before a templated one, and so does the router: `/api/llmusage/rates/`
# is the rates operation, never `/api/llmusage/{id}/` with the id "rates". Hypothesis mixes string
# literals of the project's own modules into what it draws (so any change to the code shifts the
# derandomized examples), "rates" among them: a generated id that spells a sibling's path is a request
# to that other operation, which is fuzzed on its own, and is not checked against this one's schema.
CONCRETE_PATHS = {path for path in schema.raw_schema["paths"] if "{" not in path}


# The gateway formats the schema names besides JSON go out as generated: protobuf as its bytes (the
# view must refuse garbage with a 400), NDJSON as its text.
@schemathesis.serializer("application/x-protobuf", "application/x-ndjson")
def raw_body(ctx, value: Any) -> dict[str, bytes]:
    return {"data": value if isinstance(value, bytes) else str(value).encode()}


@pytest.fixture
def fuzz_key(db, make_key, settings) -> Iterator[dict[str, str]]:
    """A platform admin key, both orgs' data, and the WSGI app on the test's transaction."""
    settings.LLMLOG_INGEST_RATE = None  # the fuzzer sends hundreds of ingest requests
    seed_orgs()
    # Django's own test client does this too: the handler closes the database connection at the end
    # of each request when it is not in autocommit, which the test's transaction never is.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield {"Authorization": f"Bearer {make_key(org='', role='admin')}"}
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES or 8,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_schema_says(case, fuzz_key):
    if case.path_parameters and case.formatted_path in CONCRETE_PATHS:
        return
    excluded = [checks.positive_data_acceptance]
    if isinstance(case.body, list):
        # A list of records keeps its valid items and reports the others (207), by design: an invalid
        # item is not a refused request.
        excluded.append(checks.negative_data_rejection)
    case.call_and_validate(headers=fuzz_key, excluded_checks=excluded)
