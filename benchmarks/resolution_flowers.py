"""Resolution on a CPU (issue 15, section 6): what each architecture gives on RGB flowers in the same wall-clock time.

    make bench-resolution     (or: .venv/bin/python benchmarks/resolution_flowers.py [--budget 5m] [--sizes 64,128]
                              [--rows a,b] [--variant NAME:RECIPE:key=value,...] [--quick] [--fresh])

For every image size and every row, one run after another so that each has the whole machine:
1. `synthgen train RECIPE` on flowers5 (4,317 RGB photos in 5 classes, ../shared/datasets) with
   data.root, data.image_size, data.hflip (flowers are mirror-symmetric), name, train.out_dir
   and train.budget set, the rest of the recipe as a user runs it:
   - stylegan:  recipes/stylegan.yaml (StyleGAN2-style G, ResNet D, rpgan + R1 + R2, ADA);
   - progan:    recipes/progan.yaml (progressive growing) with options.grow.images_per_stage=auto:
                the full size is reached at half the budget, by the stages' speeds measured here;
   - resnet:    recipes/small-data.yaml with model.backbone=resnet (the ResNet baseline);
   - small-data: recipes/small-data.yaml as bundled (the DCGAN backbone), the recommended recipe;
   - any --variant NAME:RECIPE:key=value,...: a recipe with settings changed (how the recommended
                recipe's width and learning rates were decided on a second dataset, issue 13);
   - stylegan-growing: recipes/stylegan-growing.yaml, the same StyleGAN-style G grown
                progressively against ProGAN's D (StyleGAN v1's setting), its schedule auto
                like ProGAN's.
2. `synthgen sample --balanced -n PER_CLASS --no-gate` of the default checkpoint, and a grid of
   the first GRID_PER_CLASS images of every class (out/bench/resolution_flowers/grid-<size>-<row>.png);
3. `synthgen eval` of those images against all of flowers5 at that size, with domain features
   (one classifier per size, the first row's, so the rows compare) and with the standard
   Inception network (FID and KID), each beside its real-vs-real figure.
flowers5 has no held-out split: the real side is the training images themselves.
Not part of `make bench`. Every stage is skipped when its output is complete; --fresh starts over.
Output: out/bench/resolution_flowers.json, intermediate folders out/bench/resolution_flowers/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, REPO, VARIANT_HELP, machine, print_table, recipe_variant, synthgen, write_json  # noqa: E402

FLOWERS = REPO.parent / "shared" / "datasets" / "flowers5"
WORK = OUT / "resolution_flowers"
MAX_STEPS = 10_000_000  # the budget stops training, not the step count
PER_CLASS, GRID_PER_CLASS = 200, 8
# The growing rows' schedule: images_per_stage auto, measured by `train` on this machine so that the
# full size has faded in at half the budget (a count sized by hand, 6,000 images per stage at 64 px,
# stopped the 5-minute ProGAN run at 32 px: README).
ROWS = {
    "stylegan": ("recipes/stylegan.yaml", []),
    "progan": ("recipes/progan.yaml", []),
    "resnet": ("recipes/small-data.yaml", ["model.backbone=resnet"]),
    "stylegan-growing": ("recipes/stylegan-growing.yaml", []),
    "small-data": ("recipes/small-data.yaml", []),  # the recommended recipe as bundled: issue 13's second dataset
}
GROWING = ("progan", "stylegan-growing")
QUICK = ["model.g_channels=16", "model.d_channels=16", "train.batch_size=8", "gate.eval_during_training=false"]


def settings(row: str, size: int, quick: bool) -> list[str]:
    sets = [*ROWS[row][1], f"data.image_size={size}", "data.hflip=true"]
    if row in GROWING:
        sets.append("options.grow.images_per_stage=auto")
    return sets + (QUICK if quick else [])


def train(row: str, size: int, budget: str, quick: bool) -> tuple[Path, dict]:
    name = f"{row}-{size}"
    run = WORK / "weights" / name
    if not (run / "run.json").is_file() or not (run / "checkpoints").is_dir():
        shutil.rmtree(run, ignore_errors=True)
        sets = [f"name={name}", f"data.root={FLOWERS}", f"train.out_dir={run.parent}", f"train.budget={budget}",
                f"train.steps={MAX_STEPS}", *settings(row, size, quick)]
        synthgen("train", ROWS[row][0], *[a for s in sets for a in ("--set", s)])
    state = json.loads((run / "run.json").read_text())
    return run, {"row": row, "size": size, "recipe": ROWS[row][0], "settings": settings(row, size, quick), "steps": state["step"],
                 "precision": state.get("precision"), "train_seconds": round(state.get("train_seconds", 0.0), 1),
                 "setup_seconds": state.get("evaluator_setup_seconds"), **last_log(run)}


def last_log(run: Path) -> dict:
    """Training speed and, for ProGAN, the resolution reached, from the run's last log line."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "img_per_s" in line), {})
    return {"img_per_s": last.get("img_per_s"), "resolution": last.get("resolution")}


def sample_and_grid(run: Path, name: str, per_class: int) -> Path:
    out = WORK / "samples" / name
    if not (out / "manifest.csv").is_file():
        synthgen("sample", "--weights", run, "--balanced", "-n", per_class, "--out", out, "--seed", 0, "--no-gate")
    classes = sorted(d for d in out.iterdir() if d.is_dir())
    rows = []
    for folder in classes:
        files = sorted(folder.glob("*.png"))[:GRID_PER_CLASS]
        rows += [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    grid = make_grid(torch.stack(rows), nrow=GRID_PER_CLASS, padding=2)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(WORK / f"grid-{name}.png")
    return out


def evaluate(samples: Path, classifier_run: Path, features: str, name: str) -> dict:
    out = WORK / f"eval-{name}-{features}.json"
    if not out.is_file():
        synthgen("eval", "--real", FLOWERS, "--fake", samples, "--weights", classifier_run, "--features", features, "--json", out)
    return json.loads(out.read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="5m", help="Training wall-clock budget per run (train.budget).")
    parser.add_argument("--sizes", default="64,128", help="Comma-separated image sizes.")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Comma-separated rows, the first one's domain classifier scores all ({', '.join(ROWS)}).")
    parser.add_argument("--variant", action="append", default=[], type=recipe_variant, help=VARIANT_HELP)
    parser.add_argument("--no-inception", action="store_true", help="Domain features only (Inception costs about 0.1 s an image on 2 cores).")
    parser.add_argument("--quick", action="store_true", help="Smoke setting: widths 16, batch 8, 20 per class; use with a short --budget.")
    parser.add_argument("--fresh", action="store_true", help="Start over (delete out/bench/resolution_flowers/).")
    args = parser.parse_args()
    ROWS.update({name: (recipe, sets) for name, recipe, sets in args.variant})
    rows = [row for row in args.rows.split(",") if row] + [name for name, _, _ in args.variant]
    if not FLOWERS.is_dir():
        sys.exit(f"needs flowers5 in {FLOWERS}")
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    per_class = 20 if args.quick else PER_CLASS
    features = ["domain"] + ([] if args.no_inception else ["inception"])
    print(f"machine: {machine()}\nbudget: {args.budget} of training per run, one run at a time")
    results = []
    for size in map(int, args.sizes.split(",")):
        trained = [train(row, size, args.budget, args.quick) for row in rows]
        for run, row in trained:
            name = f"{row['row']}-{size}"
            samples = sample_and_grid(run, name, per_class)
            row["metrics"] = {f: evaluate(samples, trained[0][0], f, name) for f in features}
            results.append(row)
    header = ["row", "size", "steps", "train s", "setup s", "img/s", "reached"] + [f"{f} {m}" for f in features for m in ("fid", "kid")]
    table = []
    for r in results:
        table.append([r["row"], r["size"], r["steps"], r["train_seconds"], r.get("setup_seconds"), r["img_per_s"], r["resolution"] or r["size"]]
                     + [f"{r['metrics'][f][m]['generated']:.4g}" for f in features for m in ("fid", "kid")])
    for size in sorted({r["size"] for r in results}):
        first = next(r for r in results if r["size"] == size)
        table.append(["real vs real", size, "", "", "", "", ""] + [f"{first['metrics'][f][m]['real']:.4g}" for f in features for m in ("fid", "kid")])
    print_table(f"flowers5, {args.budget} of training per run on this machine; {per_class} per class vs all 4,317 real images", header, table)
    write_json("resolution_flowers", {"budget": args.budget, "per_class": per_class, "rows": results})


if __name__ == "__main__":
    main()
