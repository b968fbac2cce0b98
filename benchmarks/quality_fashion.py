"""Quality per CPU-minute: what a user gets from a fixed wall-clock budget, recipe by recipe.

    make bench-quality      (or: .venv/bin/python benchmarks/quality_fashion.py [--budget 10m] [--recipes a.yaml,b.yaml]
                             [--variant NAME:RECIPE:key=value,key=value ...] [--fresh])

For every recipe, one after another so that each has the whole machine:
1. `synthgen train RECIPE` on the Fashion-MNIST training set (60,000 images,
   ../shared/datasets, imported with `synthgen data import idx`) with only
   data.root, name, train.out_dir and train.budget set: the recipe as a
   user runs it, stopped by its budget (train.steps raised out of the way);
2. `synthgen sample --balanced -n 1000` with the default checkpoint, through
   the gate (its verdict per class), and the same seeds without the gate (the
   generator's own output, so a refused class still has figures);
3. `synthgen eval` of the ungated set against the official test images
   (10,000): domain-feature FID and KID, precision/recall, label fidelity and
   within-class MS-SSIM, each beside the real-vs-real figure (two halves of the
   test set), with one domain classifier for every row (the first recipe's),
   so the rows are comparable.
The machine, the chosen precision and the steps reached are printed on top.
Not part of `make bench` (each recipe trains for its budget). Every stage is
skipped when its output is complete; --fresh starts over. Output:
out/bench/quality_fashion.json, intermediate folders out/bench/quality_fashion/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, SHARED_FM, VARIANT_HELP, machine, print_table, recipe_variant, synthgen, write_json  # noqa: E402

WORK = OUT / "quality_fashion"
DEFAULT_RECIPES = ["recipes/small-data.yaml", "recipes/acgan.yaml"]
PER_CLASS = 1000
MAX_STEPS = 10_000_000  # the budget stops training, not the step count


def import_data() -> Path:
    data = WORK / "fm"
    if not (data / "test").is_dir():
        if not (SHARED_FM / "train-images-idx3-ubyte.gz").exists():
            sys.exit(f"needs the Fashion-MNIST idx files in {SHARED_FM}")
        synthgen("data", "import", "idx", SHARED_FM, data, "--names", "fashion-mnist")
    return data


def run_recipe(recipe: str, data: Path, budget: str, name: str | None = None, sets: list[str] = ()) -> dict:
    name = name or Path(recipe).stem
    run = WORK / "weights" / name
    started = time.perf_counter()
    if not (run / "run.json").is_file() or not (run / "checkpoints").is_dir():
        shutil.rmtree(run, ignore_errors=True)
        synthgen("train", recipe, "--set", f"name={name}", "--set", f"data.root={data / 'train'}", "--set", f"train.out_dir={run.parent}",
                 "--set", f"train.budget={budget}", "--set", f"train.steps={MAX_STEPS}", *[a for s in sets for a in ("--set", s)])
    trained = time.perf_counter() - started
    state = json.loads((run / "run.json").read_text())
    gated, ungated = WORK / "samples" / f"{name}-gated", WORK / "samples" / f"{name}"
    if not (gated / "gate_report.json").is_file():
        synthgen("sample", "--weights", run, "--balanced", "-n", PER_CLASS, "--out", gated, "--seed", 0, ok=(0, 3))
    if not (ungated / "manifest.csv").is_file():
        synthgen("sample", "--weights", run, "--balanced", "-n", PER_CLASS, "--out", ungated, "--seed", 0, "--no-gate")
    return {"recipe": recipe, "name": name, "settings": list(sets), "run": run, "ungated": ungated, "gate_report": json.loads((gated / "gate_report.json").read_text()),
            "steps": state["step"], "precision": state.get("precision"), "train_seconds": round(state.get("train_seconds", trained), 1)}


def evaluate(row: dict, classifier_run: Path) -> dict:
    out = WORK / f"eval-{row['name']}.json"
    if not out.is_file():
        synthgen("eval", "--real", WORK / "fm" / "test", "--fake", row["ungated"], "--weights", classifier_run, "--per-class", "--json", out)
    return json.loads(out.read_text())


def gate_verdicts(report: dict) -> tuple[int, list[str]]:
    """(classes passed, classes refused) from a gate_report.json."""
    classes = report["classes"]
    refused = sorted(name for name, c in classes.items() if c["status"] != "passed")
    return len(classes) - len(refused), refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="10m", help="Training wall-clock budget per recipe (train.budget).")
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="Comma-separated recipe files; the first one's domain classifier scores all.")
    parser.add_argument("--variant", action="append", default=[], type=recipe_variant, help=VARIANT_HELP)
    parser.add_argument("--fresh", action="store_true", help="Start over (delete out/bench/quality_fashion/).")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\nbudget: {args.budget} of training per recipe, one recipe at a time")
    data = import_data()
    rows = [run_recipe(recipe, data, args.budget) for recipe in args.recipes.split(",") if recipe]
    rows += [run_recipe(recipe, data, args.budget, name, sets) for name, recipe, sets in args.variant]
    results = []
    for row in rows:
        figures = evaluate(row, rows[0]["run"])
        passed, refused = gate_verdicts(row["gate_report"])
        results.append({**{k: v for k, v in row.items() if k not in ("run", "ungated", "gate_report")}, "eval": figures,
                        "gate_passed": passed, "gate_refused": refused})
    metric_names = ["fid", "kid", "precision", "recall", "density", "coverage", "label_fidelity", "ms_ssim"]
    available = [m for m in metric_names if m in results[0]["eval"]["metrics"]]
    header = ["recipe", "precision", "steps", "train s"] + available + ["gate passed", "refused"]
    table = [[r["name"], r["precision"], r["steps"], r["train_seconds"]]
             + [f"{r['eval']['metrics'][m]['generated']:.4g}" for m in available] + [r["gate_passed"], ",".join(r["gate_refused"]) or "-"]
             for r in results]
    table.append(["real vs real", "", "", ""] + [f"{results[0]['eval']['metrics'][m]['real']:.4g}" for m in available] + ["", ""])
    print_table(f"Fashion-MNIST, {args.budget} of training per recipe on this machine; {PER_CLASS} per class vs the 10,000 test images (domain features)",
                header, table)
    write_json("quality_fashion", {"budget": args.budget, "per_class": PER_CLASS, "rows": results})


if __name__ == "__main__":
    main()
