import logging

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def field_errors(exc: ValueError) -> dict[str, str]:
    """The services say 'field: message'; the API answers {field: message}."""
    name, sep, message = str(exc).partition(": ")
    return {name: message} if sep and name.isidentifier() else {"non_field_errors": str(exc)}


# How long a client is asked to wait when the database is away (a restart takes seconds).
DATABASE_RETRY_AFTER_SECONDS = 5


def exception_handler(exc, context):
    """DRF's handler, plus a JSON 413 for bodies over DATA_UPLOAD_MAX_MEMORY_SIZE and a JSON 503 with
    Retry-After while the database cannot be reached (restarting, failing over), instead of a 500 page."""
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, OperationalError | InterfaceError):
        # The class only: a driver's message can quote the statement's parameters (bodies, key hashes).
        logger.warning("the database is unavailable: %s", type(exc).__name__)
        return Response(
            {
                "detail": "The database is unavailable; retry in a few seconds. Resending the same records "
                "is safe: ingest is idempotent on transno."
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    return drf_exception_handler(exc, context)


class SingleValuedQueryMixin:
    """Each query parameter at most once: `?userorgid=a&userorgid=b` is a 400 naming it, not whichever
    value a reader happens to take (a proxy that checked the first while the view used the last would
    be HTTP parameter pollution). For APIView subclasses; runs after authentication."""

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        repeated = sorted(name for name, values in request.query_params.lists() if len(values) > 1)
        if repeated:
            raise ValidationError({name: ["Given more than once; send it once."] for name in repeated})


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: API paths answer JSON (a client parses errors as JSON), the rest Django's page."""
    if request.path.startswith(("/api/", "/v1/")):
        return JsonResponse({"detail": f"No such endpoint: {request.path}"}, status=404)
    return page_not_found(request, exception)
