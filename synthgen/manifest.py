"""The CSV manifest that sits beside every dataset synthgen writes (sample, augment, balance).

One row per file, `file` being the path relative to the output folder. The
manifest is rewritten atomically after every batch, so after a crash it
lists a subset of the files on disk; a row whose file is gone does not
count, which is how a re-run knows what is left to write.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from synthgen.errors import SynthgenError
from synthgen.imaging import write_atomic


def read_rows(out: Path, name: str) -> list[dict]:
    """The well-formed rows of out/name whose files still exist (a file deleted by hand is written again)."""
    path = out / name
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, ValueError, csv.Error) as exc:
        raise SynthgenError(f"{path}: unreadable manifest ({exc}); move it away to start this folder afresh") from None
    return [row for row in rows if _counts(out, row)]


def _counts(out: Path, row: dict) -> bool:
    """Every column filled, and `file` a path inside `out` that exists (an edited manifest cannot point elsewhere)."""
    if None in row or not all(isinstance(value, str) for value in row.values()):
        return False  # a short or long row
    file = Path(row.get("file") or ".")
    return not file.is_absolute() and ".." not in file.parts and file != Path(".") and (out / file).is_file()


def write_rows(out: Path, name: str, rows: list[dict], columns: list[str], order: Callable[[dict], tuple]) -> None:
    """Rewrite out/name with `rows` in a canonical order, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(rows, key=order))
    write_atomic(out / name, buffer.getvalue().encode())
