from io import StringIO

from django.core.management import call_command


def test_openapi_schema_is_valid_and_generates_without_warnings(tmp_path):
    """Clients (and schemathesis) read /api/schema/: it must be valid OpenAPI 3.0, with no guessed parts."""
    target = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=StringIO())

    text = target.read_text()
    for path in ("/api/llmusage/", "/api/llm-log/get-list", "/api/log/", "/api/logs/search"):
        assert f"  {path}:" in text
