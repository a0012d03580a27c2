from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from llmlog.api.adapters import LiteLLMIngestView, OTLPTracesView
from llmlog.dashboard import dashboard_view
from llmlog.health import api_not_found_view, healthz_view
from llmlog.metrics import metrics_view

urlpatterns = [
    # Where `make run`'s address and the admin's "View site" lead: links to the admin, API docs, health.
    path("", TemplateView.as_view(template_name="llmlog/home.html"), name="home"),
    # For load balancers: 200 when the database and the broker answer, 503 naming which does not.
    path("healthz", healthz_view, name="healthz"),
    # The operator's dashboard, inside the admin (login, staff, never cached); before admin/ so it wins.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    # Prometheus; a bearer token (LLMLOG_METRICS_TOKEN) or a staff session (llmlog.metrics).
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/", include("llmlog.api.urls")),
    # /api/accounts/ and /api/accounting-failures/ (the ledger and failed postings)
    path("api/", include("llmlog.api.accounting")),
    # OneUptime's /api/llm-log/, new-api's /api/log/ and AI Proxy's /api/logs/search, /api/log/{group}/search
    path("api/", include("llmlog.api.dialects.urls")),
    # Gateway adapters. OTLP exporters append /v1/traces to the endpoint they are given, so the root
    # path is what `OTEL_EXPORTER_OTLP_ENDPOINT=http://llmlog:8000` reaches; both answer the same.
    re_path(r"^api/ingest/litellm/?$", LiteLLMIngestView.as_view(), name="ingest-litellm"),
    path("api/ingest/otlp/v1/traces", OTLPTracesView.as_view(), name="ingest-otlp"),
    path("v1/traces", OTLPTracesView.as_view(), name="otlp-traces"),
    # Writes answer with or without the trailing slash, never with APPEND_SLASH's redirect (a client
    # follows it as a GET and the spans are lost); the other spelling stays out of the schema.
    path("api/ingest/otlp/v1/traces/", OTLPTracesView.as_view(schema=None), name="ingest-otlp-slash"),
    path("v1/traces/", OTLPTracesView.as_view(schema=None), name="otlp-traces-slash"),
    # Last: any other path under /api/ or /v1/ is a JSON 404, with DEBUG on as well (handler404 below
    # runs only with DEBUG off).
    re_path(r"^(?:api|v1)/(?P<rest>.*)$", api_not_found_view, name="api-not-found"),
]

# An unknown path under /api/ (or /v1/) answers JSON like every API error; the rest Django's page.
handler404 = "llmlog.api.errors.not_found"
