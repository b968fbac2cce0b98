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

from synthgen.imaging import write_atomic


def read_rows(out: Path, name: str) -> list[dict]:
    """The rows of out/name whose files still exist (a file deleted by hand is written again)."""
    path = out / name
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row for row in rows if (out / row["file"]).exists()]


def write_rows(out: Path, name: str, rows: list[dict], columns: list[str], order: Callable[[dict], tuple]) -> None:
    """Rewrite out/name with `rows` in a canonical order, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(rows, key=order))
    write_atomic(out / name, buffer.getvalue().encode())
