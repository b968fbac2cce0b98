"""StarGAN into another class: are translations the target class, and do they keep the input's structure?

    make bench-stargan          (or: .venv/bin/python benchmarks/stargan_fashion.py [--data flowers5] [--steps N] [--quick])
    make bench-stargan DATA=flowers5                                         QUICK=1: the smoke run

Not a bench_*.py: it trains a GAN. Two datasets (issue 16: Fashion-MNIST, and flowers5 for RGB):
- fashion-mnist: the official training images (28 px, grey) are the domains' images, the official test
  images are translated;
- flowers5: 4,317 RGB photos of 5 flower species (../shared/datasets), at 64 px with hflip; no official
  split, so HELD_OUT_PER_CLASS images per class, drawn with a seed, are held out as the test images.

1. `synthgen train recipes/stargan.yaml` on the training classes (the domains).
2. Test images, each translated into a random other class (the same draws for every row).
3. Per row: the target-class rate by synthgen's domain classifier (trained on the training
   images, metrics/domain.py); KID (domain features) of the outputs to the target class's real
   test images, averaged over classes, beside real-vs-real (training images of the class against
   its test images); SSIM to the input (structure kept); the high-frequency spectrum against real images of the
   same target classes, on the axes (stripes across the image) and off them (metrics/spectrum.py; 1 = like real
   images). On Fashion-MNIST also the rate and SSIM apart for pairs within a group of classes that share a layout
   (tops; shoes) and across groups, where no layout can be kept. With train.ema the translations are G_ema's, as
   `translate` makes them, and the live G's are a row of their own: both from one training run.
4. Baselines without a translator: the input itself (SSIM 1, never the target class), a random
   real image of the target class (the target class, structure not kept) and the real image of the
   target class most like the input by SSIM (retrieval: as much structure as a real image of the
   target class shares with the input, at the rate real images get).
Goal: target-class rate >= 0.9 with SSIM to the input well above the random baseline's.

The table, a grid (out/bench/stargan_<data>-grid.png: inputs, their translations, the random baseline) and
out/bench/stargan_<data>.json; with --set or --quick, stargan_<data>-<settings>.json and -grid.png, so a trial
does not replace the recipe's figures. --quick: a smoke run whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, REPO, machine, print_table, report_stem, synthgen  # noqa: E402
from sgan_fashion import import_fashion, split_labels  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from synthgen.checkpoint import latest_checkpoint, restore_network  # noqa: E402
from synthgen.data.loading import LabelledImages, load_labelled  # noqa: E402
from synthgen.imaging import to_model, to_uint8  # noqa: E402
from synthgen.metrics.features import domain_classifier  # noqa: E402
from synthgen.metrics.kid import kid  # noqa: E402
from synthgen.metrics.msssim import ssim  # noqa: E402
from synthgen.metrics.spectrum import high_frequency_ratios  # noqa: E402
from synthgen.translate import open_translator  # noqa: E402

FLOWERS = REPO.parent / "shared" / "datasets" / "flowers5"
HELD_OUT_PER_CLASS = 150  # flowers5's test images: half translated, half the reference and the random baseline's pool
GRID_COLUMNS = 12
QUICK_SETS = ["train.log_every=10", "train.checkpoint_every=20", "train.sample_every=20", "model.g_channels=8", "model.d_channels=8", "model.n_blocks=1"]


@dataclass
class Domains:
    """A labelled dataset for the benchmark: training folder, test folder, how to read them, where its outputs go."""

    name: str
    work: Path  # out/bench/<work.name>/ for the run; the results are named after work.name (report_stem)
    train: Path
    test: Path
    size: int
    channels: int
    hflip: bool
    # Classes that share a layout (tops; shoes): translations within a group can keep the input's structure, across
    # groups (a coat into a bag) the target has no place for it. The report splits the figures by it.
    layout_groups: tuple[tuple[str, ...], ...] = ()


def fashion_mnist(args) -> Domains:
    fm = import_fashion(args.fashion)
    train = link_subset(fm / "train", OUT / "stargan_fashion" / "train-subset", 100) if args.quick else fm / "train"
    groups = (("T-shirt-top", "Pullover", "Coat", "Shirt"), ("Sandal", "Sneaker", "Ankle-boot"))
    return Domains("fashion-mnist", OUT / "stargan_fashion", train, fm / "test", 28, 1, False, groups)


def flowers5(args) -> Domains:
    """flowers5 split with a seed: HELD_OUT_PER_CLASS images per class for testing, the rest for training (links)."""
    if not FLOWERS.is_dir():
        sys.exit(f"needs flowers5 in {FLOWERS}")
    work = OUT / "stargan_flowers5"
    dest = work / "split"
    if not (dest / "test").is_dir():
        split_labels(FLOWERS, dest, HELD_OUT_PER_CLASS, parts=("test", "train"))
    train = link_subset(dest / "train", work / "train-subset", 100) if args.quick else dest / "train"
    return Domains("flowers5", work, train, dest / "test", 64, 3, True)


DATASETS = {"fashion-mnist": fashion_mnist, "flowers5": flowers5}


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
def translate(run: Path, images: torch.Tensor, targets: torch.Tensor, live_g: bool = False, batch_size: int = 500) -> torch.Tensor:
    """The run's translations as `translate` makes them (G_ema where kept), or with `live_g` by its G."""
    translator = open_translator(run, to_class="all", device="cpu", precision="fp32")
    if live_g:
        checkpoint = latest_checkpoint(run)
        restore_network(translator.generator, checkpoint.weights("G"), checkpoint.path / "G.safetensors")
    return torch.cat([to_uint8(translator.generator(to_model(x), t)) for x, t in zip(images.split(batch_size), targets.split(batch_size))])


def save_grid(path: Path, *rows: torch.Tensor) -> None:
    """The first GRID_COLUMNS images of each row, one row above the other (uint8 [N, C, H, W])."""
    images = torch.cat([row[:GRID_COLUMNS] for row in rows])
    grid = make_grid(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images, nrow=GRID_COLUMNS, padding=2)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def within_layout(source: torch.Tensor, targets: torch.Tensor, class_names: list[str], groups: tuple[tuple[str, ...], ...]) -> torch.Tensor:
    """True where an input and its target class are in one layout group (classes that share a layout)."""
    group_of = torch.tensor([next((g for g, members in enumerate(groups) if name in members), -1 - k) for k, name in enumerate(class_names)])
    return group_of[source] == group_of[targets]


def scores(outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, classifier, real_features: torch.Tensor, real_labels: torch.Tensor,
           real_of_targets: torch.Tensor, within: torch.Tensor | None = None) -> dict:
    """Target-class rate, mean per-class KID to the target class's real images (their features), mean SSIM to the
    input, the high-frequency spectrum ratios to `real_of_targets` (real images of the same target classes) on and
    off the axes; with a `within` mask (within_layout), rate and SSIM also apart for pairs within a layout group and across."""
    features, logits = classifier.features_and_logits(outputs)
    hit, similarity = logits.argmax(1) == targets, ssim(outputs, inputs)
    kids = [kid(real_features[real_labels == k], features[targets == k])[0] for k in targets.unique().tolist() if (targets == k).sum() >= 2]
    on_axes, off_axes = high_frequency_ratios(outputs, real_of_targets)
    row = {"target_rate": float(hit.float().mean()), "kid": float(np.mean(kids)), "ssim_to_input": float(similarity.mean()),
           "high_freq_on_axes": on_axes, "high_freq_off_axes": off_axes}
    if within is not None:
        row["by_layout"] = {part: {"n": int(mask.sum()), "target_rate": float(hit[mask].float().mean()), "ssim_to_input": float(similarity[mask].mean())}
                            for part, mask in (("within", within), ("across", ~within))}
    return row


def most_alike(inputs: torch.Tensor, targets: torch.Tensor, pool: LabelledImages) -> torch.Tensor:
    """For each input, the pool's image of its target class with the highest SSIM to it: how much of an input's
    structure a real image of the target class can share, the SSIM a translator could hope for at full rate."""
    chosen = []
    for x, t in zip(inputs, targets.tolist()):
        candidates = pool.images[pool.labels == t]
        chosen.append(candidates[int(ssim(candidates, x.expand_as(candidates)).argmax())])
    return torch.stack(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATASETS), default="fashion-mnist", help="the labelled dataset whose classes are the domains")
    parser.add_argument("--steps", type=int, default=8000, help="training steps")
    parser.add_argument("--quick", action="store_true", help="smoke setting: 20 steps, 100 training images per class, narrow networks, 200 test images")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra recipe overrides, e.g. train.n_dis=5")
    parser.add_argument("--fashion", type=Path, help="an existing `synthgen data import idx` folder of Fashion-MNIST to use")
    parser.add_argument("--test-images", type=int, default=2000, help="test images translated (at most half of the test set)")
    parser.add_argument("--rescore", action="store_true", help="score the run an earlier call trained with the same --data, --set and --quick (its steps) instead of training")
    args = parser.parse_args()
    steps = 20 if args.quick else args.steps
    data = DATASETS[args.data](args)
    work = data.work
    print(f"machine: {machine()}", flush=True)
    fixed = [f"data.root={data.train}", f"train.steps={steps}", "name=stargan",
             f"data.image_size={data.size}", f"data.channels={data.channels}", f"data.hflip={str(data.hflip).lower()}"]
    sets, trained_on = fixed + args.sets, machine()
    if args.quick:
        sets += QUICK_SETS
    stem = report_stem(work.name, args.sets, args.quick)
    weights = work / "weights" / stem  # each setting keeps its own run, so trying one does not delete another
    run, record = weights / "stargan", weights / "trained.json"  # trained.json: what the run was trained with
    if args.rescore:
        if not record.is_file() or not run.is_dir():
            sys.exit(f"--rescore: no earlier run with these settings in {run}")
        earlier = json.loads(record.read_text())
        steps, sets, trained, trained_on = earlier["steps"], earlier["overrides"], earlier["train_seconds"], earlier["trained_on"]
        print(f"rescoring the earlier run in {run}: {steps} steps, {' '.join(args.sets) or 'the recipe as is'}, trained on {trained_on}", flush=True)
    else:
        print(f"{steps} steps on {data.train}", flush=True)
        shutil.rmtree(weights, ignore_errors=True)
        start = time.perf_counter()
        synthgen("train", "stargan", *[a for s in [*sets, f"train.out_dir={weights}"] for a in ("--set", s)])
        trained = time.perf_counter() - start
        record.write_text(json.dumps({"quick": args.quick, "steps": steps, "overrides": sets, "train_seconds": round(trained, 1), "trained_on": trained_on}))

    train_images = load_labelled(data.train, data.size, data.channels, "crop")
    test = load_labelled(data.test, data.size, data.channels, "crop")
    n, k = min(200 if args.quick else args.test_images, len(test.images) // 2), len(train_images.class_names)
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(test.images), generator=gen)[:n]
    inputs, source = test.images[pick], test.labels[pick]
    targets = (source + torch.randint(1, k, (n,), generator=gen)) % k  # always another class
    # The random baseline's image of the target class, from the test images not translated.
    rest = torch.ones(len(test.images), dtype=torch.bool)
    rest[pick] = False
    pool = LabelledImages(test.images[rest], test.labels[rest], test.class_names)
    def draw_of_targets() -> torch.Tensor:
        return torch.stack([pool.images[pool.labels == t][int(torch.randint(int((pool.labels == t).sum()), (), generator=gen))] for t in targets.tolist()])

    random_target = draw_of_targets()
    spectrum_reference = draw_of_targets()  # a second, independent draw: what every row's spectrum is compared with

    classifier = domain_classifier(train_images, work / "domain", 50 if args.quick else 600, hflip=data.hflip)
    reference = subset(pool, 500)
    real_features = classifier(reference.images)
    translated = translate(run, inputs, targets)
    outputs = {
        "StarGAN G(x, target)": translated,
        **({"StarGAN, the live G (not averaged)": translate(run, inputs, targets, live_g=True)} if latest_checkpoint(run).generator_name == "G_ema" else {}),
        "baseline: the input itself": inputs,
        "baseline: a random target-class image": random_target,
        "baseline: the target-class image most like the input": most_alike(inputs, targets, pool),
    }
    within = within_layout(source, targets, test.class_names, data.layout_groups) if data.layout_groups else None
    rows = {name: scores(images, inputs, targets, classifier, real_features, reference.labels, spectrum_reference, within) for name, images in outputs.items()}
    real_subset = subset(train_images, 500)
    train_features = classifier(real_subset.images)
    real_vs_real = float(np.mean([kid(real_features[reference.labels == c], train_features[real_subset.labels == c])[0] for c in range(k)]))
    print_table(f"{n} {data.name} test images, each into a random other class ({k} classes, {steps} steps, {trained:.0f} s)",
                ["output", "target-class rate", "KID to target class", "SSIM to input", "high freq. on axes", "off axes"],
                [[name, f"{r['target_rate']:.3f}", f"{r['kid']:.4f}", f"{r['ssim_to_input']:.3f}", f"{r['high_freq_on_axes']:.2f}",
                  f"{r['high_freq_off_axes']:.2f}"] for name, r in rows.items()])
    print(f"real-vs-real KID (training vs test images of a class, mean over classes): {real_vs_real:.4f}")
    goal = rows["StarGAN G(x, target)"]
    print(f"goal (rate >= 0.9, SSIM well above the random baseline's {rows['baseline: a random target-class image']['ssim_to_input']:.3f}): "
          f"rate {goal['target_rate']:.3f}, SSIM {goal['ssim_to_input']:.3f}")
    if within is not None:
        print_table(f"split by layout: within a group of classes that share one ({'; '.join(', '.join(g) for g in data.layout_groups)}; "
                    f"{int(within.sum())} images) and across groups ({int((~within).sum())})",
                    ["output", "rate within", "SSIM within", "rate across", "SSIM across"],
                    [[name, *(f"{r['by_layout'][part][key]:.3f}" for part in ("within", "across") for key in ("target_rate", "ssim_to_input"))]
                     for name, r in rows.items()])
    if args.quick:
        print("[--quick: a smoke run, not a measurement]")
    OUT.mkdir(parents=True, exist_ok=True)
    save_grid(OUT / f"{stem}-grid.png", inputs, translated, random_target)
    report = {"machine": machine(), "trained_on": trained_on, "data": data.name, "quick": args.quick, "steps": steps, "overrides": sets, "train_seconds": round(trained, 1),
              "test_images": n, "targets": [test.class_names[t] for t in targets[:GRID_COLUMNS].tolist()], "rows": rows, "real_vs_real_kid": real_vs_real}
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print(f"report: {OUT / stem}.json and its -grid.png")


if __name__ == "__main__":
    main()
