"""The dialects' paths, under /api/ (included from config/urls.py).

Order matters where the dialects meet under /api/log/: new-api's fixed paths (`self/search` above all)
come before AI Proxy's `log/<group>/search`.
"""

from django.urls import path

from llmlog.api.dialects import aiproxy, newapi, oneuptime

urlpatterns = [
    # OneUptime's LLM Log API
    path("llm-log/get-list", oneuptime.LLMLogListView.as_view(), name="oneuptime-llm-log-list"),
    path("llm-log/count", oneuptime.LLMLogCountView.as_view(), name="oneuptime-llm-log-count"),
    path("llm-log/<str:pk>/get-item", oneuptime.LLMLogItemView.as_view(), name="oneuptime-llm-log-item"),
    # new-api's log module
    path("log/", newapi.LogView.as_view(), name="newapi-log"),
    path("log/self", newapi.SelfLogView.as_view(), name="newapi-log-self"),
    path("log/self/stat", newapi.SelfLogStatView.as_view(), name="newapi-log-self-stat"),
    path("log/self/search", newapi.SelfLogSearchView.as_view(), name="newapi-log-self-search"),
    path("log/stat", newapi.LogStatView.as_view(), name="newapi-log-stat"),
    path("log/search", newapi.LogSearchView.as_view(), name="newapi-log-search"),
    path("log/token", newapi.TokenLogView.as_view(), name="newapi-log-token"),
    # AI Proxy's log search
    path("logs/search", aiproxy.AiProxySearchView.as_view(), name="aiproxy-logs-search"),
    path("log/<str:group>/search", aiproxy.AiProxyGroupSearchView.as_view(), name="aiproxy-group-search"),
]
