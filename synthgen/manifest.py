"""The CSV manifest that sits beside every dataset synthgen writes (sample, augment, balance, vary, translate).

One row per file, `file` being the path relative to the output folder.

While a command runs, new rows go to an append-only journal beside the
manifest (`.NAME.journal`, CSV with the same header), one fsynced append per
batch *after* the batch's files are whole, so the cost of a batch does not
grow with the size of the dataset. The manifest itself is rewritten, sorted,
once: when the command ends (`Manifest.close`), or, after a kill, when the
next run opens the folder. So after a crash, manifest + journal list a
subset of the files on disk; a row whose file is gone does not count, which
is how a re-run knows what is left to write.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

from synthgen.errors import SynthgenError, WriteFailed
from synthgen.imaging import append_synced, write_atomic


def journal_path(out: Path, name: str) -> Path:
    return Path(out) / f".{name}.journal"


def read_rows(out: Path, name: str, columns: list[str] | None = None) -> list[dict]:
    """The well-formed rows of out/name and of its journal whose files still exist (a file deleted by hand is written again).

    A file listed twice (a kill between compaction and the journal's removal) counts once, its last row winning.
    With `columns`, a journal with another header (cut short by a kill) lists nothing.
    """
    out = Path(out)
    rows = _parse(out / name, _read_text(out / name)) + _journal_rows(out, name, columns)
    unique = {row.get("file"): row for row in rows if _counts(out, row)}
    return list(unique.values())


def _read_text(path: Path) -> str:
    if not path.exists():
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise SynthgenError(f"{path}: unreadable manifest ({exc}); move it away to start this folder afresh") from None


def _parse(path: Path, text: str) -> list[dict]:
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise SynthgenError(f"{path}: unreadable manifest ({exc}); move it away to start this folder afresh") from None


def _journal_rows(out: Path, name: str, columns: list[str] | None) -> list[dict]:
    """Rows of the journal a killed run left; a last line cut short by the kill (no newline yet) is left out.

    A damaged journal lists nothing: its files are written again.
    """
    text = _read_text(journal_path(out, name))
    reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1], newline=""))
    try:
        rows = list(reader)
    except csv.Error:
        return []
    return rows if columns is None or reader.fieldnames == columns else []


def _counts(out: Path, row: dict) -> bool:
    """Every column filled, and `file` a path inside `out` that exists (an edited manifest cannot point elsewhere)."""
    if None in row or not all(isinstance(value, str) for value in row.values()):
        return False  # a short or long row
    file = Path(row.get("file") or ".")
    return not file.is_absolute() and ".." not in file.parts and file != Path(".") and (out / file).is_file()


def _csv(rows: list[dict], columns: list[str], header: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def continue_only_with(out: Path, file: str, settings: dict, what: str) -> None:
    """A re-run continues OUT only with the settings that started it (kept in out/file); other ones are refused."""
    path = Path(out) / file
    if path.exists():
        before = json.loads(path.read_text())
        changed = [key for key in settings if before.get(key) != settings[key]]
        if changed:
            raise SynthgenError(f"{out}: {what} with other settings ({', '.join(f'{k}={before.get(k)}' for k in changed)}); write to a new folder")
        return
    write_atomic(path, json.dumps(settings, indent=1).encode())


MANIFEST = "manifest.csv"  # a folder's own manifest; balance keeps its parts' manifests under other names
IMAGEFOLDER_METADATA = "metadata.jsonl"  # the imagefolder copy of a folder's own manifest


def by_class_and_file(row: dict) -> tuple:
    """The order most manifests are kept in."""
    return (row["class"], row["file"])


def write_imagefolder_metadata(out: Path, rows: list[dict], columns: list[str], order: Callable[[dict], tuple]) -> Path:
    """out/metadata.jsonl: one line per file, `file_name` (the relative path) and the manifest's other columns.

    The metadata file of the Hugging Face `imagefolder` layout, so that
    `datasets.load_dataset("imagefolder", data_dir=out)` has the manifest's columns as features;
    torchvision's ImageFolder ignores it (it reads class folders only). Rewritten whole, atomically,
    from the manifest every time the folder is written to, so a continued folder stays complete.
    """
    lines = [json.dumps({"file_name": row["file"], **{c: row.get(c, "") for c in columns if c != "file"}}) + "\n" for row in sorted(rows, key=order)]
    write_atomic(Path(out) / IMAGEFOLDER_METADATA, "".join(lines).encode())
    return Path(out) / IMAGEFOLDER_METADATA


def write_rows(out: Path, name: str, rows: list[dict], columns: list[str], order: Callable[[dict], tuple]) -> None:
    """Rewrite out/name with `rows` in a canonical order, atomically."""
    write_atomic(Path(out) / name, _csv(sorted(rows, key=order), columns, header=True))


class Manifest:
    """A manifest being added to: `rows` are what counts, `append` journals a batch, `close` compacts.

    Opening it compacts the journal a killed run left, so every run starts
    from one sorted manifest and an empty journal. `keep` drops rows a
    caller cannot use (their files are written again). A folder's own
    manifest (MANIFEST) also rewrites its imagefolder copy when the run ends without an error.
    """

    def __init__(self, out: Path, name: str, columns: list[str], order: Callable[[dict], tuple], keep: Callable[[dict], bool] = lambda row: True):
        self.out, self.name, self.columns, self.order = Path(out), name, columns, order
        self.journal = journal_path(self.out, name)
        self.rows = [row for row in read_rows(self.out, name, columns) if keep(row)]
        self.rows_written = 0  # rows put on disk by this object, journal and compactions together
        self.compactions = 0
        if self.journal.exists():
            self.compact()

    def append(self, rows: list[dict]) -> None:
        """Journal rows whose files are already whole: one fsynced append, its cost that of `rows` alone."""
        if not rows:
            return
        append_synced(self.journal, _csv(rows, self.columns, header=not self.journal.exists()))
        self.rows += rows
        self.rows_written += len(rows)

    def compact(self) -> None:
        """Rewrite the manifest with every row, sorted, then drop the journal (a kill in between only repeats rows)."""
        write_rows(self.out, self.name, self.rows, self.columns, self.order)
        self.journal.unlink(missing_ok=True)
        self.rows_written += len(self.rows)
        self.compactions += 1

    def close(self) -> None:
        if self.journal.exists():
            self.compact()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self.close()
        except WriteFailed:
            if error is None:
                raise
            # Stopped by an error and the disk refuses the compaction too: the journal stays for the next run.
        if error is None and self.name == MANIFEST:  # after a failure the next run writes it (and nothing is created for a refused one)
            write_imagefolder_metadata(self.out, self.rows, self.columns, self.order)
