"""Errors raised for bad input data."""
from __future__ import annotations

from tfmec.api_export import tfmec_export


@tfmec_export("tfmec.data.DataError")
class DataError(ValueError):
    """Bad input data: names the file and 1-based line where it applies.

    Attributes:
        path: the file the problem is in (or None).
        line: 1-based line number in that file (or None).
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}" + (f", line {line}" if line is not None else "") + ": "
        super().__init__(where + message)
