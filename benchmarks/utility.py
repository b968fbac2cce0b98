"""Does synthetic data help? A realistic small-data setting, end to end through the CLI.

    make bench-utility [DATASET=flowers5]
    .venv/bin/python benchmarks/utility.py [--dataset fashion-mnist|flowers5] [--recipes a.yaml,b.yaml] [--budget 20m] [--fresh]

Not a bench_*.py: `make bench` runs those and stays at a few minutes; this
one trains a GAN per recipe for its budget and 18 classifiers per recipe
(on Fashion-MNIST about 2 x (budget + 12) minutes on 2 CPU cores).

1. data, per --dataset (the two the recipes' defaults are decided on):
   - fashion-mnist (default): ../shared/datasets/fashion-mnist (`synthgen data
     import idx`); a stratified, seeded 600 of each class's 6,000 training
     images, then three classes (drawn with the same seed, not picked by hand)
     cut to 60: 4,380 training images. The test set is the official 10,000.
   - flowers5: ../shared/datasets/flowers5 (5 classes, 733-1,052 RGB photos
     each) resized once to 64 px (the recipes' largest automatic size), split
     by `synthgen data split` (seeded, 20% of every class held out as the test
     set); 400 of each class's training images, two classes (drawn) cut to 40:
     1,280 training images.
2. augmentation: `synthgen augment TRAIN --per-class MAJORITY` (policy medium):
   the same counts as the synthetic top-up, augmented images only.
3. per GAN recipe (default recipes/demo.yaml and recipes/small-data.yaml, each
   as it is, only data.root, train.out_dir, name and train.budget set, one
   after the other so each has the whole machine):
   - `synthgen train` to the wall-clock budget (default 20m);
   - synthetic: `synthgen sample --fill-to MAJORITY --data TRAIN` (gated): tops
     every minority class up to the majority count (540 images each on
     Fashion-MNIST); for case (b), CAS, a complete gated set: `--balanced -n MAJORITY`;
   - `synthgen eval --per-class` of the complete set against TRAIN: within-class
     MS-SSIM of every synthetic class beside its real class's;
   - `synthgen eval --utility` over 3 seeds: cases (a)-(f), (f) being real only
     with class-balanced batches (the re-sampling baseline);
   - the same top-up with the gate's per-image filter the other way round
     (`gate.recognised_only`: only images the run's domain classifier puts in
     their class; on in recipes/small-data.yaml) and cases (c), (e) with it.
     Both top-ups pass the setting explicitly, so a run trained before the
     recipe changed is sampled as the recipe is now.
4. the ceiling, once: case (c) with the top-up made of real training images the
   small set left out (seeded): what perfect synthetic images of the rare
   classes could give at most.
5. one summary table, and out/bench/utility_<dataset>.json (every figure, the
   settings, gate verdicts and stage timings; Fashion-MNIST's keeps its former
   name, utility_fashion.json).

Every stage is skipped when its output is complete (a stopped run continues);
--fresh starts over. Intermediate folders: out/bench/utility_fashion/ and
out/bench/utility_flowers5/ (per recipe: synthetic_<filter>/, the top-ups,
recognised or unfiltered, and synthetic_all_<filter>/, the complete set).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, REPO, SHARED_FM, machine, print_table, synthgen, write_json  # noqa: E402

from synthgen.data.folders import holds_images  # noqa: E402
from synthgen.recipe import load_recipe  # noqa: E402

SHARED_FLOWERS = REPO.parent / "shared" / "datasets" / "flowers5"
FLOWERS_SIZE = 64
SEED = 0


def import_fashion_mnist(dest: Path) -> None:
    synthgen("data", "import", "idx", SHARED_FM, dest, "--names", "fashion-mnist")


def import_flowers5(dest: Path) -> None:
    """flowers5 at 64 px (resized once, so the GAN, the classifiers and the test set all see 64 px), split 80/20."""
    from PIL import Image

    resized = dest.with_name(f"flowers5-{FLOWERS_SIZE}")
    tmp = resized.with_name(resized.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for source in sorted(SHARED_FLOWERS.glob("*/*")):
        target = tmp / source.parent.name / (source.stem + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.convert("RGB").resize((FLOWERS_SIZE, FLOWERS_SIZE), Image.Resampling.LANCZOS).save(target)
    shutil.rmtree(resized, ignore_errors=True)
    tmp.rename(resized)
    synthgen("data", "split", resized, dest, "--test-fraction", 0.2, "--seed", SEED)


@dataclass(frozen=True)
class Setting:
    """A dataset and how the small, skewed training set is cut from its training split."""

    title: str
    source: Path  # what must exist in ../shared
    work: Path  # intermediate folders; the JSON is named after it
    prepare: Callable[[Path], None]  # writes DEST/train/<class>/ and DEST/test/<class>/
    per_class: int  # training images kept of every class
    minority_classes: int  # drawn with the seed, not picked by hand
    minority_count: int  # training images kept of each of those


SETTINGS = {
    "fashion-mnist": Setting("Fashion-MNIST", SHARED_FM / "train-images-idx3-ubyte.gz", OUT / "utility_fashion",
                             import_fashion_mnist, per_class=600, minority_classes=3, minority_count=60),
    "flowers5": Setting(f"flowers5 at {FLOWERS_SIZE} px", SHARED_FLOWERS, OUT / "utility_flowers5",
                        import_flowers5, per_class=400, minority_classes=2, minority_count=40),
}


def withheld_real(full_train: Path, train: Path, dest: Path, majority: int) -> None:
    """Links to real training images the small set left out, topping each short class up to `majority` (seeded)."""
    rng = random.Random(SEED + 1)
    chosen = {}
    for folder in sorted(d for d in train.iterdir() if d.is_dir()):
        taken = {p.name for p in folder.iterdir()}
        if len(taken) < majority:
            left = sorted(p for p in (full_train / folder.name).iterdir() if p.name not in taken)
            chosen[folder.name] = rng.sample(left, majority - len(taken))
    link_folder(dest, chosen)


def small_train_set(full_train: Path, dest: Path, setting: Setting) -> dict:
    """Links to a seeded `per_class` images of every class, a few random classes cut to `minority_count`."""
    rng = random.Random(SEED)
    classes = sorted(d.name for d in full_train.iterdir() if d.is_dir())
    minority = sorted(rng.sample(classes, setting.minority_classes))
    chosen = {}
    for name in classes:
        files = sorted((full_train / name).iterdir())
        chosen[name] = rng.sample(files, setting.minority_count if name in minority else setting.per_class)
    link_folder(dest, chosen)
    return {"classes": classes, "minority": minority, "counts": {name: len(files) for name, files in chosen.items()}}


def link_folder(dest: Path, chosen: dict[str, list[Path]]) -> None:
    """dest/<class>/<name> linked to each chosen file; complete or absent (built beside it, then renamed)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, files in chosen.items():
        (tmp / name).mkdir(parents=True)
        for path in files:
            (tmp / name / path.name).symlink_to(path.resolve())
    tmp.rename(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(SETTINGS), default="fashion-mnist", help="the data and its small, skewed setting")
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="Comma-separated GAN recipes, each trained to --budget")
    parser.add_argument("--budget", default="20m", help="GAN training wall-clock budget per recipe (train.budget)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000, help="classifier steps per case and seed")
    parser.add_argument("--fresh", action="store_true", help="delete the intermediate folders and start over")
    args = parser.parse_args()
    setting = SETTINGS[args.dataset]
    if not setting.source.exists():
        sys.exit(f"needs {setting.source} (../shared/datasets)")
    work = setting.work
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\ndata: {setting.title}\nGAN budget: {args.budget} per recipe, one recipe at a time", flush=True)
    timings_file = work / "timings.json"  # stage timings survive a run that continues another
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def stage(name: str, done: bool, work, skipped: str = "already done") -> None:
        if done:
            print(f"== {name}: {skipped}, skipped", flush=True)
            return
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - start, 1)
        timings_file.write_text(json.dumps(timings))

    full, train, augmented = work / args.dataset, work / "train", work / "augmented"
    stage("import", (full / "test").is_dir(), lambda: setting.prepare(full))
    setting_file = work / "setting.json"
    stage("train set", train.is_dir() and setting_file.exists(),
          lambda: setting_file.write_text(json.dumps(small_train_set(full / "train", train, setting), indent=1)))
    counts = json.loads(setting_file.read_text())
    majority = max(counts["counts"].values())
    print(f"train: {sum(counts['counts'].values())} images, minority classes {counts['minority']} ({min(counts['counts'].values())} each), others {majority}")
    stage("augment", (augmented / "manifest.csv").exists() and all(
        len(list((augmented / c).glob("*.png"))) == majority - n for c, n in counts["counts"].items() if n < majority),
        lambda: synthgen("augment", train, augmented, "--per-class", majority, "--seed", SEED))
    withheld, ceiling = work / "withheld_real", work / "ceiling.json"
    stage("withheld real images", withheld.is_dir(), lambda: withheld_real(full / "train", train, withheld, majority))
    stage("ceiling: utility with real top-up", ceiling.exists(), lambda: synthgen(
        "eval", "--utility", "--train", train, "--test", full / "test", "--synthetic", withheld,
        "--cases", "c", "--seeds", args.seeds, "--steps", args.steps, "--json", ceiling))
    rows = {}
    for recipe in args.recipes.split(","):
        rows[Path(recipe).stem] = gan_case(recipe, args, stage, work, full, train, augmented, majority)
    summary = [summary_row(name, row, counts) for name, row in rows.items()]
    ceiling_report = json.loads(ceiling.read_text())
    ceiling_c = ceiling_report["cases"]["c"]
    print(f"ceiling, real top-up instead of synthetic (case c): macro-F1 {ceiling_c['macro_f1']['mean']:.4f}, "
          f"minority recall {ceiling_c['minority_recall']['mean']:.3f}", flush=True)
    print_table(f"{setting.title}, {sum(counts['counts'].values())} train images ({setting.minority_classes} classes at {setting.minority_count}), "
                f"GAN {args.budget} per recipe; "
                f"classifier {args.steps} steps x {args.seeds} seeds; macro-F1 and minority recall, mean over seeds", SUMMARY_HEADER, summary)
    result = {
        "dataset": args.dataset, "setting": counts, "budget": args.budget, "machine": machine(), "timings_s": timings, "command": " ".join(sys.argv),
        "recipes": rows, "ceiling_real_top_up": ceiling_report,
    }
    write_json(work.name, result)


DEFAULT_RECIPES = ["recipes/demo.yaml", "recipes/small-data.yaml"]
FILTER_NAMES = {True: "recognised", False: "unfiltered"}  # gate.recognised_only on / off, in folder names and the table
SUMMARY_HEADER = ["recipe", "filter", "GAN steps", "(a) real", "(f) balanced", "(d) +aug", "(c) +synth", "(e) +synth+aug", "minority recall a/f/c/e",
                  "(c) / (e) other filter", "minority recall c/e other filter", "CAS / real acc", "worst MS-SSIM ratio", "gate passed"]


def gan_case(recipe: str, args, stage, work: Path, full: Path, train: Path, augmented: Path, majority: int) -> dict:
    """Train one recipe to the budget on the small set, sample its top-up and a complete set, and run the utility cases."""
    name = Path(recipe).stem
    folder = work / name
    run = folder / "weights" / name
    trained = (run / "run.json").is_file() and (run / "checkpoints").is_dir()
    if not trained:
        shutil.rmtree(run, ignore_errors=True)  # a run killed mid-way starts over: its budget must be whole
    stage(f"{name}: gan", trained, lambda: synthgen(
        "train", recipe, "--set", f"data.root={train}", "--set", f"train.out_dir={run.parent}", "--set", f"name={name}",
        "--set", f"train.budget={args.budget}", "--set", "train.steps=10000000"))
    # The recipe's per-image filter, passed explicitly: the run's own saved recipe may predate the bundled one.
    # Each setting has its own folders: `sample` continues a folder it finds, whatever wrote it.
    filtered = load_recipe(recipe).gate.recognised_only
    synthetic, cas = folder / f"synthetic_{FILTER_NAMES[filtered]}", folder / f"synthetic_all_{FILTER_NAMES[filtered]}"
    with_filter = lambda on: ("--set", f"gate.recognised_only={str(on).lower()}")  # noqa: E731
    # Exit 3 = the gate held back a class: that is a finding (recorded below), not a failed benchmark.
    codes = {}
    stage(f"{name}: sample fill-to", False, lambda: codes.__setitem__("fill_to", synthgen(
        "sample", "--weights", run, "--fill-to", majority, "--data", train, "--out", synthetic, "--seed", SEED, *with_filter(filtered), ok=(0, 3))))
    stage(f"{name}: sample balanced (CAS)", False, lambda: codes.__setitem__("balanced", synthgen(
        "sample", "--weights", run, "--balanced", "-n", majority, "--out", cas, "--seed", SEED, *with_filter(filtered), ok=(0, 3))))
    # A class the gate held back has no images; `eval --utility` skips (with the reason) the cases of a set left empty.
    # Within-class MS-SSIM of the complete synthetic set against the real train images; recomputed like the samples
    # above, so that it always describes the set as it is now (a retrained run rewrites the set).
    diversity = folder / "ms_ssim.json"
    stage(f"{name}: within-class MS-SSIM", not holds_images(cas), lambda: synthgen(
        "eval", "--real", train, "--fake", cas, "--weights", run, "--per-class", "--json", diversity),
        skipped="the gate passed no class")
    utility = folder / "utility.json"
    stage(f"{name}: utility", False, lambda: synthgen(
        "eval", "--utility", "--train", train, "--test", full / "test", "--synthetic", synthetic, "--augmented", augmented,
        "--cas", cas, "--seeds", args.seeds, "--steps", args.steps, "--json", utility))
    # The same top-up with the per-image filter the other way round: what the recipe's setting is worth.
    other = FILTER_NAMES[not filtered]
    other_topup, utility_other = folder / f"synthetic_{other}", folder / f"utility_{other}.json"
    stage(f"{name}: sample fill-to, {other}", False, lambda: codes.__setitem__(f"fill_to_{other}", synthgen(
        "sample", "--weights", run, "--fill-to", majority, "--data", train, "--out", other_topup, "--seed", SEED,
        *with_filter(not filtered), ok=(0, 3))))
    stage(f"{name}: utility, {other}", False, lambda: synthgen(
        "eval", "--utility", "--train", train, "--test", full / "test", "--synthetic", other_topup, "--augmented", augmented,
        "--cases", "c,e", "--seeds", args.seeds, "--steps", args.steps, "--json", utility_other))
    state = json.loads((run / "run.json").read_text())
    return {
        "recipe": recipe, "gan_steps": state["step"], "precision": state.get("precision"), "sample_exit_codes": codes,
        "recognised_only": filtered,
        "gate": {kind: _gate_summary(f) for kind, f in (("fill_to", synthetic), ("balanced", cas), (f"fill_to_{other}", other_topup))},
        "ms_ssim": ms_ssim_per_class(json.loads(diversity.read_text())) if holds_images(cas) else {},
        "utility": json.loads(utility.read_text()),
        "utility_other_filter": json.loads(utility_other.read_text()),
    }


def ms_ssim_per_class(evaluation: dict) -> dict:
    """{class: {synthetic, real, ratio}} from `synthgen eval --per-class` (real: the train images' own figure)."""
    rows = {}
    for name, metrics in evaluation["per_class"].items():
        if "ms_ssim" in metrics:
            generated, real = metrics["ms_ssim"]["generated"], metrics["ms_ssim"]["real"]
            rows[name] = {"synthetic": generated, "real": real, "ratio": generated / real if real else None}
    return rows


def summary_row(name: str, row: dict, counts: dict) -> list:
    cases, other = row["utility"]["cases"], row["utility_other_filter"]["cases"]
    f1 = lambda key, c=cases: f"{c[key]['macro_f1']['mean']:.4f}" if key in c else "-"  # noqa: E731
    recall = lambda keys, c=cases: "/".join(f"{c[k]['minority_recall']['mean']:.3f}" if k in c else "-" for k in keys)  # noqa: E731
    cas = f"{cases['b']['accuracy']['mean'] / cases['a']['accuracy']['mean']:.3f}" if "b" in cases else "-"
    ratios = [r["ratio"] for r in row["ms_ssim"].values() if r["ratio"] is not None]
    worst = f"{max(ratios):.2f}" if ratios else "-"
    passed = sum(1 for c in row["gate"]["balanced"].get("classes", {}).values() if c.get("status") == "passed")
    return [name, FILTER_NAMES[row["recognised_only"]], row["gan_steps"], f1("a"), f1("f"), f1("d"), f1("c"), f1("e"), recall("afce"),
            f"{f1('c', other)} / {f1('e', other)}", recall("ce", other), cas, worst, f"{passed}/{len(counts['classes'])}"]


def _gate_summary(folder: Path) -> dict:
    """Per class: the gate's status, images written, batches retried and why a class was held back (sample's gate_report.json)."""
    path = folder / "gate_report.json"
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    keep = ("status", "existing", "written", "retried", "reason")
    return {"step": report.get("step"), "classes": {c: {k: v for k, v in e.items() if k in keep} for c, e in report["classes"].items()}}


if __name__ == "__main__":
    main()
