from rest_framework.routers import SimpleRouter

from llmlog.api import budgets, drift, exports
from llmlog.api.history import LLMUsageHistoryViewSet
from llmlog.api.views import LLMUsageViewSet

# Every route answers with or without its trailing slash: a client that drops it must not get
# APPEND_SLASH's redirect, which turns a POST into a GET and loses the record.
router = SimpleRouter()
router.trailing_slash = "/?"  # DRF's constructor takes only True/False; the regex is what it builds with
router.register("llmusage", LLMUsageViewSet, basename="llmusage")
router.register("llmusage-history", LLMUsageHistoryViewSet, basename="llmusage-history")

# /api/budgets/ and /api/holds/ (issue 19: budgets that hold)
# /api/llmusage/cost-drift/ (issue 20) first: the router would read "cost-drift" as a record's id
urlpatterns = drift.urlpatterns + router.urls + budgets.urlpatterns
# /api/exports/focus/ (issue 20: billing exports)
urlpatterns += exports.urlpatterns
