from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounting.ledger import BalanceOverflow, LedgerError
from accounting.models import Repricing
from llmlog.repricing import RepricingInvalid, RepricingStale, repricing_apply, repricing_create
from llmlog.repricing_report import REPORT_COLUMNS


class Command(BaseCommand):
    help = (
        "Re-price the records of a use_date range with the price book as it is now. Without --apply: a "
        "dry run, kept as a Repricing whose report (per org and model) is printed. --apply: re-price and "
        "apply at once; --apply --repricing ID: apply a kept dry run. Applying posts ledger adjustments "
        "for accounted records and re-prices pending or failed ones in place; applying twice changes "
        "nothing the second time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--start", type=date.fromisoformat, help="First use_date, YYYY-MM-DD.")
        parser.add_argument("--end", type=date.fromisoformat, help="Last use_date (inclusive), YYYY-MM-DD.")
        parser.add_argument("--model", default="", help="Only this model_name.")
        parser.add_argument("--org", default="", help="Only this org (userorgid).")
        parser.add_argument("--apply", action="store_true", help="Post the adjustments.")
        parser.add_argument(
            "--repricing", type=int, help="A kept re-pricing: with --apply, apply it; alone, show it."
        )

    def handle(self, *args, start, end, model: str, org: str, apply: bool, repricing: int | None, **options):
        try:
            if repricing is not None:
                if start or end or model or org:
                    raise CommandError(
                        "--repricing takes no --start, --end, --model or --org: it has its own"
                    )
                if apply:
                    result, applied = repricing_apply(repricing_id=repricing, applied_by="manage.py")
                    if not applied:
                        self.stdout.write(f"Re-pricing {repricing} was applied already: nothing changed.")
                else:
                    result = Repricing.objects.get(pk=repricing)
            else:
                if start is None or end is None:
                    raise CommandError("--start and --end are required (or --repricing ID)")
                result = repricing_create(
                    start=start, end=end, model_name=model, userorgid=org, created_by="manage.py", apply=apply
                )
        except Repricing.DoesNotExist:
            raise CommandError(f"No re-pricing {repricing}") from None
        except RepricingInvalid as exc:
            raise CommandError(f"--{exc.field}: {exc.message}") from None
        except (RepricingStale, LedgerError, BalanceOverflow) as exc:
            raise CommandError(str(exc)) from None
        self._report(result)

    def _report(self, repricing: Repricing) -> None:
        rows = [REPORT_COLUMNS, *([str(row[name]) for name in REPORT_COLUMNS] for row in repricing.summary)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(REPORT_COLUMNS))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        self.stdout.write(
            f"Re-pricing {repricing.pk} ({repricing.get_status_display()}): {repricing.records} records, "
            f"{repricing.changed} changed, delta amount {repricing.delta_amount}, delta cost "
            f"{repricing.delta_cost}."
        )
        if repricing.status == Repricing.Status.DRY_RUN:
            self.stdout.write(f"Apply it with: manage.py reprice --apply --repricing {repricing.pk}")
