"""Load and validate JSONL data; every error names the file, the line and the field.

Rows are plain dicts. A schema is a list of :class:`Field`; unknown fields are kept (so richer
rows from other tools load), missing or mistyped required fields are errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data. The message starts with ``file:line:`` and names the field."""

    def __init__(self, path: str | Path, line: int | None, message: str, field: str | None = None):
        where = f"{path}:{line}" if line else f"{path}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
        self.path, self.line, self.field = str(path), line, field


@dataclass(frozen=True)
class Field:
    name: str
    type: type | tuple[type, ...] = str
    required: bool = True
    choices: tuple[Any, ...] | None = None
    nonempty: bool = True
    check: Callable[[Any], str | None] | None = None  # returns an error message or None


def single_line(value: str) -> str | None:
    """A ``Field.check`` for text the prompt puts on one line: no newlines, no outer whitespace."""
    if "\n" in value or "\r" in value:
        return "must be a single line (the prompt puts it on one line)"
    if value != value.strip():
        return "has leading or trailing whitespace"
    return None


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def validate_row(row: Any, fields: Iterable[Field], path: str | Path, line: int) -> dict:
    if not isinstance(row, dict):
        raise DataError(path, line, f"expected a JSON object, got {type(row).__name__}")
    for f in fields:
        if f.name not in row or row[f.name] is None:
            if f.required:
                raise DataError(path, line, "missing (required)", f.name)
            continue
        value = row[f.name]
        if not isinstance(value, f.type) or (f.type is int and isinstance(value, bool)):
            raise DataError(path, line, f"expected {_type_name(f.type)}, got {type(value).__name__}", f.name)
        if f.nonempty and isinstance(value, (str, list)) and len(value) == 0:
            raise DataError(path, line, "is empty", f.name)
        if f.choices is not None and value not in f.choices:
            raise DataError(path, line, f"{value!r} is not one of {list(f.choices)}", f.name)
        if f.check is not None:
            msg = f.check(value)
            if msg:
                raise DataError(path, line, msg, f.name)
    return row


def read_jsonl(
    path: str | Path,
    fields: Iterable[Field] = (),
    *,
    unique: str | None = None,
    allow_empty: bool = False,
) -> list[dict]:
    """Read a JSONL file; blank lines are skipped; ``unique`` names a field that must not repeat."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    fields = list(fields)
    rows: list[dict] = []
    seen: dict[Any, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            validate_row(row, fields, path, lineno)
            if unique and unique in row:
                key = row[unique]
                if key in seen:
                    raise DataError(path, lineno, f"duplicate value {key!r} (first on line {seen[key]})", unique)
                seen[key] = lineno
            rows.append(row)
    if not rows and not allow_empty:
        raise DataError(path, None, "file is empty: no JSON rows")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
