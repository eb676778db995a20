"""CSV: rows grouped into sections of N rows, each starting with the header row again so a
chunk on its own still says what its columns mean."""

from __future__ import annotations

import csv
import io

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.text import clean_inline, decode

__all__ = ["ROWS_PER_SECTION", "parse_csv", "sniff_dialect"]

ROWS_PER_SECTION = 20
_SNIFF_CHARS = 64 * 1024
_MAX_FIELD_CHARS = 1024 * 1024


def sniff_dialect(sample: str) -> type[csv.Dialect] | None:
    """The dialect of ``sample`` if it looks like delimited data with at least two columns."""
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return None
    lines = [line for line in sample.splitlines()[:20] if line.strip()]
    if len(lines) < 2 or not all(dialect.delimiter in line for line in lines[:-1]):
        return None
    return dialect


def parse_csv(
    data: bytes,
    *,
    rows_per_section: int = ROWS_PER_SECTION,
    max_rows: int | None = None,
    max_columns: int | None = None,
) -> ParsedDocument:
    """Rows past ``max_rows`` (after the header) and cells past ``max_columns`` are not
    read (None: no cap), and a warning says how many there were: a CSV of 200,000 columns
    would otherwise repeat its 200,000-cell header in every section of rows."""
    text = decode(data).replace("\x00", "")
    dialect: type[csv.Dialect] = sniff_dialect(text[:_SNIFF_CHARS]) or csv.excel
    previous_limit = csv.field_size_limit(_MAX_FIELD_CHARS)
    rows: list[str] = []
    widest = counted = 0
    row_cap = None if max_rows is None else max_rows + 1  # the header is not counted
    try:
        for row in csv.reader(io.StringIO(text), dialect):
            # A row is empty when all of it is, not only the cells within the column cap.
            if not any(cell.strip() for cell in row):
                continue
            cells = row if max_columns is None else row[:max_columns]
            widest = max(widest, len(row))
            counted += 1
            if row_cap is None or counted <= row_cap:
                rows.append(" | ".join(clean_inline(cell) for cell in cells))
    except csv.Error as exc:
        raise ParseError(f"The CSV file could not be read: {exc}") from exc
    finally:
        csv.field_size_limit(previous_limit)
    warnings: list[str] = []
    if max_columns is not None and widest > max_columns:
        warnings.append(f"only the first {max_columns:,} of {widest:,} columns were read")
    if row_cap is not None and counted > row_cap:
        warnings.append(f"only the first {row_cap - 1:,} of {counted - 1:,} rows were read")
    if not rows:
        return ParsedDocument(format="csv", sections=(), warnings=tuple(warnings))
    header, body = rows[0], rows[1:]
    step = max(1, rows_per_section)
    sections = tuple(
        Section(text="\n".join([header, *body[start : start + step]]), kind="row")
        for start in range(0, len(body), step)
    ) or (Section(text=header, kind="row"),)
    return ParsedDocument(format="csv", sections=sections, warnings=tuple(warnings))
