"""`/healthz` for load balancers and uptime checks, `/` for people, and the JSON 404 of the API paths.

`/healthz` answers 200 `{"database": "ok", "broker": "ok"}` when a query reaches the database and a
connection reaches the Celery broker, else 503 with the failing part's error class (never its message: a
driver's message can quote a URL with its password). No authentication: it says nothing but up or down,
and a load balancer has no key. Each check is bounded (the broker's connect timeout, one try), so a
dead dependency answers 503 within seconds instead of hanging the probe.
"""

# Celery's current app is the one config/__init__.py creates: llmlog stays below config.
from celery import current_app as celery_app
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

BROKER_TIMEOUT_SECONDS = 2


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure is "down": the probe must answer, not raise
        return f"error: {type(exc).__name__}"
    return "ok"


def check_broker() -> str:
    try:
        with celery_app.connection_for_write(connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
            )
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


@never_cache
@require_safe
def healthz_view(request: HttpRequest) -> JsonResponse:
    checks = {"database": check_database(), "broker": check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    if not healthy:
        down = ", ".join(name for name, value in checks.items() if value != "ok")
        checks["detail"] = f"Not answering: {down}."
    return JsonResponse(checks, status=200 if healthy else 503)


@csrf_exempt  # a write to no route is a JSON 404, not the CSRF middleware's HTML 403: it changes nothing
def api_not_found_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Every path under /api/ (and /v1/) that no route matched: a JSON 404 whatever DEBUG is (Django's
    handler404 runs only with DEBUG off). A GET of a route without its trailing slash is still redirected,
    as CommonMiddleware's APPEND_SLASH would have done had this catch-all not matched first."""
    if request.method in ("GET", "HEAD") and not request.path.endswith("/"):
        try:
            match = resolve(request.path_info + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found_view:
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
    return JsonResponse({"detail": f"No such endpoint: {request.path}"}, status=404)
