"""CSV that is safe to open in a spreadsheet (every CSV the gateway writes goes through here).

Tool names, user ids, client names and SQL results are caller-controlled text. A spreadsheet reads a
cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or carriage return before one) as a
formula: `=HYPERLINK(...)` or a DDE payload in a user id would run on the operator's machine. So,
as OWASP recommends, such a text cell is written with a leading single quote (`'=HYPERLINK(...)`),
which spreadsheets show as text.

Numbers are numbers, not user text: an int, float or Decimal is written as is (`-1` stays -1, so sums
still work), and so is a text cell that is exactly a decimal number literal (`-1.5`, `+2`, `-3e2`: the
SQL console hands numeric values over as decimal strings; a spreadsheet reads such a cell as that
number and nothing runs). Everything else that starts with a trigger character is escaped — `-2+3`,
`-inf`, `- 1`, `+cmd|...` alike.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_LITERAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    return False


def csv_cell(value: Any) -> str:
    """One value as a CSV cell: empty for None, JSON for dicts and lists, text escaped when formula-like."""
    if value is None:
        return ""
    if _is_number(value):
        return str(value)
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    if text.startswith(FORMULA_START) and not _NUMBER_LITERAL.fullmatch(text):
        return "'" + text
    return text


def to_csv(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A header row and data rows, CRLF line ends (RFC 4180), every cell through `csv_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(name) for name in header])
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return out.getvalue()
