"""`synthgen data inspect`: what is in a labelled folder, before training on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from synthgen.data.folders import discover_labelled
from synthgen.imaging import UnreadableImage, opened


@dataclass
class FolderReport:
    root: Path
    class_names: list[str]
    counts: list[int]
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    modes: Counter = field(default_factory=Counter)  # PIL mode -> images
    unreadable: list[str] = field(default_factory=list)

    @property
    def imbalance_ratio(self) -> float:
        """Largest class over smallest (1.0 = balanced; inf when a class has no readable image)."""
        smallest = min(self.counts)
        return max(self.counts) / smallest if smallest else float("inf")


def inspect_folder(root: str | Path) -> FolderReport:
    found = discover_labelled(root)
    report = FolderReport(found.root, found.class_names, [0] * len(found.class_names))
    for path, label in zip(found.files, found.labels):
        try:
            with opened(path) as image:
                size, mode = image.size, image.mode
                image.verify()  # checks the file's integrity without a full decode
        except UnreadableImage as exc:
            report.unreadable.append(f"{path.relative_to(found.root)}: {exc.reason}")
            continue
        report.counts[label] += 1
        report.sizes[size] += 1
        report.modes[mode] += 1
    return report
