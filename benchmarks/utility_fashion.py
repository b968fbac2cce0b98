"""Does synthetic data help? Fashion-MNIST in a realistic small-data setting, end to end through the CLI.

    make bench-utility          (or: .venv/bin/python benchmarks/utility_fashion.py [--gan-steps N] [--fresh])

Not a bench_*.py: `make bench` runs those and stays at a few minutes; this
one trains a GAN and 15 classifiers (about 25-35 minutes on 2 CPU cores).

1. data: Fashion-MNIST from ../shared/datasets/fashion-mnist (`synthgen data
   import idx`); a stratified, seeded 10% of the 60,000 training images
   (600 per class), then three classes (drawn with the same seed, not picked
   by hand) cut to a tenth of the others (60 each): 4,380 training images.
   The test set is the full official 10,000 (1,000 per class).
2. GAN: recipes/demo.yaml as it is (AC-GAN, DCGAN backbone, class-balanced
   batches), only data.root, train.out_dir, name and train.steps set.
3. synthetic: `synthgen sample --fill-to 600 --data TRAIN` (gated): tops every
   class up to the majority count, i.e. 540 images for each minority class.
   For case (b), CAS, a complete gated set: `--balanced -n 600`.
4. augmentation: `synthgen augment TRAIN --per-class 600` (policy medium):
   the same counts as the synthetic top-up, augmented images only.
5. `synthgen eval --utility` over 3 seeds: the table, and
   out/bench/utility_fashion.json (the figures plus this pipeline's settings,
   gate verdicts and stage timings).

Every stage is skipped when its output is complete (a stopped run continues);
--fresh starts over. Intermediate folders: out/bench/utility_fashion/.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_FM = REPO.parent / "shared" / "datasets" / "fashion-mnist"
OUT = REPO / "out" / "bench"
WORK = OUT / "utility_fashion"

TRAIN_SHARE = 0.10  # of the official training set, per class
MINORITY_CLASSES = 3
MINORITY_SHARE = 0.10  # of the other classes' count
SEED = 0
RUN_NAME = "fm-small"


def synthgen(*args, ok=(0,)) -> int:
    """Run the CLI of this checkout; its output goes to the terminal. Exit codes outside `ok` stop the benchmark."""
    command = [sys.executable, "-m", "synthgen", *map(str, args)]
    print("$ synthgen " + " ".join(map(str, args)), flush=True)
    # Without COLUMNS, output to a log file is not wrapped at all (cli._console): log lines stay whole.
    code = subprocess.run(command, cwd=REPO).returncode
    if code not in ok:
        sys.exit(f"synthgen {args[0]} failed with exit code {code}")
    return code


def small_train_set(full_train: Path, dest: Path) -> dict:
    """Links to a stratified, seeded 10% of every class, three random classes cut to a tenth of that."""
    rng = random.Random(SEED)
    classes = sorted(d.name for d in full_train.iterdir() if d.is_dir())
    minority = sorted(rng.sample(classes, MINORITY_CLASSES))
    counts = {}
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in classes:
        files = sorted((full_train / name).iterdir())
        n = round(len(files) * TRAIN_SHARE)
        if name in minority:
            n = round(n * MINORITY_SHARE)
        (tmp / name).mkdir(parents=True)
        for path in rng.sample(files, n):
            (tmp / name / path.name).symlink_to(path.resolve())
        counts[name] = n
    tmp.rename(dest)  # complete or absent
    return {"classes": classes, "minority": minority, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gan-steps", type=int, default=4000, help="GAN training steps (recipes/demo.yaml: ~7 min per 3000 on 2 idle cores)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000, help="classifier steps per case and seed")
    parser.add_argument("--fresh", action="store_true", help="delete the intermediate folders and start over")
    parser.add_argument("--only-data-and-gan", action="store_true", help="stop after training the GAN")
    args = parser.parse_args()
    if not (SHARED_FM / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"needs the Fashion-MNIST idx files in {SHARED_FM}")
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    timings_file = WORK / "timings.json"  # stage timings survive a run that continues another
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def stage(name: str, done: bool, work) -> None:
        if done:
            print(f"== {name}: already done, skipped", flush=True)
            return
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - start, 1)
        timings_file.write_text(json.dumps(timings))

    full, train, run = WORK / "fashion-mnist", WORK / "train", WORK / "weights" / RUN_NAME
    synthetic, cas, augmented = WORK / "synthetic", WORK / "synthetic_all", WORK / "augmented"
    stage("import", (full / "test").is_dir(), lambda: synthgen("data", "import", "idx", SHARED_FM, full, "--names", "fashion-mnist"))
    setting_file = WORK / "setting.json"
    stage("train set", train.is_dir() and setting_file.exists(),
          lambda: setting_file.write_text(json.dumps(small_train_set(full / "train", train), indent=1)))
    setting = json.loads(setting_file.read_text())
    majority = max(setting["counts"].values())
    print(f"train: {sum(setting['counts'].values())} images, minority classes {setting['minority']} ({min(setting['counts'].values())} each), others {majority}")

    final = run / "checkpoints" / f"step-{args.gan_steps:07d}"
    stage("gan", final.exists(), lambda: synthgen(
        "train", "demo", "--set", f"data.root={train}", "--set", f"train.out_dir={run.parent}", "--set", f"name={RUN_NAME}",
        "--set", f"train.steps={args.gan_steps}", *(["--resume"] if run.exists() else []),
    ))
    if args.only_data_and_gan:
        return
    # Exit 3 = the gate held back a class: that is a finding (recorded below), not a failed benchmark.
    codes = {}
    stage("sample fill-to", False, lambda: codes.__setitem__("fill_to", synthgen(
        "sample", "--weights", run, "--fill-to", majority, "--data", train, "--out", synthetic, "--seed", SEED, ok=(0, 3))))
    stage("sample balanced (CAS)", False, lambda: codes.__setitem__("balanced", synthgen(
        "sample", "--weights", run, "--balanced", "-n", majority, "--out", cas, "--seed", SEED, ok=(0, 3))))
    stage("augment", (augmented / "manifest.csv").exists() and all(
        len(list((augmented / c).glob("*.png"))) == majority - n for c, n in setting["counts"].items() if n < majority),
        lambda: synthgen("augment", train, augmented, "--per-class", majority, "--seed", SEED))
    result_file = OUT / "utility_fashion.json"
    stage("utility", False, lambda: synthgen(
        "eval", "--utility", "--train", train, "--test", full / "test", "--synthetic", synthetic, "--augmented", augmented,
        "--cas", cas, "--seeds", args.seeds, "--steps", args.steps, "--json", result_file))

    result = json.loads(result_file.read_text())
    result["benchmark"] = {
        "setting": setting,
        "gan": {"recipe": "recipes/demo.yaml", "steps": args.gan_steps, "run": str(run.relative_to(REPO))},
        "sample_exit_codes": codes,
        "gate": {name: _gate_summary(folder) for name, folder in (("fill_to", synthetic), ("balanced", cas))},
        "timings_s": timings,
        "command": " ".join(sys.argv),
    }
    result_file.write_text(json.dumps(result, indent=1))
    print(f"written: {result_file}")


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
