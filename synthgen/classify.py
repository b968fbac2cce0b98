"""`synthgen classify`: the classifier a run trained (SGAN's D) over a folder of images.

Every image below the folder (any layout) is converted as in training (the
run's size, channels and resize policy) and written to a CSV: file (relative
to the folder), class, confidence (the softmax probability of that class).
Unreadable files are listed and skipped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from synthgen import checkpoint as ckpt
from synthgen.data.folders import _images_under
from synthgen.errors import SynthgenError
from synthgen.imaging import UnreadableImage, load_image, to_model, write_atomic
from synthgen.precision import resolve_device
from synthgen.recipe import validate
from synthgen.train import METHODS

PREDICTION_COLUMNS = ["file", "class", "confidence"]


def methods_with_classifier() -> list[str]:
    return [name for name, method in METHODS.items() if hasattr(method, "classifier_network")]


class TrainedClassifier:
    """The classifier network of a run's checkpoint (`latest` by default: `best` is chosen by G's KID, not accuracy)."""

    def __init__(self, run_dir: str | Path, device: str = "auto", checkpoint: str = "latest"):
        self.run_dir = Path(run_dir)
        found = ckpt.require_checkpoint(self.run_dir, checkpoint)
        self.recipe = validate(found.recipe, source=f"{found.path}/state.json")
        method = METHODS[self.recipe.method]
        if not hasattr(method, "classifier_network"):
            raise SynthgenError(f"{self.run_dir}: method {self.recipe.method} trains no classifier (methods with one: {', '.join(methods_with_classifier())})")
        self.class_names: list[str] = found.class_names
        self.device = resolve_device(device)
        self.sha256 = found.verified_sha256("D")
        self.net = method.classifier_network(self.recipe, len(self.class_names))
        ckpt.restore_network(self.net, found.weights("D"), found.path / "D.safetensors")
        self.net.to(self.device).eval()
        self.step = found.step

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 images [N, C, H, W] at the run's size -> class probabilities [N, K] (float32, CPU)."""
        out = [torch.softmax(self.net(to_model(chunk).to(self.device))[0].float(), dim=1).cpu() for chunk in images.split(batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.class_names))

    def load(self, path: Path) -> torch.Tensor:
        d = self.recipe.data
        return load_image(path, d.channels, d.image_size, d.resize)


@dataclass
class ClassifyResult:
    out: Path
    counts: dict[str, int] = field(default_factory=dict)  # predicted images per class
    unreadable: list[str] = field(default_factory=list)


def classify_folder(classifier: TrainedClassifier, folder: str | Path, out: str | Path, batch_size: int = 256, on_images=None) -> ClassifyResult:
    """Predict the class of every image below `folder` and write `out` (CSV: file, class, confidence)."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise SynthgenError(f"{folder}: not a folder of images")
    if out.is_dir():
        raise SynthgenError(f"--out {out}: is a folder, expected a CSV file name (e.g. predictions.csv)")
    files = _images_under(folder)
    if not files:
        raise SynthgenError(f"{folder}: no images found")
    result = ClassifyResult(out, {name: 0 for name in classifier.class_names})
    rows = []
    for start in range(0, len(files), batch_size):
        batch, names = [], []
        for path in files[start : start + batch_size]:
            try:
                batch.append(classifier.load(path))
                names.append(path.relative_to(folder).as_posix())
            except UnreadableImage as exc:
                result.unreadable.append(str(exc))
        if batch:
            confidence, index = classifier.probabilities(torch.stack(batch), batch_size).max(dim=1)
            for name, c, p in zip(names, index.tolist(), confidence.tolist()):
                rows.append({"file": name, "class": classifier.class_names[c], "confidence": f"{p:.6f}"})
                result.counts[classifier.class_names[c]] += 1
        if on_images:
            on_images(len(files[start : start + batch_size]))
    text = io.StringIO()
    writer = csv.DictWriter(text, PREDICTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out, text.getvalue().encode())
    return result
