"""Compatibility dialects: the read APIs of the systems llmlog replaces, so their clients work unchanged.

- `oneuptime`: OneUptime's LLM Log API, `/api/llm-log/get-list`, `/{id}/get-item`, `/count`.
- `newapi`: new-api's log module, the `/api/log/` family (`/self`, `/stat`, `/search`, `/token`, DELETE).
- `aiproxy`: AI Proxy's log search, `/api/logs/search` and `/api/log/{group}/search`.

Each dialect maps its own names, units and envelope onto the one read model (`llmlog.selectors`,
hot and history alike) and keeps the API's rules: an org key sees only its org, bad input is a 400
naming the parameter (in the dialect's envelope), and page numbers never reach deeper than
`llmlog.queries.MAX_PAGE_DEPTH` records.

Each dialect is a package: `params` (its parameters as a UsageQuery), `shapes` (its answers), `schema`
(its OpenAPI declarations) and `views` (parse, read through llmlog.selectors, shape).
"""
