"""The export's file formats: each takes batches of record tuples and writes them as they come.

- Parquet (pyarrow): each batch is one row group, zstd-compressed; the schema is the columns' Arrow
  types (money decimal128(18, 5), times UTC timestamps), so a reader gets exact Decimals and instants.
- JSON Lines: one JSON object per record, money as strings, times as ISO 8601 in UTC with Z.
"""

import json
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pyarrow as pa
import pyarrow.parquet as pq

from llmlog.exports.columns import ExportColumn


class ParquetWriter:
    def __init__(self, path: Path, columns: tuple[ExportColumn, ...]) -> None:
        self.columns = columns
        self.schema = pa.schema([column.arrow_field for column in columns])
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> Self:
        self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        return self

    def write(self, batch: list[tuple]) -> None:
        values = list(zip(*batch, strict=True))
        arrays = [column.arrow_values(values[index]) for index, column in enumerate(self.columns)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=len(batch))

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
