"""The most one usage record may count or charge, in one place.

Each bound is far above any real call (the longest context windows are a few million tokens; a call
that costs a thousand dollars is already an incident) and far below what the columns and the hourly
rollups can hold: a rollup bucket sums bigint token counts and Decimal(28, 5) money, so even a billion
records at these maximums in one hour cannot overflow it. A value past a bound is a 400 naming the field
and the bound, never a row that later breaks the rollup build for every org.
"""

from decimal import Decimal

# Per token kind (input, output, cached, cache creation, reasoning, image input) of one record.
MAX_TOKENS = 10**10
# total_tokens is input + output, so it may reach twice the per-kind bound.
MAX_TOTAL_TOKENS = 2 * MAX_TOKENS
MAX_WEB_SEARCHES = 10**6
# amount and cost of one record, stated by a platform key or priced from the price book.
MAX_MONEY = Decimal(10**6)
