"""Training throughput of recipes/acgan.yaml: precision auto against fp32 (and bf16), side by side in one run.

Runs are interleaved (auto, fp32, auto, fp32) so that drift in the machine's
speed hits both alike; the first log interval of each run (warm-up) is dropped.
Data: Fashion-MNIST train from ../shared when present, else the embedded test split.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthgen.data.idx import import_idx, resolve_class_names  # noqa: E402
from synthgen.precision import resolve_device, resolve_precision  # noqa: E402
from synthgen.recipe import load_recipe  # noqa: E402
from synthgen.train.loop import train  # noqa: E402

STEPS, LOG_EVERY, ROUNDS = 60, 20, 2


def fashion_mnist(workdir: Path) -> Path:
    shared = REPO.parent / "shared" / "datasets" / "fashion-mnist"
    source = shared if shared.is_dir() else REPO / "demo" / "fashion-mnist"
    import_idx(source, workdir / "fm", resolve_class_names("fashion-mnist"))
    return workdir / "fm" / ("train" if (workdir / "fm" / "train").is_dir() else "test")


def steady_img_per_s(run_dir: Path) -> float:
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    rates = [line["img_per_s"] for line in lines[1:]]  # drop the warm-up interval
    return sum(rates) / len(rates)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        root = fashion_mnist(workdir)
        device = resolve_device("auto")
        print(f"device {device}; precision auto resolves to {resolve_precision('auto', device).name}; data {root}")
        results: dict[str, list[float]] = {"auto": [], "fp32": [], "bf16": []}
        for round_ in range(ROUNDS):
            for precision in results:
                recipe = load_recipe(REPO / "recipes" / "acgan.yaml", [
                    f"data.root={root}", f"train.steps={STEPS}", f"train.log_every={LOG_EVERY}",
                    f"train.precision={precision}", f"train.out_dir={workdir / 'runs'}", f"name={precision}-{round_}",
                    "train.sample_every=100000", "train.checkpoint_every=100000",
                ])
                results[precision].append(steady_img_per_s(train(recipe).run_dir))
        auto, fp32, bf16 = (sum(v) / len(v) for v in results.values())
        print(f"recipes/acgan.yaml training img/s: auto {auto:.0f}, fp32 {fp32:.0f}, bf16 {bf16:.0f}")
        print(f"ratio auto/fp32 {auto / fp32:.2f}x, bf16/fp32 {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
