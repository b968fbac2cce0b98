"""Text-to-image on Fashion-MNIST captioned with class + bright/dark: how often a generated image matches its prompt.

    make bench-text2image        (or: .venv/bin/python benchmarks/text2image_fashion.py [--steps N] [--quick])

Not a bench_*.py: it trains a GAN.

1. data: Fashion-MNIST training images captioned by data/captions.py's
   caption_labelled_folder: "a bright sneaker" / "sneaker, bright" (or dark:
   the image's mean intensity below its class's median), metadata.jsonl.
2. `synthgen train recipes/text2image.yaml` on that folder.
3. `synthgen sample --captions` with the 20 prompts "a {bright,dark} {class}", N images each.
4. Scored per image: the class matches when synthgen's domain classifier (trained on the real
   training images with their labels) puts it in the prompt's class; the attribute matches when its
   mean intensity is on the prompt's side of that class's median (the threshold the captions used).
5. Baseline: the same images scored against prompts shuffled across images (chance level for a
   generator that ignores its prompt: 1/10 for the class, about 1/2 for the attribute).

The table and out/bench/text2image_fashion.json. --quick: a smoke run on the embedded demo split
(4 classes, 100 steps) whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, REPO, SHARED_FM, print_table, synthgen, write_json  # noqa: E402

import torch  # noqa: E402

from synthgen.data.captions import caption_labelled_folder, words  # noqa: E402
from synthgen.data.idx import import_idx, resolve_class_names  # noqa: E402
from synthgen.data.loading import load_labelled  # noqa: E402
from synthgen.imaging import load_image  # noqa: E402
from synthgen.metrics.features import domain_classifier  # noqa: E402

WORK = OUT / "text2image_fashion"
QUICK_CLASSES = ["Trouser", "Sneaker", "Bag", "T-shirt-top"]


def labelled_source(quick: bool) -> Path:
    """Fashion-MNIST as class folders: the training split (shared datasets), or for --quick four classes of the embedded demo split."""
    if quick:
        out = WORK / "demo-png"
        if not (out / "test").is_dir():
            import_idx(REPO / "demo" / "fashion-mnist", out, resolve_class_names("fashion-mnist"))
        four = WORK / "demo-four"
        four.mkdir(parents=True, exist_ok=True)
        for name in QUICK_CLASSES:
            if not (four / name).exists():
                (four / name).symlink_to((out / "test" / name).resolve())
        return four
    out = OUT / "fashion-mnist-png"  # shared with sgan_fashion.py and infogan_fashion.py
    if not (out / "train").is_dir():
        if not (SHARED_FM / "train-images-idx3-ubyte.gz").exists():
            sys.exit(f"needs the Fashion-MNIST idx files in {SHARED_FM} (or --quick)")
        synthgen("data", "import", "idx", SHARED_FM, out, "--names", "fashion-mnist")
    return out / "train"


def score(out: Path, classifier, class_names: list[str], thresholds: dict[str, float], prompt_of: dict[str, tuple[str, str]], shuffle_seed: int = 0) -> dict:
    """Class, attribute and joint match rates of the images in `out` against their prompts, and against shuffled prompts."""
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = torch.stack([load_image(out / row["file"], 1, 28, "crop") for row in rows])
    predicted = classifier.features_and_logits(images)[1].argmax(dim=1)
    means = images.float().mean(dim=(1, 2, 3))
    wanted = [prompt_of[row["prompt"]] for row in rows]
    shuffled = [wanted[i] for i in torch.randperm(len(wanted), generator=torch.Generator().manual_seed(shuffle_seed)).tolist()]

    def rates(prompts):
        cls = torch.tensor([predicted[i].item() == class_names.index(c) for i, (c, _) in enumerate(prompts)])
        attr = torch.tensor([(means[i].item() >= thresholds[c]) == (a == "bright") for i, (c, a) in enumerate(prompts)])
        return {"class": cls.float().mean().item(), "attribute": attr.float().mean().item(), "both": (cls & attr).float().mean().item()}

    return {"prompts": rates(wanted), "shuffled": rates(shuffled), "images": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--per-class", type=int, default=None, help="Training images per class (default: all).")
    parser.add_argument("-n", type=int, default=100, help="Images per prompt.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: embedded demo split, 4 classes, 100 steps, 16 images per prompt.")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.n, args.per_class = 100, 16, 300
    start = time.perf_counter()
    source = labelled_source(args.quick)
    captioned = WORK / ("captioned-quick" if args.quick else "captioned")
    thresholds = caption_labelled_folder(source, captioned, per_class=args.per_class)
    name = "text2image-quick" if args.quick else "text2image-bench"
    runs = WORK / "runs"
    overrides = [f"data.root={captioned}", f"train.steps={args.steps}", f"name={name}", f"train.out_dir={runs}", "data.image_size=28", "data.channels=1"]
    if args.quick:
        overrides += ["model.g_channels=16", "model.d_channels=16", "train.batch_size=32", "train.checkpoint_every=100", "train.sample_every=100"]
    resume = ["--resume"] if (runs / name).exists() else []
    synthgen("train", REPO / "recipes" / "text2image.yaml", *[a for o in overrides for a in ("--set", o)], *resume)

    class_names = sorted(thresholds)
    prompt_of = {f"a {a} {' '.join(words(c))}": (c, a) for c in class_names for a in ("bright", "dark")}
    prompts = WORK / "prompts.txt"
    prompts.write_text("".join(p + "\n" for p in prompt_of))
    out = WORK / ("samples-quick" if args.quick else "samples")
    synthgen("sample", "--weights", runs / name, "--captions", prompts, "-n", args.n, "--out", out)

    found = load_labelled(source, 28, 1, "crop")
    classifier = domain_classifier(found, None, steps=200 if args.quick else 1500)
    result = score(out, classifier, found.class_names, thresholds, prompt_of)
    rows = [[which, f"{r['class']:.3f}", f"{r['attribute']:.3f}", f"{r['both']:.3f}"] for which, r in (("prompt", result["prompts"]), ("shuffled prompts", result["shuffled"]))]
    print_table(f"text2image, {args.steps} steps, {result['images']} images ({len(prompt_of)} prompts x {args.n})", ["scored against", "class", "bright/dark", "both"], rows)
    write_json("text2image_fashion" + ("_quick" if args.quick else ""), {
        "settings": {"steps": args.steps, "n": args.n, "per_class": args.per_class, "quick": args.quick, "classes": class_names},
        **result, "seconds": round(time.perf_counter() - start, 1),
    })


if __name__ == "__main__":
    main()
