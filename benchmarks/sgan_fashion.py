"""SGAN on Fashion-MNIST with 100 labels per class: its classifier against the same network trained on the labels alone.

    make bench-sgan            (or: .venv/bin/python benchmarks/sgan_fashion.py [--steps N] [--quick])

Not a bench_*.py (`make bench` stays at a few minutes): it trains two runs.

1. data: Fashion-MNIST from ../shared/datasets/fashion-mnist (`synthgen data
   import idx`); 100 training images per class drawn with a seed (1,000
   labelled), the other 59,000 training images unlabelled. Test: the
   official 10,000.
2. `synthgen train recipes/sgan.yaml` with data.root = the labelled images and
   options.unlabelled = the rest; the twin is the same recipe with
   options.supervised_only=true: the same D, steps and labelled batches,
   no G and no unlabelled images.
3. `synthgen classify` of the test images with each run; accuracy from the
   CSV (the folder of each file is its class). Goal (issue 14): the SGAN at
   least 5 points above the twin. Salimans et al. report 0.93% error on MNIST
   with 100 labels in all (a permutation-invariant MLP; not the same task).

The table and out/bench/sgan_fashion.json (sgan_fashion-<settings>.json with --set). --quick: a smoke run (a few
steps, a tenth of the test set) that shows the pipeline works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, SHARED_FM, machine, print_table, report_stem, synthgen  # noqa: E402

WORK = OUT / "sgan_fashion"
IMPORTED = OUT / "fashion-mnist-png"  # shared with infogan_fashion.py
SEED = 0


def import_fashion(existing: Path | None = None) -> Path:
    """Fashion-MNIST as PNG class folders (train/, test/), imported once for the benchmarks that need it (or `existing`)."""
    if existing is not None:
        if not (existing / "train").is_dir() or not (existing / "test").is_dir():
            sys.exit(f"--fashion {existing}: expected the train/ and test/ folders of `synthgen data import idx`")
        return existing
    if not (SHARED_FM / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"needs the Fashion-MNIST idx files in {SHARED_FM}")
    if not (IMPORTED / "test").is_dir():
        synthgen("data", "import", "idx", SHARED_FM, IMPORTED, "--names", "fashion-mnist")
    return IMPORTED


def split_labels(train: Path, dest: Path, per_class: int, unlabelled_per_class: int | None = None,
                 parts: tuple[str, str] = ("labelled", "unlabelled")) -> dict:
    """Links: dest/labelled/<class>/ (per_class drawn with the seed), dest/unlabelled/<class>/ (the rest, or
    the first `unlabelled_per_class` of it; folder names unused). `parts` renames the two folders."""
    rng = random.Random(SEED)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = dict.fromkeys(parts, 0)
    for folder in sorted(d for d in train.iterdir() if d.is_dir()):
        files = sorted(folder.iterdir())
        chosen = set(rng.sample(range(len(files)), per_class))
        rest = [i for i in range(len(files)) if i not in chosen][:unlabelled_per_class]
        for i in sorted(chosen | set(rest)):
            path, part = files[i], parts[0] if i in chosen else parts[1]
            (tmp / part / folder.name).mkdir(parents=True, exist_ok=True)
            (tmp / part / folder.name / path.name).symlink_to(path.resolve())
            counts[part] += 1
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return counts


def test_subset(test: Path, dest: Path, per_class: int | None) -> Path:
    """The test folder, or links to its first `per_class` images of every class (--quick)."""
    if per_class is None:
        return test
    shutil.rmtree(dest, ignore_errors=True)
    for folder in sorted(d for d in test.iterdir() if d.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:per_class]:
            (dest / folder.name / path.name).symlink_to(path.resolve())
    return dest


def csv_accuracy(predictions: Path) -> tuple[float, int]:
    rows = list(csv.DictReader(predictions.open()))
    return sum(r["file"].split("/")[0] == r["class"] for r in rows) / len(rows), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000, help="training steps of each run")
    parser.add_argument("--labels-per-class", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="smoke setting: 30 steps, 200 unlabelled and 100 test images per class")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra recipe overrides for both runs, e.g. model.d_channels=32")
    parser.add_argument("--fashion", type=Path, help="an existing `synthgen data import idx` folder of Fashion-MNIST to use")
    args = parser.parse_args()
    steps = 30 if args.quick else args.steps
    fm = import_fashion(args.fashion)
    shutil.rmtree(WORK / "weights", ignore_errors=True)  # runs start fresh: the figures are of one training
    counts = split_labels(fm / "train", WORK / "data", args.labels_per_class, 200 if args.quick else None)
    test = test_subset(fm / "test", WORK / "test-subset", 100 if args.quick else None)
    print(f"machine: {machine()}\nlabelled {counts['labelled']}, unlabelled {counts['unlabelled']}, {steps} steps each", flush=True)
    common = [f"data.root={WORK / 'data' / 'labelled'}", f"options.unlabelled={WORK / 'data' / 'unlabelled'}",
              f"train.out_dir={WORK / 'weights'}", f"train.steps={steps}", "gate.eval_during_training=false", *args.sets]
    if args.quick:
        common += ["train.log_every=10", "model.g_channels=16", "model.d_channels=16"]
    results = {}
    for name, extra in (("sgan", []), ("supervised", ["options.supervised_only=true"])):
        start = time.perf_counter()
        synthgen("train", "sgan", *[a for s in [f"name={name}", *common, *extra] for a in ("--set", s)])
        trained = time.perf_counter() - start
        predictions = WORK / f"predictions-{name}.csv"
        synthgen("classify", test, "--weights", WORK / "weights" / name, "--out", predictions)
        accuracy, n = csv_accuracy(predictions)
        results[name] = {"accuracy": accuracy, "test_images": n, "train_seconds": round(trained, 1)}
    gain = results["sgan"]["accuracy"] - results["supervised"]["accuracy"]
    rows = [[name, f"{r['accuracy']:.4f}", r["test_images"], r["train_seconds"]] for name, r in results.items()]
    print_table(f"Fashion-MNIST, {args.labels_per_class} labels per class, {steps} steps", ["classifier", "test accuracy", "test images", "train s"], rows)
    print(f"SGAN - supervised-only: {100 * gain:+.2f} points (goal: +5){'  [--quick: a smoke run, not a measurement]' if args.quick else ''}")
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "quick": args.quick, "steps": steps, "labels_per_class": args.labels_per_class,
              "overrides": common, "counts": counts, "results": results, "gain_points": round(100 * gain, 2)}
    report_path = OUT / f"{report_stem('sgan_fashion', args.sets, args.quick)}.json"
    report_path.write_text(json.dumps(report, indent=1))
    print(f"report: {report_path}")


if __name__ == "__main__":
    main()
