"""Unit prices of a model from a moment on (the price book)."""

from django.db import models
from django.utils import timezone

from core.money import money_field


class ModelPrice(models.Model):
    """Unit prices of one model from a moment on. `sale` prices make `amount`, `cost` prices make `cost`."""

    class Kind(models.TextChoices):
        SALE = "sale", "sale (charged to the customer org)"
        COST = "cost", "cost (paid to the model owner)"

    model_name = models.CharField(max_length=150)
    ownerid = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="The org that owns the model and receives its cost; records priced here take it.",
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.SALE)
    effective_from = models.DateTimeField(default=timezone.now)
    currency = models.CharField(max_length=3, default="USD")
    # per 1M tokens
    input_price = money_field(default=0, help_text="Per 1M uncached input tokens.")
    output_price = money_field(default=0, help_text="Per 1M output tokens.")
    cached_input_price = money_field(null=True, blank=True, help_text="Per 1M cache reads; empty: input.")
    cache_creation_price = money_field(
        null=True, blank=True, help_text="Per 1M cache writes; empty: input price."
    )
    reasoning_price = money_field(null=True, blank=True, help_text="Per 1M reasoning tokens; empty: output.")
    image_input_price = money_field(null=True, blank=True, help_text="Per 1M image tokens; empty: input.")
    # per unit
    request_price = money_field(default=0, help_text="Per request.")
    web_search_price = money_field(default=0, help_text="Per web search.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "llmlog_model_price"
        ordering = ["model_name", "kind", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "kind", "effective_from"], name="model_price_unique_effective"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} ({self.kind}) from {self.effective_from:%Y-%m-%d}"
