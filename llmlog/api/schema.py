"""OpenAPI descriptions of the request bodies that msgspec validates (the ingest hot path skips DRF)."""

from typing import Any

import msgspec


def openapi_schema(struct_type: type) -> dict[str, Any]:
    """msgspec's JSON Schema of `struct_type` as an OpenAPI 3.0 schema: $defs inlined, null as nullable."""
    schema = msgspec.json.schema(struct_type)
    return _to_openapi(schema, schema.get("$defs", {}))


def _to_openapi(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_to_openapi(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _to_openapi(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    out = {key: _to_openapi(value, defs) for key, value in node.items() if key != "$defs"}
    if out.get("required") == []:
        del out["required"]  # OpenAPI wants a non-empty list or none
    choices = out.get("anyOf")
    if choices and {"type": "null"} in choices:
        # OpenAPI 3.0 has no null type: `anyOf: [X, null]` is X with `nullable: true`.
        rest = [choice for choice in choices if choice != {"type": "null"}]
        del out["anyOf"]
        out.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        out["nullable"] = True
    return out


# --- what every operation may answer -------------------------------------------------------------

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": '{"detail": message}, or {parameter or field: [messages]} naming each bad one.',
    "additionalProperties": True,
}
ERROR_DESCRIPTIONS = {
    "400": "A bad parameter or body; the answer names it.",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The key lacks the scope or role this needs.",
    "404": "No such object (or one of another org), or a page past the end.",
    "429": "Too many ingest requests for this key (LLMLOG_INGEST_RATE); see Retry-After.",
    "503": "The database is unavailable (restarting); retry after Retry-After seconds.",
}


def document_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: every operation documents the errors it can answer.

    Views declare their success answers and the errors particular to them; the ones every operation
    shares are added here, in the operation's own error envelope (a dialect answers errors its way)
    when it declares one: 400 (bad input), 503 (the database is away), 401 and 403 (authenticated
    operations), 404 (operations with a path parameter or page numbers) and 429 (operations that need
    the `ingest` scope, which the ingest throttle counts). An optional query parameter sent empty is
    the parameter not sent (filters, pages and the dialects' clients all read it so): `allowEmptyValue`
    says so.
    """
    ingest_operations = _ingest_operations(generator)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.get("parameters", [])
            for parameter in parameters:
                if parameter.get("in") == "query" and not parameter.get("required"):
                    parameter["allowEmptyValue"] = True
            wanted = ["400", "503"]
            if any(operation.get("security") or ()):  # an operation with `auth=[]` has none
                wanted += ["401", "403"]
            names = {parameter.get("name") for parameter in parameters}
            if any(parameter.get("in") == "path" for parameter in parameters) or "page" in names:
                wanted.append("404")
            if (path, method.upper()) in ingest_operations:
                wanted.append("429")
            responses = operation["responses"]
            envelope = _error_content(responses.get("400"), operation)
            for code in wanted:
                if code not in responses:
                    responses[code] = {"description": ERROR_DESCRIPTIONS[code], "content": envelope}
                elif "content" not in responses[code]:
                    responses[code]["content"] = envelope
    return result


def _error_content(declared: dict[str, Any] | None, operation: dict[str, Any]) -> dict[str, Any]:
    """The content of the operation's own 400 when it declares one, else the common error object (in
    JSON, and in protobuf too where the request may be protobuf: OTLP answers in the request's encoding)."""
    if declared and declared.get("content"):
        return declared["content"]
    content: dict[str, Any] = {"application/json": {"schema": ERROR_SCHEMA}}
    if "application/x-protobuf" in operation.get("requestBody", {}).get("content", {}):
        content["application/x-protobuf"] = {"schema": {"type": "string", "format": "binary"}}
    return content


def _ingest_operations(generator: Any) -> set[tuple[str, str]]:
    """(path, METHOD) of the operations whose view requires the `ingest` scope (throttled)."""
    found = set()
    for path, _regex, method, view in getattr(generator, "endpoints", None) or []:
        cls = getattr(view, "cls", None)
        scopes = getattr(cls, "required_scopes", {})
        action = (getattr(view, "actions", None) or {}).get(method.lower())
        if scopes.get(action) == "ingest" or scopes.get(method.lower()) == "ingest":
            found.add((path.replace("{pk}", "{id}"), method.upper()))
    return found
