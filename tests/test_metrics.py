"""/metrics: protected, with the figures on-call needs, summed over gunicorn's worker processes."""

import json
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import DatabaseError, connection
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from uuid_utils.compat import uuid7

from accounting.models import AccountingFailure
from llmlog.metrics import UsageCollector
from llmlog.models import JobRun, LLMUsage
from tests import servers
from tests.conftest import bearer
from tests.factories import org_payload, usage_payload

URL = "/metrics"
TOKEN = "scrape-token-for-tests"


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get(URL, **headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def token(settings) -> dict[str, str]:
    settings.LLMLOG_METRICS_TOKEN = TOKEN
    return {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


# --- who may read it ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_scrape_is_401_with_a_bearer_challenge(client, token):
    response = client.get(URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"llmlog_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "])
def test_wrong_token_is_401(client, token, header):
    assert client.get(URL, HTTP_AUTHORIZATION=header).status_code == 401


@pytest.mark.django_db
def test_no_token_configured_means_no_token_works(client, settings):
    settings.LLMLOG_METRICS_TOKEN = None

    assert client.get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer None").status_code == 401


@pytest.mark.django_db
def test_an_api_key_is_not_a_metrics_credential(client, token, platform_key):
    assert client.get(URL, **bearer(platform_key)).status_code == 401


@pytest.mark.django_db
def test_staff_with_the_view_permission_reads_metrics_and_others_get_403(client, django_user_model):
    plain = django_user_model.objects.create_user("plain", password="pw")
    client.force_login(plain)
    assert client.get(URL).status_code == 403

    staff = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(staff)
    refused = client.get(URL)
    assert refused.status_code == 403 and b"llmlog.view_llmusage" in refused.content

    staff.user_permissions.add(Permission.objects.get(codename="view_llmusage"))
    client.force_login(django_user_model.objects.get(pk=staff.pk))  # a fresh permission cache
    assert "llmlog_database_up" in {name for name, _ in scrape(client)}


@pytest.mark.django_db
def test_only_get(client, token):
    assert client.post(URL, **token).status_code == 405


# --- what it says ---------------------------------------------------------------------------------


def _usage_row(**overrides):
    from llmlog.ingest.rules import prepare_record
    from llmlog.ingest.wire import decode_record

    record = decode_record(json.dumps(usage_payload(**overrides)).encode())
    return prepare_record(record, now=timezone.now()).row


@pytest.mark.django_db
def test_pending_records_and_the_age_of_the_oldest(client, token):
    from llmlog.ingest.storage import write_usage_rows

    an_hour_ago = uuid7(nanoseconds=time.time_ns() - 3600 * 10**9)
    rows = [_usage_row(), _usage_row(), _usage_row(), _usage_row()]
    rows[0]["id"] = an_hour_ago
    rows[3]["accounting_status"] = "accounted"
    rows[3]["id"] = uuid7(nanoseconds=time.time_ns() - 7200 * 10**9)  # older, but not pending
    write_usage_rows(rows)

    metrics = scrape(client, **token)

    assert metrics[("llmlog_usage_pending_records", ())] == 3
    assert 3599 <= metrics[("llmlog_usage_pending_oldest_age_seconds", ())] < 3700
    assert metrics[("llmlog_database_up", ())] == 1


@pytest.mark.django_db
def test_nothing_pending_reads_zero(client, token):
    metrics = scrape(client, **token)

    assert metrics[("llmlog_usage_pending_records", ())] == 0
    assert metrics[("llmlog_usage_pending_oldest_age_seconds", ())] == 0


@pytest.mark.django_db
def test_open_accounting_failures_are_counted(client, token):
    now = timezone.now()
    for n, status in enumerate(["open", "open", "resolved", "ignored"]):
        AccountingFailure.objects.create(
            usage_id=uuid7(),
            transno=f"f-{n}",
            use_date=now.date(),
            error_code="no_account",
            first_failed_at=now,
            last_failed_at=now,
            amount=Decimal("1"),
            status=status,
        )

    assert scrape(client, **token)[("llmlog_accounting_failures_open", ())] == 2


@pytest.mark.django_db
def test_last_successful_backup_time_and_rows_moved(client, token):
    metrics = scrape(client, **token)
    assert metrics[("llmlog_backup_last_success_timestamp_seconds", ())] == 0  # never: an alert fires

    now = timezone.now()
    JobRun.objects.create(
        job="backup_accounted_llmusage",
        status="succeeded",
        started_at=now - timedelta(days=1, minutes=5),
        finished_at=now - timedelta(days=1),
        counts={"moved": 10},
    )
    good = JobRun.objects.create(
        job="backup_accounted_llmusage",
        status="succeeded",
        started_at=now - timedelta(hours=2, minutes=1),
        finished_at=now - timedelta(hours=2),
        counts={"moved": 1234, "batches": 2},
    )
    JobRun.objects.create(job="backup_accounted_llmusage", status="failed", started_at=now, finished_at=now)
    JobRun.objects.create(job="purge_history", status="succeeded", started_at=now, finished_at=now)

    metrics = scrape(client, **token)

    assert metrics[("llmlog_backup_last_success_timestamp_seconds", ())] == pytest.approx(
        good.finished_at.timestamp()
    )
    assert metrics[("llmlog_backup_last_moved_records", ())] == 1234


def _ratio(metrics, budget) -> float:
    labels = (("budget", str(budget.pk)), ("org", budget.org), ("period", budget.period))
    return metrics[("llmlog_budget_spent_ratio", labels)]


@pytest.mark.django_db
def test_budget_spent_ratio_of_the_current_period(client, token):
    from accounting.budgets import UsageChange, budget_create, budget_usage_apply

    now = timezone.now()
    monthly = budget_create(org="acme", limit=Decimal("4.00"), period="month", time_zone="UTC")
    daily = budget_create(org="globex", limit=Decimal("2.00"), period="day", time_zone="UTC")
    untouched = budget_create(org="initech", limit=Decimal("9.00"), period="total")

    def spend(org, amount, at):
        change = UsageChange(
            userorgid=org, userid="u", token_name="k", model_name="m", feature="", use_time=at, amount=amount
        )
        budget_usage_apply(changes=[change])

    spend("acme", Decimal("1.00"), now)
    spend("globex", Decimal("5.00"), now - timedelta(days=2))  # an earlier day: not today's spend

    metrics = scrape(client, **token)

    assert _ratio(metrics, monthly) == 0.25
    assert _ratio(metrics, daily) == 0  # its latest counter is of an earlier period
    assert _ratio(metrics, untouched) == 0


@pytest.mark.django_db
def test_budget_series_are_the_ones_nearest_their_limit(client, token, monkeypatch):
    from accounting.budgets import UsageChange, budget_create, budget_usage_apply

    monkeypatch.setattr("llmlog.metrics.MAX_BUDGET_SERIES", 2)
    budgets = {
        org: budget_create(org=org, limit=Decimal("10.00"), period="total")
        for org in ("acme", "globex", "initech")
    }
    for org, amount in (("acme", "9.00"), ("globex", "1.00"), ("initech", "12.00")):
        change = UsageChange(
            userorgid=org,
            userid="",
            token_name="",
            model_name="",
            feature="",
            use_time=timezone.now(),
            amount=Decimal(amount),
        )
        budget_usage_apply(changes=[change])

    metrics = scrape(client, **token)

    assert _ratio(metrics, budgets["initech"]) == 1.2
    assert _ratio(metrics, budgets["acme"]) == 0.9
    assert not any(
        name == "llmlog_budget_spent_ratio" and ("org", "globex") in labels for name, labels in metrics
    )


CREATED = ("llmlog_ingest_records_total", (("result", "created"),))


@pytest.mark.django_db
def test_ingest_outcomes_are_counted(client, token, acme_key):
    def counts() -> dict[str, float]:
        return {
            result: REGISTRY.get_sample_value("llmlog_ingest_records_total", {"result": result}) or 0
            for result in ("created", "duplicate", "conflict", "error")
        }

    before = counts()
    scraped_before = scrape(client, **token).get(CREATED, 0)
    one = org_payload(transno="m-1")
    bulk = [one, org_payload(transno="m-2"), org_payload(input_tokens=-1), {**one, "output_tokens": 1}]
    response = client.post("/api/llmusage/", bulk, content_type="application/json", **bearer(acme_key))
    assert response.status_code == 207
    client.post("/api/llmusage/", one, content_type="application/json", **bearer(acme_key))  # duplicate

    after = counts()

    delta = {result: after[result] - before[result] for result in after}
    assert delta == {"created": 2, "duplicate": 1, "conflict": 1, "error": 1}
    assert scrape(client, **token)[CREATED] - scraped_before == 2  # and /metrics shows the same


@pytest.mark.django_db
def test_request_latency_and_counts_are_exported(client, token, acme_key):
    key = (
        "django_http_requests_latency_seconds_by_view_method_count",
        (("method", "GET"), ("view", "llmusage-list")),
    )
    # The histogram is process-wide: other tests' requests are in it, so count from a baseline.
    before = scrape(client, **token).get(key, 0)

    client.get("/api/llmusage/", **bearer(acme_key))
    client.get("/api/llmusage/", **bearer(acme_key))

    assert scrape(client, **token)[key] == before + 2


@pytest.mark.django_db
def test_responses_are_counted_by_status_view_and_method(client, token, acme_key):
    def responses(status: str, view: str, method: str) -> float:
        series = (
            "django_http_responses_total_by_status_view_method_total",
            (("method", method), ("status", status), ("view", view)),
        )
        return scrape(client, **token).get(series, 0)

    before = {
        "ok": responses("200", "llmusage-list", "GET"),
        "refused": responses("401", "llmusage-list", "GET"),
        "no route": responses("404", "api-not-found", "GET"),
        "odd method": responses("405", "llmusage-list", "<invalid method>"),
    }

    client.get("/api/llmusage/", **bearer(acme_key))
    client.get("/api/llmusage/")
    client.get("/api/no-such-endpoint/", **bearer(acme_key))
    client.generic("BREW", "/api/llmusage/", **bearer(acme_key))

    assert responses("200", "llmusage-list", "GET") == before["ok"] + 1
    assert responses("401", "llmusage-list", "GET") == before["refused"] + 1
    assert responses("404", "api-not-found", "GET") == before["no route"] + 1
    assert responses("405", "llmusage-list", "<invalid method>") == before["odd method"] + 1


@pytest.mark.django_db
def test_database_unreadable_still_answers_with_database_up_zero(client, token, monkeypatch):
    def unreadable():
        raise DatabaseError("connection refused")

    monkeypatch.setattr(UsageCollector, "figures", staticmethod(unreadable))

    metrics = scrape(client, **token)

    assert metrics[("llmlog_database_up", ())] == 0
    assert ("llmlog_usage_pending_records", ()) not in metrics


@pytest.mark.django_db
@pytest.mark.postgres
def test_scrape_queries_use_the_indexes(token):
    """Each figure is an index probe (EXPLAIN on the real tables; a seq scan here would read the hot
    table at every scrape)."""
    queries = [
        "SELECT count(*) FROM llmusage WHERE accounting_status = 'pending'",
        "SELECT id FROM llmusage WHERE accounting_status = 'pending' ORDER BY id LIMIT 1",
        "SELECT count(*) FROM llmusage_accounting_failed WHERE status = 'open'",
        "SELECT finished_at FROM llmlog_job_run WHERE job = 'backup_accounted_llmusage' "
        "AND status = 'succeeded' ORDER BY started_at DESC LIMIT 1",
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny test tables: ask what the plan can use
        for sql in queries:
            cursor.execute(f"EXPLAIN {sql}")
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "Index" in plan and "Seq Scan" not in plan, plan


# --- gunicorn: several worker processes, one answer ------------------------------------------------


@pytest.fixture
def gunicorn_server(transactional_db, tmp_path):
    """gunicorn with config/gunicorn.py and two workers on the test database, as `make run` serves."""
    env = {"LLMLOG_METRICS_TOKEN": TOKEN, "LOG_LEVEL": "INFO"}  # INFO: the request lines are read
    with servers.gunicorn_server(tmp_path, workers=2, env=env) as port:
        yield f"http://127.0.0.1:{port}", tmp_path / "prometheus", tmp_path / "gunicorn.log"


def test_counts_add_up_over_gunicorn_workers(gunicorn_server, acme_key):
    base, multiproc_dir, log = gunicorn_server
    sent = 12
    for n in range(sent):
        request = urllib.request.Request(
            f"{base}/api/llmusage/",
            data=json.dumps(org_payload(transno=f"gun-{n}")).encode(),
            headers={"Authorization": f"Bearer {acme_key}", "Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(request, timeout=10).status == 201

    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    metrics = parse(urllib.request.urlopen(request, timeout=10).read().decode())

    assert metrics[("llmlog_ingest_records_total", (("result", "created"),))] == sent
    assert metrics[("llmlog_usage_pending_records", ())] == LLMUsage.objects.count() == sent
    assert list(multiproc_dir.glob("counter_*.db")), "the workers keep their counters in the directory"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line.get("path") == "/api/llmusage/" and line["status"] == 201) == sent
