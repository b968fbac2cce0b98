"""Training speed of recipes/acgan.yaml at 32 px, batch 64: synthgen's default step against a plain fp32 eager step.

Every step trains the same model on the same data in one process, timed in
interleaved rounds (plain, fp32, bf16, matmul peaks, plain, ...) so that drift
in the machine's speed hits all alike. The plain step is the textbook one:
fp32, contiguous tensors, per-tensor Adam, spectral norm recomputed on every D
call. The default step is what `train.precision: auto` picks here, by the same
probe `synthgen train` runs (its cost and figures are printed); bf16 is timed
only on CPUs with native bf16 (elsewhere it is emulated). Also: the step's
FLOPs (torch.utils.flop_counter) as achieved FLOP/s against the best measured
fp32 and bf16 matmul (the ceiling), and the peak resident memory of a real
training run (loop, EMA, grids, checkpoints) on the full data at 32 px, in a
child process. `--compile` adds the default step under torch.compile, with
its warm-up (minutes on 2 cores, so not part of `make bench`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from benchlib import REPO, fashion_mnist_32px, interleaved, machine, matmul_flops, median, peak_rss_mb, print_table, write_json

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from synthgen import speed  # noqa: E402
from synthgen.precision import Precision, cpu_has_native_bf16, resolve_precision  # noqa: E402
from synthgen.recipe import load_recipe  # noqa: E402
from synthgen.train.cgan import ConditionalGAN  # noqa: E402

BATCH, ROUNDS, STEPS_PER_ROUND, WARMUP = 64, 3, 4, 2
RSS_STEPS = 16
COMPILE = "--compile" in sys.argv  # torch.compile's warm-up is minutes on 2 cores: asked for, not part of make bench


def acgan_recipe(extra: list[str] = ()):
    return load_recipe(REPO / "recipes" / "acgan.yaml", ["data.root=unused", "data.image_size=32", "data.channels=1", f"train.batch_size={BATCH}", "gate.eval_during_training=false", *extra])


class ContiguousFP32(Precision):
    @property
    def memory_format(self) -> torch.memory_format:
        return torch.contiguous_format


class PlainStep(ConditionalGAN):
    """The same model trained by a plain fp32 eager step (the baseline)."""

    def __init__(self, recipe, data):
        super().__init__(recipe, data, ContiguousFP32("fp32", torch.device("cpu")))
        t = recipe.train
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), foreach=False)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), foreach=False)

    def discriminator_step(self, step: int, sub: int):
        return self._discriminator_step(step, sub)  # spectral norm recomputed on every D call


class Timed:
    def __init__(self, method):
        self.method, self.step = method, 0
        self.cpu_rates: list[float] = []  # images per CPU-second (all threads), beside the wall-clock img/s returned

    def steps(self, count: int) -> float:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            self.method.train_step(self.step)
            self.step += 1
        self.cpu_rates.append(count * self.method.images_per_step / (time.process_time() - cpu))
        return count * self.method.images_per_step / (time.perf_counter() - start)


def flops_per_step(method) -> int:
    with FlopCounterMode(display=False) as counter:
        method.train_step(10_000)
    return counter.get_total_flops()


def rss_child(out_dir: str) -> None:
    """Run the real training loop on the full data at 32 px and print its peak RSS (MB)."""
    import synthgen.train.cgan as cgan
    import synthgen.train.loop as loop

    data, _ = fashion_mnist_32px()
    cgan.load_labelled = lambda *args, **kwargs: data  # the uint8 cache as the loader returns it, without the PNG folder
    recipe = acgan_recipe([f"train.steps={RSS_STEPS}", "train.log_every=8", "train.sample_every=8", "train.checkpoint_every=8", f"train.out_dir={out_dir}", "name=rss"])
    loop.train(recipe)
    print(f"{len(data)} {peak_rss_mb():.0f}")


class Peak:
    """The larger of two square sizes (small ones underfill AMX tiles, big ones spill the cache on some CPUs), per wall and CPU second."""

    def __init__(self, dtype: torch.dtype):
        self.dtype, self.cpu_rates = dtype, []

    def steps(self, count: int) -> float:  # noqa: ARG002 - the same call as Timed
        self.cpu_rates.append(max(matmul_flops(self.dtype, n, seconds=0.3, clock=time.process_time) for n in (1024, 2048)))
        return max(matmul_flops(self.dtype, n, seconds=0.3) for n in (1024, 2048))


def probe_default(recipe, data) -> speed.SpeedChoice:
    """train.precision auto as `synthgen train` decides it, measured afresh (a private cache) so its cost shows."""
    device = torch.device("cpu")
    build = lambda name: ConditionalGAN(recipe, data, resolve_precision(name, device))  # noqa: E731
    with tempfile.TemporaryDirectory() as cache:
        previous, os.environ["SYNTHGEN_CACHE"] = os.environ.get("SYNTHGEN_CACHE"), cache
        try:
            return speed.choose_precision(recipe, device, build, recipe.train.steps, resumed=None)
        finally:
            os.environ.pop("SYNTHGEN_CACHE") if previous is None else os.environ.update(SYNTHGEN_CACHE=previous)


def main() -> None:
    torch.manual_seed(0)
    speed.use_physical_cores()
    data, source = fashion_mnist_32px()
    device = torch.device("cpu")
    native = cpu_has_native_bf16()
    print(f"machine: {machine()}")
    choice = probe_default(acgan_recipe(), data)
    print(f"data: {source}; native bf16 on this CPU: {native}; {choice.line()}")

    candidates = {
        "plain fp32 eager": Timed(PlainStep(acgan_recipe(), data)),
        "fp32 + channels_last": Timed(ConditionalGAN(acgan_recipe(), data, Precision("fp32", device))),
    }
    if native:  # emulated elsewhere (tens of times slower): not a candidate, and not measured
        candidates["bf16 autocast + channels_last"] = Timed(ConditionalGAN(acgan_recipe(), data, Precision("bf16", device)))
    default_row = "bf16 autocast + channels_last" if choice.precision == "bf16" else "fp32 + channels_last"
    if COMPILE:
        compiled = ConditionalGAN(acgan_recipe(), data, Precision(choice.precision, device))
        speed.compile_networks(compiled)
        candidates[f"{default_row} + torch.compile"] = Timed(compiled)
    warmups = {}
    for name, timed in candidates.items():
        begin = time.perf_counter()
        timed.steps(WARMUP)
        warmups[name] = time.perf_counter() - begin
    peaks = {"fp32 matmul": Peak(torch.float32), "bf16 matmul": Peak(torch.bfloat16)}
    load = os.getloadavg()[0]
    rounds = interleaved({**candidates, **peaks}, lambda c: c.steps(STEPS_PER_ROUND), ROUNDS)
    rates = {name: rounds[name] for name in candidates}
    medians = {name: median(values) for name, values in rates.items()}
    cpu = {name: median(c.cpu_rates[-ROUNDS:]) for name, c in {**candidates, **peaks}.items()}
    plain, default = medians["plain fp32 eager"], medians[default_row]
    flops = flops_per_step(candidates[default_row].method)
    peak = {name: median(rounds[name]) for name in peaks}
    best_peak = max(peak.values())
    best_cpu_peak = max(cpu[name] for name in peaks)

    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.run([sys.executable, __file__, "--rss-child", tmp], capture_output=True, text=True, cwd=REPO)
        if child.returncode:
            raise SystemExit(child.stderr[-2000:])
        images, rss = child.stdout.split()[-2:]

    achieved = {name: flops * rate / BATCH for name, rate in medians.items()}
    ceiling = best_peak / achieved["plain fp32 eager"]  # the most any step of these FLOPs could gain over the plain one
    rows = []
    for name, values in rates.items():
        label = f"{name} (synthgen default)" if name == default_row else name
        warm = f"{warmups[name]:.0f} s" if name.endswith("torch.compile") else ""
        per_cpu = flops * cpu[name] / BATCH
        rows.append([label, f"{medians[name]:.1f}", " ".join(f"{r:.0f}" for r in values), f"{medians[name] / plain:.2f}x",
                     f"{achieved[name] / 1e9:.0f} ({achieved[name] / best_peak:.0%})", f"{cpu[name]:.0f}", f"{cpu[name] / cpu['plain fp32 eager']:.2f}x",
                     f"{per_cpu / 1e9:.0f} ({per_cpu / best_cpu_peak:.0%})", warm])
    print_table(
        f"training recipes/acgan.yaml, 32 px, batch {BATCH} ({ROUNDS} interleaved rounds of {STEPS_PER_ROUND} steps, median; "
        f"{machine()}; load average {load:.1f} at the start)",
        ["step", "img/s", "rounds", "vs plain", "GFLOP/s (of best matmul)", "img/CPU-s", "vs plain", "GFLOP/CPU-s (of best matmul)", "compile warm-up"],
        rows,
    )
    goal_speedup = 1.5 if native else medians["fp32 + channels_last"] / plain
    print_table(
        "the default step against its ceiling (FLOPs by torch.utils.flop_counter; matmul peaks measured in the same rounds)",
        ["quantity", "value", "goal"],
        [
            ["FLOPs per step", f"{flops / 1e9:.1f} G", ""],
            ["measured fp32 matmul (best of 1024^2, 2048^2)", f"{peak['fp32 matmul'] / 1e9:.0f} GFLOP/s, {cpu['fp32 matmul'] / 1e9:.0f} GFLOP/CPU-s", ""],
            ["measured bf16 matmul (best of 1024^2, 2048^2)", f"{peak['bf16 matmul'] / 1e9:.0f} GFLOP/s, {cpu['bf16 matmul'] / 1e9:.0f} GFLOP/CPU-s" + ("" if native else " (emulated)"), ""],
            ["default step / best matmul", f"{achieved[default_row] / best_peak:.0%} (per CPU-second: {flops * cpu[default_row] / BATCH / best_cpu_peak:.0%})", ">= 50%"],
            ["default step / plain fp32 eager", f"{default / plain:.2f}x (ceiling {ceiling:.1f}x = best matmul / plain step's FLOP/s)",
             ">= 1.50x" if native else f">= {goal_speedup:.2f}x (fp32 + channels_last)"],
            ["precision probe (train.precision: auto)", f"{choice.probe_s:.1f} s: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in choice.rates.items()), "a few seconds"],
        ],
    )
    print_table("memory", ["run", "peak RSS"], [[f"training loop, {images} images at 32 px, {RSS_STEPS} steps with grids and checkpoints", f"{rss} MB"]])
    write_json(
        "bench_train",
        {
            "data": source,
            "native_bf16": native,
            "precision_auto": choice.record(),
            "default": default_row,
            "img_per_s": rates,
            "img_per_cpu_s": {name: c.cpu_rates[-ROUNDS:] for name, c in candidates.items()},
            "load_average_at_start": load,
            "median_img_per_s": medians,
            "speedup": default / plain,
            "ceiling_speedup": ceiling,
            "flops_per_step": flops,
            "achieved_flop_per_s": achieved,
            "matmul_flop_per_s": {"fp32": rounds["fp32 matmul"], "bf16": rounds["bf16 matmul"]},
            "matmul_flop_per_cpu_s": {"fp32": cpu["fp32 matmul"], "bf16": cpu["bf16 matmul"]},
            "share_of_best_matmul": achieved[default_row] / best_peak,
            "warmup_s": warmups,
            "peak_rss_mb": float(rss),
            "rss_images": int(images),
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss-child"]:
        rss_child(sys.argv[2])
    else:
        main()
