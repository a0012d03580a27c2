"""Money everywhere: Decimal(18, 5), as llmage's amount and cost, in both apps.

Migrations keep their literal 18 and 5 (an old migration must not change when this does).
"""

from decimal import ROUND_HALF_UP, Decimal

from django.db import models

MONEY_DIGITS = 18
MONEY_PLACES = 5
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


def money_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


def quantize_money(value: Decimal | int) -> Decimal:
    """`value` at the ledger's scale, half up (as a cashier rounds)."""
    return Decimal(value).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)
