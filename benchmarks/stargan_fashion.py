"""StarGAN on Fashion-MNIST: are translations the target class, and do they keep the input's structure?

    make bench-stargan          (or: .venv/bin/python benchmarks/stargan_fashion.py [--steps N] [--quick]); QUICK=1: the smoke

Not a bench_*.py: it trains a GAN.

1. `synthgen train recipes/stargan.yaml` on the Fashion-MNIST training classes (the domains).
2. Test images, each translated into a random other class (the same draws for every row).
3. Per row: the target-class rate by synthgen's domain classifier (trained on the training
   images, metrics/domain.py); KID (domain features) of the outputs to the target class's real
   test images, averaged over classes, beside real-vs-real (training images of the class against
   its test images); SSIM to the input (structure kept).
4. Baselines without a translator: the input itself (SSIM 1, never the target class) and a random
   real image of the target class (the target class, structure not kept).
Goal: target-class rate >= 0.9 with SSIM to the input well above the random baseline's.

The table and out/bench/stargan_fashion.json. --quick: a smoke run whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, machine, print_table  # noqa: E402
from sgan_fashion import import_fashion  # noqa: E402
from utility_fashion import synthgen  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthgen.data.loading import LabelledImages, load_labelled  # noqa: E402
from synthgen.imaging import to_model, to_uint8  # noqa: E402
from synthgen.metrics.features import domain_classifier  # noqa: E402
from synthgen.metrics.kid import kid  # noqa: E402
from synthgen.translate import image_scores, open_translator  # noqa: E402

WORK = OUT / "stargan_fashion"


def subset(data: LabelledImages, per_class: int) -> LabelledImages:
    """The first `per_class` images of every class."""
    keep = torch.cat([torch.nonzero(data.labels == k).flatten()[:per_class] for k in range(len(data.class_names))])
    return LabelledImages(data.images[keep], data.labels[keep], data.class_names)


def link_subset(train: Path, dest: Path, per_class: int) -> Path:
    """Links to the first `per_class` training images of each class (the smoke run's data)."""
    shutil.rmtree(dest, ignore_errors=True)
    for folder in sorted(d for d in train.iterdir() if d.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:per_class]:
            (dest / folder.name / path.name).symlink_to(path.resolve())
    return dest


@torch.no_grad()
def translate(run: Path, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    translator = open_translator(run, to_class="all", device="cpu", precision="fp32")
    return torch.cat([to_uint8(translator.generator(to_model(x), t)) for x, t in zip(images.split(batch_size), targets.split(batch_size))])


def scores(outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, classifier, reference: LabelledImages) -> dict:
    """Target-class rate, mean per-class KID to the target class's real images, mean SSIM to the input."""
    features, logits = classifier.features_and_logits(outputs)
    real_features = classifier(reference.images)
    kids = [kid(real_features[reference.labels == k], features[targets == k])[0] for k in targets.unique().tolist() if (targets == k).sum() >= 2]
    ssim = [image_scores(out, x).ssim for out, x in zip(outputs, inputs)]
    return {"target_rate": float((logits.argmax(1) == targets).float().mean()), "kid": float(np.mean(kids)), "ssim_to_input": float(np.mean(ssim))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000, help="training steps")
    parser.add_argument("--quick", action="store_true", help="smoke setting: 20 steps, 100 training images per class, narrow networks, 200 test images")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra recipe overrides, e.g. train.n_dis=5")
    parser.add_argument("--fashion", type=Path, help="an existing `synthgen data import idx` folder of Fashion-MNIST to use")
    parser.add_argument("--test-images", type=int, default=2000, help="test images translated")
    args = parser.parse_args()
    steps = 20 if args.quick else args.steps
    fm = import_fashion(args.fashion)
    root = link_subset(fm / "train", WORK / "train-subset", 100) if args.quick else fm / "train"
    shutil.rmtree(WORK / "weights", ignore_errors=True)
    print(f"machine: {machine()}\n{steps} steps on {root}", flush=True)
    sets = [f"data.root={root}", f"train.out_dir={WORK / 'weights'}", f"train.steps={steps}", "name=stargan",
            "data.image_size=28", "data.channels=1", *args.sets]
    if args.quick:
        sets += ["train.log_every=10", "train.checkpoint_every=20", "train.sample_every=20", "model.g_channels=8", "model.d_channels=8", "model.n_blocks=1"]
    start = time.perf_counter()
    synthgen("train", "stargan", *[a for s in sets for a in ("--set", s)])
    trained = time.perf_counter() - start
    run = WORK / "weights" / "stargan"

    train_images = load_labelled(root, 28, 1, "crop")
    test = load_labelled(fm / "test", 28, 1, "crop")
    n, k = (200 if args.quick else args.test_images), len(train_images.class_names)
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(test.images), generator=gen)[:n]
    inputs, source = test.images[pick], test.labels[pick]
    targets = (source + torch.randint(1, k, (n,), generator=gen)) % k  # always another class
    # The random baseline's image of the target class, from the test images not translated.
    rest = torch.ones(len(test.images), dtype=torch.bool)
    rest[pick] = False
    pool = LabelledImages(test.images[rest], test.labels[rest], test.class_names)
    random_target = torch.stack([pool.images[pool.labels == t][int(torch.randint(int((pool.labels == t).sum()), (), generator=gen))] for t in targets.tolist()])

    classifier = domain_classifier(train_images, WORK / "domain", 50 if args.quick else 600)
    reference = subset(pool, 500)
    rows = {
        "StarGAN G(x, target)": scores(translate(run, inputs, targets), inputs, targets, classifier, reference),
        "baseline: the input itself": scores(inputs, inputs, targets, classifier, reference),
        "baseline: a random target-class image": scores(random_target, inputs, targets, classifier, reference),
    }
    real_features, train_features = classifier(reference.images), classifier(subset(train_images, 500).images)
    real_vs_real = float(np.mean([kid(real_features[reference.labels == c], train_features[subset(train_images, 500).labels == c])[0] for c in range(k)]))
    print_table(f"{n} Fashion-MNIST test images, each into a random other class ({k} classes, {steps} steps, {trained:.0f} s)",
                ["output", "target-class rate", "KID to target class", "SSIM to input"],
                [[name, f"{r['target_rate']:.3f}", f"{r['kid']:.4f}", f"{r['ssim_to_input']:.3f}"] for name, r in rows.items()])
    print(f"real-vs-real KID (training vs test images of a class, mean over classes): {real_vs_real:.4f}")
    goal = rows["StarGAN G(x, target)"]
    print(f"goal (rate >= 0.9, SSIM well above the random baseline's {rows['baseline: a random target-class image']['ssim_to_input']:.3f}): "
          f"rate {goal['target_rate']:.3f}, SSIM {goal['ssim_to_input']:.3f}")
    if args.quick:
        print("[--quick: a smoke run, not a measurement]")
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "quick": args.quick, "steps": steps, "overrides": sets, "train_seconds": round(trained, 1),
              "test_images": n, "rows": rows, "real_vs_real_kid": real_vs_real}
    (OUT / "stargan_fashion.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
