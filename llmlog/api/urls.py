from rest_framework.routers import SimpleRouter

from llmlog.api.views import LLMUsageViewSet

router = SimpleRouter()
router.register("llmusage", LLMUsageViewSet, basename="llmusage")

urlpatterns = router.urls
