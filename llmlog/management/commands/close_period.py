from argparse import ArgumentTypeError
from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounting.statements import Outcome, parse_month
from llmlog.statements import close_period


def month(text: str) -> date:
    try:
        return parse_month(text)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Close a month into each org's statement (opening balance, charges by model and by day, top-ups, "
        "adjustments, closing balance), in the org's time zone. A month not yet ended is refused; a "
        "closed month again is a no-op that says so. Exits non-zero when a statement was refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", type=month, required=True, help="The month to close, as YYYY-MM.")
        parser.add_argument("--org", default="", help="Only this org's customer account (default: all).")

    def handle(self, *args, month: date, org: str, **options) -> None:
        results = close_period(month=month, org=org, closed_by="close_period")
        if not results:
            raise CommandError(f"org: no customer account{f' of {org!r}' if org else ''} to close")
        refused = 0
        for result in results:
            line = f"{result.org} {result.month}: {result.outcome.value}"
            if result.message:
                line = f"{line}. {result.message}"
            if result.outcome == Outcome.REFUSED:
                refused += 1
                self.stderr.write(line)
            else:
                self.stdout.write(line)
        if refused:
            raise CommandError(f"{refused} statement(s) refused")
