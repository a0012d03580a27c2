"""Token counts of a record: those it states, the rest read from the provider's raw `usages` object,
checked against the design's convention (cached, cache creation and image input are parts of input;
reasoning is part of output; total is input + output) and against llmlog.limits."""

from typing import Any

from llmlog.ingest.wire import UsageIn
from llmlog.limits import MAX_TOKENS, MAX_WEB_SEARCHES
from llmlog.models import TOKEN_COUNT_FIELDS
from llmlog.pricing import TokenCounts


def token_counts(record: UsageIn, errors: dict[str, str]) -> TokenCounts:
    """The record's counts, filling what it left out from its raw `usages`, checked against the convention."""
    derived = usage_counts_from_raw(record.usages, errors) if record.usages else {}
    counts = {}
    for name in TOKEN_COUNT_FIELDS:
        sent = getattr(record, name)
        counts[name] = sent if sent is not None else derived.get(name, 0)
        limit = MAX_WEB_SEARCHES if name == "web_search_count" else MAX_TOKENS
        if counts[name] > limit:  # derived sums (Anthropic's input + cache) can pass the bound
            errors[name] = f"{counts[name]} is more than {limit}, the most this count can be."
    tokens = TokenCounts(**counts)
    prompt_parts = tokens.cached_tokens + tokens.cache_creation_tokens + tokens.image_input_tokens
    if prompt_parts > tokens.input_tokens:
        errors["cached_tokens"] = (
            f"cached_tokens + cache_creation_tokens + image_input_tokens ({prompt_parts}) "
            f"exceed input_tokens ({tokens.input_tokens}): they are parts of it."
        )
    if tokens.reasoning_tokens > tokens.output_tokens:
        errors["reasoning_tokens"] = (
            f"reasoning_tokens ({tokens.reasoning_tokens}) exceed output_tokens ({tokens.output_tokens}): "
            "they are part of it."
        )
    expected_total = tokens.input_tokens + tokens.output_tokens
    if record.total_tokens is not None and record.total_tokens != expected_total:
        errors["total_tokens"] = (
            f"total_tokens ({record.total_tokens}) must equal "
            f"input_tokens + output_tokens ({expected_total})."
        )
    return tokens


# Each count's path in the raw usage objects below, split once here rather than for every record.
PATH_PARTS = {
    path: tuple(path.split("."))
    for path in (
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details.cached_tokens",
        "prompt_tokens_details.image_tokens",
        "completion_tokens_details.reasoning_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "input_tokens",
        "output_tokens",
        "server_tool_use.web_search_requests",
        "input_tokens_details.cached_tokens",
        "output_tokens_details.reasoning_tokens",
    )
}


def usage_counts_from_raw(usages: dict[str, Any], errors: dict[str, str]) -> dict[str, int]:
    """Token counts from a provider's raw usage object, OpenAI's or Anthropic's shape."""

    def number(path: str) -> int:
        value: Any = usages
        for part in PATH_PARTS[path]:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
            errors[f"usages.{path}"] = f"Expected a non-negative integer of at most {MAX_TOKENS}."
            return 0
        return value

    if "prompt_tokens" in usages or "completion_tokens" in usages:  # OpenAI chat completions
        return {
            "input_tokens": number("prompt_tokens"),
            "output_tokens": number("completion_tokens"),
            "cached_tokens": number("prompt_tokens_details.cached_tokens"),
            "image_input_tokens": number("prompt_tokens_details.image_tokens"),
            "reasoning_tokens": number("completion_tokens_details.reasoning_tokens"),
        }
    if (
        "cache_read_input_tokens" in usages
        or "cache_creation_input_tokens" in usages
        or "server_tool_use" in usages
    ):
        # Anthropic: input_tokens excludes the cache reads and writes.
        cached = number("cache_read_input_tokens")
        creation = number("cache_creation_input_tokens")
        return {
            "input_tokens": number("input_tokens") + cached + creation,
            "output_tokens": number("output_tokens"),
            "cached_tokens": cached,
            "cache_creation_tokens": creation,
            "web_search_count": number("server_tool_use.web_search_requests"),
        }
    # OpenAI responses API (input_tokens includes the cached ones), or a plain {input, output} pair.
    return {
        "input_tokens": number("input_tokens"),
        "output_tokens": number("output_tokens"),
        "cached_tokens": number("input_tokens_details.cached_tokens"),
        "reasoning_tokens": number("output_tokens_details.reasoning_tokens"),
    }
