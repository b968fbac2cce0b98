"""Inception (FID pool3) feature throughput against the machine's fp32 matmul ceiling, and bf16's FID drift.

Rows, interleaved in rounds (the machine is shared, so read the shares of the
ceiling measured in the same round rather than img/s):
- the plain TorchScript file as loaded (what synthgen ran before: channels_last input);
- synthgen's network in fp32 (metrics/inception.py fast_network: batch norm folded,
  no .contiguous() copies, oneDNN inference graph);
- the same in bf16, only where the CPU has native bf16 (AMX / AVX512-BF16) or on CUDA.
Each row's FLOP/s is its img/s times the network's FLOPs per image (counted by
torch.utils.flop_counter: 2 per multiply-add) as a share of a 1024^2 fp32 matmul
measured in the same round; the goal is 70% of that ceiling in fp32.

The bf16 drift: FID between two disjoint seeded sets of Fashion-MNIST images
(train vs test split, --drift-n each; without ../shared two halves of the embedded test split: 500 by default so that `make bench` stays short;
the README's figure is --drift-n 2000), once with fp32 features and once with bf16 features of the
same images; goal: |FID_bf16 - FID_fp32| / FID_fp32 below 0.5%.

    python benchmarks/bench_inception.py [--drift-n N] [--rounds R]   # writes out/bench/inception.json
"""

from __future__ import annotations

import argparse
import time

import torch
from benchlib import DEMO_FM, SHARED_FM, interleaved, machine, matmul_flops, median, print_table, write_json
from torch.utils.flop_counter import FlopCounterMode

from synthgen.data.idx import read_idx
from synthgen.errors import SynthgenError
from synthgen.metrics.fid import fid
from synthgen.metrics.inception import INCEPTION_SIZE, InceptionFeatures
from synthgen.precision import cpu_has_native_bf16

BATCH, TIMED = 32, 64  # images per batch; images per timed call (two batches)


def flops_per_image(extractor: InceptionFeatures) -> float:
    x = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        extractor.model(x)  # the plain file: the folded graph's prepacked oneDNN ops are not counted
    return counter.get_total_flops()


def fashion(split: str) -> torch.Tensor:
    source = SHARED_FM if (SHARED_FM / f"{split}-images-idx3-ubyte.gz").exists() else DEMO_FM
    return torch.from_numpy(read_idx(source / f"{split}-images-idx3-ubyte.gz").copy())[:, None]


def disjoint_sets(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n train images and n test images (seeded), or two disjoint halves of the embedded test split."""
    pick = lambda images, seed: images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))]  # noqa: E731
    if (SHARED_FM / "train-images-idx3-ubyte.gz").exists():
        return pick(fashion("train"), 2)[:n], pick(fashion("t10k"), 3)[:n]
    shuffled = pick(fashion("t10k"), 2)
    return shuffled[:n], shuffled[n : 2 * n]


def timed(extract, images: torch.Tensor) -> float:
    start = time.perf_counter()
    extract(images)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drift-n", type=int, default=500, help="images per set for the bf16 FID drift")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        fp32 = InceptionFeatures(precision="fp32", batch_size=BATCH)
    except SynthgenError as exc:
        print(f"skipped: {exc}")
        return
    bf16_native = torch.cuda.is_available() or cpu_has_native_bf16()
    plain = InceptionFeatures(precision="fp32", batch_size=BATCH)
    plain.network = None  # the file as it is: what synthgen ran before fast_network
    candidates = {"plain TorchScript fp32": plain, "synthgen fp32": fp32}
    if bf16_native:
        candidates["synthgen bf16"] = InceptionFeatures(precision="bf16", batch_size=BATCH)
    images = fashion("t10k")[:TIMED]
    for extractor in candidates.values():
        extractor(images[:8]), extractor(images[:8]), extractor(images)  # TorchScript profiles the first calls
    gflop = flops_per_image(fp32) / 1e9
    candidates["fp32 matmul 1024^2 (GFLOP/s)"] = None
    rounds = interleaved(candidates, lambda e: matmul_flops(torch.float32, seconds=0.5) / 1e9 if e is None else timed(e, images), args.rounds)
    peaks = rounds.pop("fp32 matmul 1024^2 (GFLOP/s)")
    ceiling = median(peaks) / gflop
    rows, shares = [], {}
    for name, rates in rounds.items():
        share = [rate * gflop / peak for rate, peak in zip(rates, peaks)]  # per round: against that round's ceiling
        shares[name] = median(share)
        rows.append([name, f"{median(rates):.2f}", " ".join(f"{r:.1f}" for r in rates), f"{median(rates) * gflop:.0f}", f"{shares[name]:.0%}"])
    rows.append(["fp32 ceiling (matmul peak / FLOPs per image)", f"{ceiling:.2f}", " ".join(f"{p:.0f}" for p in peaks) + " GFLOP/s", f"{median(peaks):.0f}", "100%"])
    print_table(f"Inception features, batch {BATCH}, {gflop:.2f} GFLOP/image; {machine()}",
                ["network", "img/s", "rounds", "GFLOP/s", "of fp32 ceiling"], rows)
    goal = shares["synthgen fp32"] >= 0.7
    print(f"goal: fp32 at >= 70% of the fp32 matmul ceiling: {'reached' if goal else 'not reached'} ({shares['synthgen fp32']:.0%}; plain file {shares['plain TorchScript fp32']:.0%})")
    drift = {"skipped": "no native bf16 on this CPU (AMX / AVX512-BF16): bf16 is emulated there and many times slower"}
    if bf16_native:
        n = args.drift_n
        real, other = disjoint_sets(n)
        start = time.perf_counter()
        fid32 = fid(fp32(real), fp32(other))
        fid16 = fid(candidates["synthgen bf16"](real).float(), candidates["synthgen bf16"](other).float())
        relative = abs(fid16 - fid32) / fid32
        drift = {"n_per_set": n, "fid_fp32": fid32, "fid_bf16": fid16, "relative_drift": relative, "seconds": time.perf_counter() - start}
        print(f"bf16 FID drift, {n} Fashion-MNIST train vs {n} test images: FID fp32 {fid32:.4f}, bf16 {fid16:.4f}, "
              f"drift {relative:.3%} (goal < 0.5%: {'met' if relative < 0.005 else 'not met'})")
    write_json("inception", {"batch_size": BATCH, "gflop_per_image": gflop, "fp32_matmul_gflops_rounds": peaks, "ceiling_img_per_s": ceiling,
                             "img_per_s_rounds": rounds, "share_of_fp32_ceiling": shares, "goal_fp32_70pct_reached": goal, "bf16_drift": drift})


if __name__ == "__main__":
    main()
