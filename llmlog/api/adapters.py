"""Endpoints for gateways that already speak a format of their own: LiteLLM's generic logger and OTLP.

Thin views: read the body (size-checked, gzip allowed), hand it to the adapter, answer in the gateway's
terms. The mapping lives in llmlog.adapters; validation, pricing and storage are the native ingest's.
"""

import zlib

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from google.rpc.status_pb2 import Status
from rest_framework import exceptions, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from llmlog.adapters import litellm, otlp, otlp_wire
from llmlog.adapters.common import ingest_gateway_records, summary
from llmlog.api.auth import HasScope, caller_of
from llmlog.api.serializers import BulkIngestResponseSerializer
from llmlog.bodies import TooBig
from llmlog.ingest.service import IngestResult
from llmlog.ingest.wire import BodyError

# LiteLLM's default batch is 512 records of ~11 KB each (about 5.6 MB); 16 MiB leaves room for prompts
# three times that long. The global DATA_UPLOAD_MAX_MEMORY_SIZE does not apply: these views read the
# body themselves, so it is checked here, before and while reading.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def max_body_bytes() -> int:
    return getattr(settings, "LLMLOG_ADAPTER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)


# A 413's body: what was too big, and for a count, the setting and its value.
TOO_BIG_ANSWER = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "setting": {"type": "string", "example": "LLMLOG_MAX_RECORDS_PER_REQUEST"},
        "max_records": {"type": "integer", "example": 10000},
    },
    "required": ["detail"],
}


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, at most `limit` bytes (after gzip decoding too), or a 4xx naming the problem."""
    django_request = request._request
    try:
        declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge(f"The body is {declared} bytes; this endpoint takes at most {limit} bytes.")
    body = django_request.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(f"The body is over {limit} bytes, the most this endpoint takes.")
    encoding = django_request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise exceptions.UnsupportedMediaType(
            encoding, detail=f"Content-Encoding {encoding!r} is not supported: send gzip or no encoding."
        )
    decompressor = zlib.decompressobj(wbits=31)
    try:
        plain = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise exceptions.ParseError(f"The gzip body does not decompress: {exc}") from None
    if len(plain) > limit or decompressor.unconsumed_tail:
        raise BodyTooLarge(f"The body decompresses to over {limit} bytes, the most this endpoint takes.")
    if not decompressor.eof:
        raise exceptions.ParseError("The gzip body is truncated.")
    return plain


def bulk_response(result: IngestResult) -> Response:
    """A bulk answer (native and LiteLLM): 201 when something was created, 200 when every record was
    already stored, 400 when none could be, 207 for a mix; the body is `summary`'s."""
    failed = result.count("error") + result.count("conflict")
    if not failed:
        code = status.HTTP_201_CREATED if result.count("created") else status.HTTP_200_OK
    elif failed == len(result.items):
        code = status.HTTP_400_BAD_REQUEST
    else:
        code = status.HTTP_207_MULTI_STATUS
    return Response(summary(result), status=code)


class LiteLLMIngestView(APIView):
    """LiteLLM's GenericAPILogger posts here: `GENERIC_LOGGER_ENDPOINT=<llmlog>/api/ingest/litellm/`."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"post": "ingest"}
    parser_classes: list = []  # the body is read raw: a JSON array, NDJSON, or one object

    @extend_schema(
        summary="Ingest LiteLLM's StandardLoggingPayload records (GenericAPILogger)",
        description=(
            "A JSON array (LiteLLM's default `json_array`), NDJSON (`ndjson`) or one record per request "
            "(`single`). Each record is stored once, keyed by its `id`; a record that cannot be mapped "
            "is reported in `items` and does not block the others. gzip bodies are accepted."
        ),
        request={
            "application/json": {
                "oneOf": [{"type": "array", "items": {"type": "object"}, "minItems": 1}, {"type": "object"}]
            },
            "application/x-ndjson": {"type": "string"},
        },
        responses={
            201: OpenApiResponse(BulkIngestResponseSerializer, "Records stored."),
            200: OpenApiResponse(BulkIngestResponseSerializer, "Nothing new: every record already stored."),
            207: OpenApiResponse(BulkIngestResponseSerializer, "Some records in error or conflict."),
            400: OpenApiResponse(
                description="Malformed body, or no record could be stored; names the field."
            ),
            413: OpenApiResponse(
                TOO_BIG_ANSWER,
                "Body too large, or more records than LLMLOG_MAX_RECORDS_PER_REQUEST; nothing stored.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        body = read_body(request, limit=max_body_bytes())
        try:
            items = litellm.parse_litellm_body(body)
        except BodyError as exc:
            raise exceptions.ParseError(str(exc)) from None
        except TooBig as exc:
            return Response(exc.as_dict(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        result = ingest_gateway_records(
            records=litellm.litellm_records(items),
            org=caller_of(request).userorgid,
            source_names=litellm.SOURCE_NAMES,
        )
        return bulk_response(result)


# gRPC codes for the google.rpc.Status that OTLP/HTTP puts in every error body.
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8}


class OTLPTracesView(APIView):
    """OTLP/HTTP trace export: point an exporter's endpoint at `<llmlog>` (it appends /v1/traces)."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = {"post": "ingest"}
    parser_classes: list = []  # protobuf or JSON, decoded by the adapter

    @extend_schema(
        summary="Ingest OpenTelemetry GenAI spans (OTLP/HTTP)",
        description=(
            "An ExportTraceServiceRequest, binary protobuf or OTLP/JSON. Each span with `gen_ai.*` model "
            "or token attributes becomes a usage record keyed by trace and span id; other spans are ignored "
            "and counted in `partial_success.error_message`; spans that cannot be mapped are counted in "
            "`partial_success.rejected_spans`. gzip bodies are accepted."
        ),
        request={
            otlp_wire.PROTOBUF: {"type": "string", "format": "binary"},
            otlp_wire.JSON: {"type": "object"},
        },
        responses={
            200: OpenApiResponse(description="ExportTraceServiceResponse, in the request's encoding."),
            400: OpenApiResponse(description="The body does not parse (a google.rpc.Status says why)."),
            413: OpenApiResponse(
                description="Body too large, or more spans than LLMLOG_MAX_RECORDS_PER_REQUEST: nothing "
                "stored (a google.rpc.Status names the cap)."
            ),
            415: OpenApiResponse(description="Neither application/x-protobuf nor application/json."),
        },
    )
    def post(self, request: Request) -> HttpResponse:
        content_type = self._content_type(request)
        if content_type is None:
            raise exceptions.UnsupportedMediaType(
                request._request.content_type or "",
                detail=f"Send OTLP as {otlp_wire.PROTOBUF} or {otlp_wire.JSON}.",
            )
        body = read_body(request, limit=max_body_bytes())
        try:
            message = otlp_wire.parse_otlp(body, content_type)
        except BodyError as exc:
            raise exceptions.ParseError(str(exc)) from None
        except TooBig as exc:
            raise BodyTooLarge(str(exc)) from None
        batch = otlp.otlp_records(message)
        result = ingest_gateway_records(
            records=batch.records, org=caller_of(request).userorgid, source_names=otlp.SOURCE_NAMES
        )
        answer = otlp.export_response(batch, result)
        return HttpResponse(otlp_wire.encode(answer, content_type), content_type=content_type)

    @staticmethod
    def _content_type(request: Request) -> str | None:
        content_type = (request._request.content_type or "").lower()
        return content_type if content_type in (otlp_wire.PROTOBUF, otlp_wire.JSON) else None

    def handle_exception(self, exc: Exception) -> HttpResponse:
        """OTLP/HTTP error bodies are a google.rpc.Status, in the encoding of the request."""
        response = super().handle_exception(exc)
        detail = (
            response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        )
        content_type = self._content_type(self.request) or otlp_wire.JSON
        message = Status(code=GRPC_CODES.get(response.status_code, 2), message=str(detail))
        answer = HttpResponse(
            otlp_wire.encode(message, content_type), status=response.status_code, content_type=content_type
        )
        for header in ("WWW-Authenticate", "Retry-After"):
            if header in response:
                answer[header] = response[header]
        return answer
