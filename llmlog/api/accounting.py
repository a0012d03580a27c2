"""The accounting API: accounts, their ledger lines and top-ups; failed postings, their retry and resolution;
re-pricings (llmlog/api/repricings.py).

Thin views over `accounting.ledger`, `accounting.failures` and `llmlog.posting` (retrying reads usage
rows, which is why these views live on llmlog's side: `accounting` never imports llmlog).

Who may do what:
- read (`read` scope): an org key sees its own org's accounts, lines and failures (another org's is a
  404); a platform key or a staff session sees every org.
- create an account, change it, top it up, resolve or ignore a failure: a platform admin (a platform
  key with role admin or owner).
- retry a failure: a platform admin, or an org key with role admin or owner for its own org's failures
  (retrying only posts what the record says; it never writes anything off).
- a staff session: what its Django permissions allow (`staff_permissions` of each viewset): view to
  read, add to create an account, change to change one, top it up, retry, resolve or ignore a failure.
"""

from rest_framework.routers import SimpleRouter

from llmlog.api.accounts import AccountViewSet
from llmlog.api.failures import AccountingFailureViewSet
from llmlog.api.repricings import RepricingViewSet
from llmlog.api.statements import StatementViewSet

# Both `/retry` and `/retry/` (and so on): the design's paths have no trailing slash, and a POST
# redirected to add one would lose its body.
router = SimpleRouter()
router.trailing_slash = "/?"  # DRF's constructor only takes True/False; the regex is what it builds with
router.register("accounts", AccountViewSet, basename="account")
router.register(r"accounts/(?P<org>[^/]+)/statements", StatementViewSet, basename="statement")
router.register("accounting-failures", AccountingFailureViewSet, basename="accounting-failure")
# /api/repricings/ (issue 20): re-pricing past usage, a platform admin's (llmlog/api/repricings.py)
router.register("repricings", RepricingViewSet, basename="repricing")

urlpatterns = router.urls
