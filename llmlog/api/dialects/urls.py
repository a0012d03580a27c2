"""The dialects' paths, under /api/ (included from config/urls.py).

Order matters where the dialects meet under /api/log/: new-api's fixed paths (`self/search` above all)
come before AI Proxy's `log/<group>/search`. Each path answers with or without a trailing slash (`both`):
a write must never meet APPEND_SLASH's redirect, which a client follows as a GET.
"""

from django.urls import path

from llmlog.api.dialects.aiproxy import views as aiproxy
from llmlog.api.dialects.newapi import views as newapi
from llmlog.api.dialects.oneuptime import views as oneuptime


def both(route: str, view, name: str) -> list:
    """`route` as the dialect spells it (in the schema), and the same route with or without the trailing
    slash answering alike (left out of the schema: one path per operation there)."""
    other = route.removesuffix("/") if route.endswith("/") else f"{route}/"
    return [
        path(route, view.as_view(), name=name),
        path(other, view.as_view(schema=None), name=f"{name}-other-slash"),
    ]


urlpatterns = [
    # OneUptime's LLM Log API
    *both("llm-log/get-list", oneuptime.LLMLogListView, "oneuptime-llm-log-list"),
    *both("llm-log/count", oneuptime.LLMLogCountView, "oneuptime-llm-log-count"),
    *both("llm-log/<str:pk>/get-item", oneuptime.LLMLogItemView, "oneuptime-llm-log-item"),
    # new-api's log module
    *both("log/", newapi.LogView, "newapi-log"),
    *both("log/self", newapi.SelfLogView, "newapi-log-self"),
    *both("log/self/stat", newapi.SelfLogStatView, "newapi-log-self-stat"),
    *both("log/self/search", newapi.SelfLogSearchView, "newapi-log-self-search"),
    *both("log/stat", newapi.LogStatView, "newapi-log-stat"),
    *both("log/search", newapi.LogSearchView, "newapi-log-search"),
    *both("log/token", newapi.TokenLogView, "newapi-log-token"),
    # AI Proxy's log search
    *both("logs/search", aiproxy.AiProxySearchView, "aiproxy-logs-search"),
    *both("log/<str:group>/search", aiproxy.AiProxyGroupSearchView, "aiproxy-group-search"),
]
