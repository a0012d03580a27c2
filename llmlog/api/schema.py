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
