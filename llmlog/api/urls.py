from rest_framework.routers import SimpleRouter

from llmlog.api.views import LLMUsageHistoryViewSet, LLMUsageViewSet

router = SimpleRouter()
router.register("llmusage", LLMUsageViewSet, basename="llmusage")
router.register("llmusage-history", LLMUsageHistoryViewSet, basename="llmusage-history")

urlpatterns = router.urls
