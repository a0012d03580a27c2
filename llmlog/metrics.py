"""Prometheus metrics for the engineer on call, served at `/metrics`.

- Requests: a latency histogram by view and method and a count by status, view and method
  (`RequestMetricsMiddleware`), under django-prometheus' names so that its dashboards keep working.
- Ingest: `llmlog_ingest_records_total{result}` (created | duplicate | conflict | error), counted by
  `usage_ingest_records`, the one path every ingest endpoint (native, LiteLLM, OTLP) goes through.
- Computed at scrape time from the database, each with one indexed query (`UsageCollector`): records
  pending accounting and the age of the oldest (the partial index llmusage_pending_idx; ids are uuid7,
  so the smallest pending id is the oldest and carries its ingest time), open accounting failures, and
  the last successful nightly backup: when it finished and how many records it moved.
- Budgets, read at scrape time with one query (`budget_spent_ratios`): `llmlog_budget_spent_ratio`
  {budget, org, period} = spent / limit in each budget's current period, for at most
  MAX_BUDGET_SERIES budgets, those whose latest counter is nearest their limit (so the series stay
  bounded whatever the number of budgets; the API and admin show every budget).
- Read replicas (`ReplicaCollector`, when DATABASE_REPLICA_URLS names any): `llmlog_replica_up{replica}`
  (1: it answered its last check and may serve reads) and `llmlog_replica_lag_seconds{replica}` (how
  far its replay is behind the primary, llmlog.replicas says how it is measured; absent while down).
  /healthz stays about the primary: a replica down is not a 503, reads just go to the primary.

Access: a scrape job sends `Authorization: Bearer <LLMLOG_METRICS_TOKEN>`; an operator signed in to the
admin as staff with the `llmlog.view_llmusage` permission (the figures are usage figures) can open it in
a browser. Anyone else gets a 401 (403 for a signed-in user without that permission).
A token rather than binding to localhost, because Prometheus usually scrapes from another host and
gunicorn serves one port for everything.

Under gunicorn every worker is a process with its own counters. With PROMETHEUS_MULTIPROC_DIR set
(config/gunicorn.py sets it and empties it at start), prometheus_client keeps them in files there and
this view adds up every worker's; without it (runserver, tests) the process's own registry is served.
"""

import hmac
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils.timezone import now as time_now
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

from accounting.budgets import period_bounds
from accounting.models import AccountingFailure, Budget, BudgetSpend
from llmlog.models import AccountingStatus, JobRun, LLMUsage
from llmlog.replicas import replica_statuses

logger = logging.getLogger(__name__)

INGEST_RESULTS = ("created", "duplicate", "conflict", "error")
INGEST_RECORDS = Counter("llmlog_ingest_records", "Usage records received, by ingest outcome.", ["result"])
for _result in INGEST_RESULTS:
    INGEST_RECORDS.labels(_result)  # every series exists from the start, so rate() has a baseline

BACKUP_JOB = "backup_accounted_llmusage"
MAX_BUDGET_SERIES = 1000

REQUEST_LATENCY = Histogram(
    "django_http_requests_latency_seconds_by_view_method",
    "Seconds from a request's arrival in Django to its response, by view and method.",
    ["view", "method"],
    # API reads take milliseconds, exports and the dashboard up to seconds.
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RESPONSES = Counter(
    "django_http_responses_total_by_status_view_method",
    "Responses by HTTP status, view and method.",
    ["status", "view", "method"],
)
# Any other method string is one label value, so a scanner cannot grow the series without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def count_ingest(statuses: Iterator[str]) -> None:
    """Count one ingest request's records by their outcome."""
    for result, count in Tally(statuses).items():
        INGEST_RECORDS.labels(result).inc(count)


def uuid7_seconds(value) -> float:
    """The unix time in a uuid7: its first 48 bits are milliseconds."""
    return (value.int >> 80) / 1000


class RequestMetricsMiddleware:
    """Times every request and counts its response, second in MIDDLEWARE (after the request id) so
    that the latency covers every other middleware.

    django-prometheus' two middlewares updated twelve series per request, three of them histograms
    (under gunicorn each update is a write to a shared file), for a tenth of an RPM/TPM request's time;
    the two series operators read are kept, under the same names.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match and match.view_name) or "<unnamed view>"
        method = request.method if request.method in HTTP_METHODS else "<invalid method>"
        RESPONSES.labels(str(response.status_code), view, method).inc()
        REQUEST_LATENCY.labels(view, method).observe(time.perf_counter() - started)
        return response


class UsageCollector(Collector):
    """Gauges read from the database at each scrape. Each query is an index probe or an index-only
    count over a small set (pending records, open failures), so a scrape every 15 s costs nothing."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("llmlog_database_up", "1 when the scrape could read the database.")
        try:
            figures = self.figures()
            budgets = budget_spent_ratios()
        except DatabaseError:
            logger.warning("metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, documentation, value in figures:
            yield GaugeMetricFamily(name, documentation, value=value)
        ratio = GaugeMetricFamily(
            "llmlog_budget_spent_ratio",
            f"Spent / limit of each budget in its current period (1: at its limit; at most "
            f"{MAX_BUDGET_SERIES} budgets, those nearest their limit).",
            labels=["budget", "org", "period"],
        )
        for budget_id, org, period, value in budgets:
            ratio.add_metric([str(budget_id), org, period], value)
        yield ratio

    @staticmethod
    def figures() -> list[tuple[str, str, float]]:
        pending = LLMUsage.objects.filter(accounting_status=AccountingStatus.PENDING)
        oldest_id = pending.order_by("id").values_list("id", flat=True).first()
        oldest_age = max(0.0, time.time() - uuid7_seconds(oldest_id)) if oldest_id else 0.0
        backup = (
            JobRun.objects.filter(job=BACKUP_JOB, status=JobRun.Status.SUCCEEDED)
            .order_by("-started_at")
            .values("finished_at", "counts")
            .first()
        )
        finished = backup["finished_at"].timestamp() if backup and backup["finished_at"] else 0.0
        moved = (backup["counts"] or {}).get("moved", 0) if backup else 0
        return [
            (
                "llmlog_usage_pending_records",
                "Usage records waiting to be posted to the ledger.",
                pending.count(),
            ),
            (
                "llmlog_usage_pending_oldest_age_seconds",
                "Seconds since the oldest record still pending accounting was ingested (0: none pending).",
                oldest_age,
            ),
            (
                "llmlog_accounting_failures_open",
                "Failed postings waiting for a retry or an operator (llmusage_accounting_failed, open).",
                AccountingFailure.objects.filter(status=AccountingFailure.Status.OPEN).count(),
            ),
            (
                "llmlog_backup_last_success_timestamp_seconds",
                f"When the last successful {BACKUP_JOB} run finished (unix time; 0: never).",
                finished,
            ),
            (
                "llmlog_backup_last_moved_records",
                f"Records the last successful {BACKUP_JOB} run moved to llmusage_history.",
                moved,
            ),
        ]


class ReplicaCollector(Collector):
    """Each read replica's state as this process last checked it (at most CHECK_SECONDS old)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        statuses = replica_statuses()
        if not statuses:
            return
        up = GaugeMetricFamily(
            "llmlog_replica_up",
            "1 when the read replica answered its last check; 0: reads skip it and go to the primary.",
            labels=["replica"],
        )
        lag = GaugeMetricFamily(
            "llmlog_replica_lag_seconds",
            "Seconds the read replica's replay is behind the primary (0: caught up); absent while down. "
            "Past LLMLOG_REPLICA_MAX_LAG_SECONDS reads go to the primary.",
            labels=["replica"],
        )
        for alias, is_up, seconds in statuses:
            up.add_metric([alias], 1 if is_up else 0)
            if seconds is not None:
                lag.add_metric([alias], seconds)
        yield up
        yield lag


def budget_spent_ratios(*, now=None) -> list[tuple[int, str, str, float]]:
    """(id, org, period, spent / limit) of the MAX_BUDGET_SERIES budgets nearest their limit, now.

    One query: each budget with its latest counter (the unique (budget, period_start) index), ordered by
    that counter's ratio. A budget whose latest counter is of an earlier period has counted nothing in
    this one: it reports 0 (its period is worked out here, in its own time zone, as budget_statuses
    does)."""
    latest = BudgetSpend.objects.filter(budget=OuterRef("pk")).order_by("-period_start")
    rows = (
        Budget.objects.annotate(
            latest_start=Subquery(latest.values("period_start")[:1]),
            latest_spent=Subquery(latest.values("spent")[:1]),
        )
        .annotate(latest_ratio=F("latest_spent") / F("limit"))
        .order_by(F("latest_ratio").desc(nulls_last=True), "id")
        .values_list("id", "org", "period", "time_zone", "limit", "latest_start", "latest_spent")[
            :MAX_BUDGET_SERIES
        ]
    )
    now = now or time_now()
    ratios = []
    for budget_id, org, period, time_zone, limit, start, spent in rows:
        current = start is not None and start == period_bounds(period=period, time_zone=time_zone, at=now)[0]
        ratios.append((budget_id, org, period, float(spent / limit) if current else 0.0))
    return ratios


# What a session needs to read the figures: they count usage records and failures of every org.
METRICS_PERMISSION = "llmlog.view_llmusage"


def _allowed(request: HttpRequest) -> bool:
    token = settings.LLMLOG_METRICS_TOKEN
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if token and scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff and user.has_perm(METRICS_PERMISSION))


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return HttpResponse(
                f"Staff with the {METRICS_PERMISSION} permission only.\n",
                status=403,
                content_type="text/plain",
            )
        response = HttpResponse(
            "Send Authorization: Bearer <LLMLOG_METRICS_TOKEN>, or sign in to the admin as staff.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    scrape = CollectorRegistry()
    scrape.register(UsageCollector())
    scrape.register(ReplicaCollector())
    return HttpResponse(
        generate_latest(processes) + generate_latest(scrape), content_type=CONTENT_TYPE_LATEST
    )
