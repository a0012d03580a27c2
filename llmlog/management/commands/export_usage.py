from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmlog.exports.period import InvalidPeriod, month_period
from llmlog.exports.records import BATCH_SIZE, FORMATS, ExportError, export_usage
from llmlog.management.commands.backup_accounted_llmusage import positive_int


class Command(BaseCommand):
    help = (
        "Write a month of usage records (hot and history, every column) to a Parquet or JSON Lines file, "
        "in batches, with a manifest (rows, sums of amount and cost, sha256) at PATH.manifest.json. "
        "The month's days are in TIME_ZONE."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", required=True, help="The month, YYYY-MM.")
        parser.add_argument("--format", required=True, choices=FORMATS, help="The file format.")
        parser.add_argument("--out", required=True, help="The file to write (its folder must exist).")
        parser.add_argument("--org", default="", help="Only this org's records (default: every org).")
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=BATCH_SIZE,
            help=f"Records read and written at a time: a Parquet row group (default {BATCH_SIZE}).",
        )

    def handle(self, *args, month: str, out: str, org: str, batch_size: int, **options) -> None:
        fmt = options["format"]
        try:
            period = month_period(month)
            result = export_usage(period=period, fmt=fmt, out=out, org=org, batch_size=batch_size)
        except InvalidPeriod as error:
            raise CommandError(f"--month: {error}") from None
        except ExportError as error:
            raise CommandError(str(error)) from None
        manifest = result.manifest
        self.stdout.write(
            f"Wrote {manifest['rows']} records of {manifest['month']} to {result.path} "
            f"(amount {manifest['amount_sum']}, cost {manifest['cost_sum']}); "
            f"manifest {result.manifest_path}"
        )
