"""InfoGAN on Fashion-MNIST, one 10-way categorical code: how purely the code sorts real images by class, against k-means.

    make bench-infogan          (or: .venv/bin/python benchmarks/infogan_fashion.py [--steps N] [--quick])

Not a bench_*.py: it trains a GAN.

1. data: the 60,000 Fashion-MNIST training images in one folder (links), so
   training is unconditional: the labels are never seen.
2. `synthgen train recipes/infogan.yaml` with options.codes = one 10-way
   categorical code (no continuous codes).
3. The code as a classifier, as the paper reads it (5% error on MNIST): Q's
   most likely code value for each of the 10,000 test images, and the purity
   of that clustering against the true classes (metrics/purity.py).
4. Baselines on the same test images: k-means (k = 10, best of 5 restarts)
   on the domain features (synthgen's domain classifier trained on the same
   unlabelled training images: rotation task only, no labels), and on the raw pixels.

The table and out/bench/infogan_fashion.json. --quick: a smoke run whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, machine, print_table, synthgen  # noqa: E402
from sgan_fashion import import_fashion  # noqa: E402

import torch  # noqa: E402

from synthgen.checkpoint import latest_checkpoint  # noqa: E402
from synthgen.data.loading import LabelledImages, load_labelled  # noqa: E402
from synthgen.imaging import to_model  # noqa: E402
from synthgen.metrics.features import domain_classifier  # noqa: E402
from synthgen.metrics.purity import kmeans_assignments, purity  # noqa: E402
from synthgen.recipe import validate  # noqa: E402
from synthgen.train.infogan import InfoGAN  # noqa: E402

WORK = OUT / "infogan_fashion"
CODES = "options.codes=[{kind: categorical, size: 10}]"


def flat_folder(train: Path, dest: Path, per_class: int | None = None) -> int:
    """Links to every training image (or the first `per_class` of each class) in one folder: one class, so the run is unconditional."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = 0
    for folder in sorted(d for d in train.iterdir() if d.is_dir()):
        for path in sorted(folder.iterdir())[:per_class]:
            (tmp / f"{folder.name}-{path.name}").symlink_to(path.resolve())
            count += 1
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return count


@torch.no_grad()
def code_of_real_images(run: Path, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Q's most likely value of the (first, categorical) code for each image."""
    checkpoint = latest_checkpoint(run)
    recipe = validate(checkpoint.recipe, source=str(checkpoint.path))
    _, D = InfoGAN.build_networks(recipe, 1)
    D.load_state_dict(checkpoint.weights("D"))
    D.eval()
    size = recipe.options["codes"][0]["size"]
    picks = [D(to_model(chunk), torch.zeros(len(chunk), dtype=torch.long))[2][:, :size].argmax(dim=1) for chunk in images.split(batch_size)]
    return torch.cat(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000, help="training steps")
    parser.add_argument("--quick", action="store_true", help="smoke setting: 30 steps, narrow networks, 2,000 training and 1,000 test images")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra recipe overrides, e.g. model.d_channels=32")
    parser.add_argument("--fashion", type=Path, help="an existing `synthgen data import idx` folder of Fashion-MNIST to use")
    args = parser.parse_args()
    steps = 30 if args.quick else args.steps
    fm = import_fashion(args.fashion)
    shutil.rmtree(WORK / "weights", ignore_errors=True)
    flat = WORK / "flat"
    images = flat_folder(fm / "train", flat, 200 if args.quick else None)
    print(f"machine: {machine()}\n{images} unlabelled training images, {steps} steps", flush=True)
    sets = [f"data.root={flat}", f"train.out_dir={WORK / 'weights'}", f"train.steps={steps}", "name=infogan", CODES,
            "gate.eval_during_training=false", *args.sets]
    if args.quick:
        sets += ["train.log_every=10", "model.g_channels=16", "model.d_channels=16", "gate.domain_steps=50"]
    start = time.perf_counter()
    synthgen("train", "infogan", *[a for s in sets for a in ("--set", s)])
    trained = time.perf_counter() - start
    run = WORK / "weights" / "infogan"
    recipe = validate(latest_checkpoint(run).recipe)
    test = load_labelled(fm / "test", recipe.data.image_size, recipe.data.channels, recipe.data.resize)
    if args.quick:
        test = LabelledImages(test.images[::10], test.labels[::10], test.class_names)
    train_images = load_labelled(flat, recipe.data.image_size, recipe.data.channels, recipe.data.resize)
    domain = domain_classifier(train_images, WORK / "domain", recipe.gate.domain_steps, recipe.data.hflip)
    rows = {
        "InfoGAN code (Q on real test images)": purity(code_of_real_images(run, test.images), test.labels),
        "k-means on domain features (k=10)": purity(kmeans_assignments(domain(test.images), 10), test.labels),
        "k-means on pixels (k=10)": purity(kmeans_assignments(test.images.flatten(1).float() / 255, 10), test.labels),
    }
    print_table(f"purity against the true class, {len(test.labels)} Fashion-MNIST test images", ["assignment", "purity"],
                [[name, f"{value:.4f}"] for name, value in rows.items()])
    if args.quick:
        print("[--quick: a smoke run, not a measurement]")
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "quick": args.quick, "steps": steps, "overrides": sets, "train_seconds": round(trained, 1),
              "test_images": len(test.labels), "purity": rows}
    (OUT / "infogan_fashion.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
