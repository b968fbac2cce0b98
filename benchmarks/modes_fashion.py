"""Mode coverage on Stacked Fashion-MNIST (issue 15, section 5): which anti-collapse option covers the 1,000 modes.

    make bench-modes            (or: .venv/bin/python benchmarks/modes_fashion.py [--budget 10m] [--rows NAME ...] [--quick])

Not a bench_*.py: it trains a GAN per row.

The protocol of PacGAN, the unrolled GAN and R3GAN on StackedMNIST, with Fashion-MNIST:
1. data: RGB images whose three channels are three Fashion-MNIST training
   images drawn at random (seeded): 10^3 = 1,000 modes (class triples),
   written once as PNGs in one folder, so training is unconditional.
2. a Fashion-MNIST classifier: synthgen's domain classifier
   (metrics/domain.py) trained on the real grayscale training images; its
   accuracy on the 10,000 test images is reported.
3. every row trained for the same wall-clock budget (train.budget) through
   the one loop, in this process, one after another.
4. 26,000 samples of each row's EMA generator; each channel classified; the
   triple of classes is the sample's mode. Reported: modes covered (at least
   one sample) and KL(generated modes || uniform over 1,000).
5. the real-data row: 26,000 stacked images made the same way from the
   Fashion-MNIST *test* images, through the same classifier: the spread that
   the classifier's own error alone causes.

Rows: DCGAN with the non-saturating loss (synthgen's dcgan: spectral norm in
D, no batch norm), + minibatch stddev, + PacGAN 2, + minibatch
discrimination (100 kernels x 5), + unrolled 5, the StyleGAN-style G, the
project's recommended recipe (recipes/small-data.yaml, unconditional; it has
minibatch discrimination); with --rows, also that recipe without it. The checkpoint
evaluation is off in every row, so the budget is all training.

The table (markdown) and JSON land in out/bench/modes_fashion.{md,json}.
--quick: a smoke run (narrow networks, 20 s per row, 2,600 samples) whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DEMO_FM, OUT, REPO, SHARED_FM, machine, print_table  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from synthgen.data.idx import CLASS_NAMES, read_idx  # noqa: E402
from synthgen.data.loading import LabelledImages  # noqa: E402
from synthgen.metrics.features import domain_classifier  # noqa: E402
from synthgen.recipe import load_recipe, validate  # noqa: E402
from synthgen.sample import TrainedGenerator  # noqa: E402
from synthgen.train.loop import train  # noqa: E402

WORK = OUT / "modes_fashion"
SEED = 0
MODES = 1000

@dataclass(frozen=True)
class Bundled:
    """A row that is a bundled recipe (made unconditional at the row's budget), with extra keys over it."""

    recipe: str
    sets: dict = field(default_factory=dict)


MINIBATCH_DISCRIMINATION = {"kernels": 100, "dims": 5}

# name -> recipe keys over the DCGAN baseline, or a bundled recipe
ROWS: dict[str, dict | Bundled] = {
    "DCGAN ns": {},
    "+ minibatch stddev": {"model": {"minibatch_std": True}},
    "+ PacGAN 2": {"model": {"pack": 2}},
    "+ minibatch discrimination (100 x 5)": {"model": {"minibatch_discrimination": MINIBATCH_DISCRIMINATION}},
    "+ unrolled 5": {"train": {"unroll_steps": 5}},
    "StyleGAN-style G": {"model": {"backbone": "stylegan"}},
    "best recipe (small-data.yaml)": Bundled("small-data"),
}
# rows run only when named with --rows
EXTRA_ROWS: dict[str, dict | Bundled] = {
    "best recipe without minibatch discrimination (its default before 2026-12-06)":
        Bundled("small-data", {"model.minibatch_discrimination": {"kernels": 0}}),
}
ALL_ROWS = {**ROWS, **EXTRA_ROWS}


def fashion(split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Fashion-MNIST uint8 images [N, 1, 28, 28] and labels (../shared; the embedded test split stands in for train when absent)."""
    source = SHARED_FM if (SHARED_FM / "train-images-idx3-ubyte.gz").exists() else DEMO_FM
    name = "t10k" if split == "test" or source == DEMO_FM else "train"
    images = torch.from_numpy(read_idx(source / f"{name}-images-idx3-ubyte.gz").copy())[:, None]
    labels = torch.from_numpy(read_idx(source / f"{name}-labels-idx1-ubyte.gz").astype("int64"))
    return images, labels, f"{source.relative_to(REPO.parent)} {name}"


def stacked(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n RGB images [n, 3, 28, 28], each channel a random image (seeded), and their modes (100 c_R + 10 c_G + c_B)."""
    picks = torch.randint(len(images), (n, 3), generator=torch.Generator().manual_seed(seed))
    rgb = images[picks][:, :, 0]
    modes = labels[picks] @ torch.tensor([100, 10, 1])
    return rgb.contiguous(), modes


def write_folder(rgb: torch.Tensor, dest: Path) -> Path:
    """The stacked images as PNGs in one folder (one class: unconditional), reused when already written."""
    marker = dest / ".complete"
    if marker.exists() and marker.read_text() == f"{len(rgb)} {SEED}":
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    folder = dest / "stacked"
    folder.mkdir(parents=True)
    for i, image in enumerate(rgb):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.png")
    marker.write_text(f"{len(rgb)} {SEED}")
    return dest


def modes_of(classifier, rgb: torch.Tensor) -> torch.Tensor:
    """Each channel classified as a Fashion-MNIST image: the mode index of every RGB image."""
    classes = [classifier.features_and_logits(rgb[:, c : c + 1].contiguous())[1].argmax(1) for c in range(3)]
    return classes[0] * 100 + classes[1] * 10 + classes[2]


def coverage(modes: torch.Tensor) -> dict:
    """Modes with at least one sample, and KL(generated || uniform) in nats."""
    counts = torch.bincount(modes, minlength=MODES).double()
    p = counts / counts.sum()
    kl = float((p[p > 0] * (p[p > 0] * MODES).log()).sum())
    return {"modes": int((counts > 0).sum()), "kl": round(kl, 4)}


def row_recipe(name: str, keys, data_root: Path, args, quick: bool):
    """The row's recipe: the DCGAN baseline with the row's keys, or a bundled recipe made unconditional at this budget."""
    common = {"name": f"row{list(ALL_ROWS).index(name)}", "data.root": str(data_root), "data.image_size": 28, "data.channels": 3,
              "train.out_dir": str(WORK / "weights"), "train.budget": args.budget, "train.steps": 1_000_000,
              "train.precision": args.precision, "train.log_every": 100, "train.sample_every": 1_000_000,
              "train.checkpoint_every": 1_000_000, "gate.eval_during_training": False}
    if quick:
        common.update({"model.g_channels": 16, "model.d_channels": 16})
    if isinstance(keys, Bundled):
        return load_recipe(keys.recipe, [f"{k}={json.dumps(v)}" for k, v in {**common, **keys.sets}.items()])
    raw: dict = {"seed": SEED, "method": "cgan", "loss": {"type": "ns"}, "model": {"backbone": "dcgan", "z_dim": 100},
                 "train": {"batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999}}
    for dotted, value in common.items():
        section, key = dotted.split(".") if "." in dotted else (None, dotted)
        (raw.setdefault(section, {}) if section else raw)[key] = value
    for section, values in keys.items():
        raw.setdefault(section, {}).update(values)
    return validate(raw, source=f"row {name}")


def sample_modes(run: Path, classifier, n: int) -> torch.Tensor:
    generator = TrainedGenerator(run, device="cpu", checkpoint="latest")
    seeds = list(range(10_000_000, 10_000_000 + n))  # seeds no training batch used
    chunks = [generator.generate(0, seeds[i : i + 1000], None) for i in range(0, n, 1000)]
    return modes_of(classifier, torch.cat(chunks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m", help="wall-clock training budget per row (train.budget), e.g. 5m")
    parser.add_argument("--quick", action="store_true", help="smoke setting: 20 s per row, narrow networks, 2,000 training images, 2,600 samples")
    parser.add_argument("--samples", type=int, default=26_000, help="generated (and real) samples classified per row")
    parser.add_argument("--train-images", type=int, default=60_000, help="stacked training images")
    parser.add_argument("--classifier-steps", type=int, default=3000, help="training steps of the Fashion-MNIST classifier")
    parser.add_argument("--precision", default="auto", help="train.precision of every row")
    parser.add_argument("--rows", nargs="*", choices=list(ALL_ROWS), help="only these rows (names as in the table)")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.samples, args.train_images, args.classifier_steps, args.precision = "20s", 2600, 2000, 100, "fp32"
    torch.manual_seed(SEED)
    images, labels, source = fashion("train")
    test_images, test_labels, test_source = fashion("test")
    print(f"machine: {machine()}\ndata: {source}; {args.train_images} stacked training images; {args.budget} per row", flush=True)
    data_root = write_folder(stacked(images, labels, args.train_images, SEED)[0], WORK / f"data-{args.train_images}")

    start = time.perf_counter()
    names = CLASS_NAMES["fashion-mnist"]
    classifier = domain_classifier(LabelledImages(images, labels, names), WORK / f"classifier-{args.classifier_steps}", args.classifier_steps)
    predicted = classifier.features_and_logits(test_images)[1].argmax(1)
    accuracy = float((predicted == test_labels).float().mean())
    print(f"classifier: {args.classifier_steps} steps, {time.perf_counter() - start:.0f} s, test accuracy {accuracy:.4f}", flush=True)

    results: dict[str, dict] = {}
    real_rgb, _ = stacked(test_images, test_labels, args.samples, SEED + 1)
    results["real stacked test images"] = {**coverage(modes_of(classifier, real_rgb)), "note": "the classifier's own error"}
    shutil.rmtree(WORK / "weights", ignore_errors=True)
    for name, keys in ALL_ROWS.items():
        if name not in (args.rows or ROWS):
            continue
        recipe = row_recipe(name, keys, data_root, args, args.quick)
        began = time.perf_counter()
        result = train(recipe)
        seconds = time.perf_counter() - began
        results[name] = {**coverage(sample_modes(result.run_dir, classifier, args.samples)), "steps": result.step,
                         "img_per_s": round(result.images_per_second, 1), "seconds": round(seconds, 1)}
        print(f"{name}: {results[name]}", flush=True)

    header = ["row", "modes (of 1000)", "KL(gen || uniform)", "steps", "img/s"]
    rows = [[name, r["modes"], r["kl"], r.get("steps", "-"), r.get("img_per_s", "-")] for name, r in results.items()]
    title = f"Stacked Fashion-MNIST, {args.samples} samples per row, {args.budget} training per row, classifier test accuracy {accuracy:.4f}"
    print_table(title, header, rows)
    if args.quick:
        print("[--quick: a smoke run, not a measurement]")
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "quick": args.quick, "budget_per_row": args.budget, "samples": args.samples,
              "train_images": args.train_images, "data": source, "test_data": test_source, "classifier_steps": args.classifier_steps,
              "classifier_test_accuracy": round(accuracy, 4), "precision": args.precision, "rows": results}
    (OUT / "modes_fashion.json").write_text(json.dumps(report, indent=1))
    lines = [f"**{title}**" + (" (smoke run: figures mean nothing)" if args.quick else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    (OUT / "modes_fashion.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {(OUT / 'modes_fashion.json').relative_to(REPO)} and modes_fashion.md")


if __name__ == "__main__":
    main()
