"""What the benchmarks share: the data, the command line, a side-by-side timer, matmul throughput, tables and JSON."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from synthgen.data.idx import CLASS_NAMES, read_idx  # noqa: E402
from synthgen.data.loading import LabelledImages  # noqa: E402

SHARED_FM = REPO.parent / "shared" / "datasets" / "fashion-mnist"
DEMO_FM = REPO / "demo" / "fashion-mnist"
OUT = REPO / "out" / "bench"


def synthgen(*args, ok=(0,)) -> int:
    """Run the CLI of this checkout; its output goes to the terminal. Exit codes outside `ok` stop the benchmark."""
    command = [sys.executable, "-m", "synthgen", *map(str, args)]
    print("$ synthgen " + " ".join(map(str, args)), flush=True)
    # Without COLUMNS, output to a log file is not wrapped at all (cli._console): log lines stay whole.
    code = subprocess.run(command, cwd=REPO).returncode
    if code not in ok:
        sys.exit(f"synthgen {args[0]} failed with exit code {code}")
    return code


def fashion_mnist_32px() -> tuple[LabelledImages, str]:
    """Fashion-MNIST train (60,000, ../shared) or the embedded test split (10,000), padded 28 -> 32 px."""
    source, split = (SHARED_FM, "train") if (SHARED_FM / "train-images-idx3-ubyte.gz").exists() else (DEMO_FM, "t10k")
    images = torch.from_numpy(read_idx(source / f"{split}-images-idx3-ubyte.gz").copy())[:, None]
    labels = torch.from_numpy(read_idx(source / f"{split}-labels-idx1-ubyte.gz").astype("int64"))
    images = F.pad(images, (2, 2, 2, 2)).contiguous()  # black border, as LeNet-style 32 px MNIST
    return LabelledImages(images, labels, CLASS_NAMES["fashion-mnist"]), f"{source.relative_to(REPO.parent)} {split} ({len(labels)} images)"


def interleaved(candidates: dict, run, rounds: int) -> dict[str, list[float]]:
    """run(candidate) -> a rate; every round runs every candidate once, so drift hits all alike."""
    results: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, candidate in candidates.items():
            results[name].append(run(candidate))
    return results


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def matmul_flops(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0, clock=time.perf_counter) -> float:
    """Measured FLOP/s of an n x n matmul in `dtype` (the machine's dense-maths ceiling for that type).

    clock=time.process_time: FLOP per CPU-second of this process, which other jobs on a shared machine distort far less.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    count, start = 0, clock()
    while clock() - start < seconds or count < 2:
        a @ b
        count += 1
    return 2 * n**3 * count / (clock() - start)


def peak_rss_mb(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024  # Linux: KiB


def machine() -> str:
    from synthgen.speed import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def recipe_variant(text: str) -> tuple[str, str, list[str]]:
    """`--variant NAME:RECIPE:key=value,key=value`: a recipe with settings changed, as its own benchmark row."""
    name, recipe, sets = text.split(":", 2)
    return name, recipe, [s for s in sets.split(",") if s]


VARIANT_HELP = "NAME:RECIPE:key=value,...: one more row, a recipe with settings changed, e.g. a learning rate (repeatable)."


def report_stem(bench: str, sets: list[str], quick: bool) -> str:
    """`bench` for the recipe as it is; a smoke run or a trial of other settings gets its own name, after them,
    so that its files do not replace the recipe's figures (e.g. sgan_fashion-train.lr_d=0.001)."""
    return "-".join([bench, *(["quick"] if quick else []), *(re.sub(r"[^\w.=]+", "_", s) for s in sets)])


def write_json(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
    print(f"\nwrote {path.relative_to(REPO)}")
    return path
