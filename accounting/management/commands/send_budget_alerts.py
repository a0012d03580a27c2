from django.core.management.base import BaseCommand

from accounting.alerts import send_budget_alerts


class Command(BaseCommand):
    help = (
        "Record budget thresholds crossed (one alert per budget, period and threshold), deliver the "
        "webhooks that are due (retries included), and mark expired holds. Beat runs it every minute."
    )

    def handle(self, *args, **options) -> None:
        counts = send_budget_alerts()
        self.stdout.write(", ".join(f"{name} {count}" for name, count in sorted(counts.items())))
