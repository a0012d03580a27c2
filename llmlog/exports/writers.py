"""The export's file formats: each takes batches of record tuples and writes them as they come.

- Parquet (pyarrow): takes Arrow tables, each one row group, zstd-compressed; the schema is the columns' Arrow
  types (money decimal128(18, 5), times UTC timestamps), so a reader gets exact Decimals and instants.
- JSON Lines: one JSON object per record, money as strings, times as ISO 8601 in UTC with Z.
"""

import json
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pyarrow as pa
import pyarrow.parquet as pq

from llmlog.exports.columns import ExportColumn, arrow_schema


class ParquetWriter:
    def __init__(self, path: Path, columns: tuple[ExportColumn, ...]) -> None:
        self.schema = arrow_schema(columns)
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> Self:
        self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        """One table (a batch of records) as one row group."""
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._writer.close()  # also after an error: the partial file is then removed


class JsonLinesWriter:
    def __init__(self, path: Path, columns: tuple[ExportColumn, ...]) -> None:
        self.names = [column.name for column in columns]
        self.forms = [column.json_value for column in columns]
        self.path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> Self:
        self._file = self.path.open("w", encoding="utf-8", newline="\n")
        return self

    def write(self, batch: list[tuple]) -> None:
        names, forms = self.names, self.forms
        lines = []
        for row in batch:
            record = {name: form(value) for name, form, value in zip(names, forms, row, strict=True)}
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        self._file.write("\n".join(lines) + "\n")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._file.close()


WRITERS: dict[str, type[ParquetWriter] | type[JsonLinesWriter]] = {
    "parquet": ParquetWriter,
    "jsonl": JsonLinesWriter,
}
