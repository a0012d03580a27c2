"""AI Proxy's log search: `GET /api/logs/search` and `GET /api/log/{group}/search`.

As AI Proxy documents it (seeds/aiproxy-log-search-api.txt): parameters `page` (from 1), `per_page`
(default 10, at most 100), `model_name`, `token_name`, `start_timestamp` / `end_timestamp` in unix
milliseconds (inclusive), `code_type` = all | success | error; the answer is
`{data: {logs, total, models, token_names, channels}, message, success}`.

An AI Proxy group is the tenant that owns the tokens and pays: an llmlog org. So `{group}` is a
`userorgid` (an org key may ask for its own org only; another org's group is a 404), a log's `group`
is its org, and `/api/logs/search` is every record the caller may see (a platform key: every org's;
an org key: its org's). A group named `self` cannot be asked for this way: `/api/log/self/search` is
new-api's search of the caller's own records.

A log carries its usage by token kind, its price breakdown (the sale unit prices applied, per
`*_unit` tokens: llmlog's prices are per 1M tokens), `used_amount` (the amount charged),
`ttfb_milliseconds` (time to first byte), `request_at` (the call's start) and `created_at` (when
llmlog received it), and `request_detail`: the kept request and response with a truncated flag each.
Ids are integers, as AI Proxy's: a log's `id` (and its request_detail's `id` and `log_id`) is the
record's `seq`; `channel` and `token_id` are the gateway's ids when they are whole numbers, 0 otherwise
(the token's name is in `token_name`); `channels` lists integers.
`mode` is AI Proxy's relay mode, read from the endpoint (1 chat completions, 2 completions,
3 embeddings, ... 12 Anthropic messages, 16 responses; 0 unknown).

The facets `models`, `token_names` and `channels` list the values met in the group's (or caller's)
newest FACET_SAMPLE records of the time range, whatever the model, token and code filters: a bounded
read along the (userorgid, use_time) index, so they stay cheap on a table of any size.
"""
