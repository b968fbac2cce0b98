"""Training speed of recipes/acgan.yaml at 32 px, batch 64: synthgen's default step against a plain fp32 eager step.

Both steps train the same model on the same data in one process, timed in
interleaved rounds (plain, default, plain, default, ...) so that drift in the
machine's speed hits both alike. The plain step is the textbook one: fp32,
contiguous tensors, per-tensor Adam, spectral norm recomputed on every D call.
Also: the step's FLOPs (torch.utils.flop_counter) as achieved FLOP/s and as a
share of this machine's measured matmul throughput (fp32 and bf16), and the
peak resident memory of a real training run (loop, EMA, grids, checkpoints)
on the full data at 32 px, in a child process.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from benchlib import REPO, fashion_mnist_32px, interleaved, machine, matmul_flops, median, peak_rss_mb, print_table, write_json

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from synthgen.precision import Precision, cpu_has_native_bf16, resolve_precision  # noqa: E402
from synthgen.recipe import load_recipe  # noqa: E402
from synthgen.train.cgan import ConditionalGAN  # noqa: E402

BATCH, ROUNDS, STEPS_PER_ROUND, WARMUP = 64, 3, 5, 2
RSS_STEPS = 16


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

    def steps(self, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            self.method.train_step(self.step)
            self.step += 1
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


def main() -> None:
    torch.manual_seed(0)
    data, source = fashion_mnist_32px()
    device = torch.device("cpu")
    auto = resolve_precision("auto", device)
    print(f"machine: {machine()}")
    print(f"data: {source}; precision auto -> {auto.name} (native bf16 on this CPU: {cpu_has_native_bf16()})")

    candidates = {"plain fp32 eager": Timed(PlainStep(acgan_recipe(), data)), "synthgen default": Timed(ConditionalGAN(acgan_recipe(), data, auto))}
    for timed in candidates.values():
        timed.steps(WARMUP)
    rates = interleaved(candidates, lambda timed: timed.steps(STEPS_PER_ROUND), ROUNDS)
    plain, default = median(rates["plain fp32 eager"]), median(rates["synthgen default"])
    flops = flops_per_step(candidates["synthgen default"].method)
    steps_per_s = default / BATCH

    fp32_peak = matmul_flops(torch.float32, 1024)
    bf16_peak = matmul_flops(torch.bfloat16, 512, seconds=0.5)

    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.run([sys.executable, __file__, "--rss-child", tmp], capture_output=True, text=True, cwd=REPO)
        if child.returncode:
            raise SystemExit(child.stderr[-2000:])
        images, rss = child.stdout.split()[-2:]

    print_table(
        f"training recipes/acgan.yaml, 32 px, batch {BATCH} ({ROUNDS} interleaved rounds of {STEPS_PER_ROUND} steps, median)",
        ["step", "img/s", "rounds", "vs plain"],
        [
            ["plain fp32 eager", f"{plain:.1f}", " ".join(f"{r:.0f}" for r in rates["plain fp32 eager"]), "1.00x"],
            [f"synthgen default ({auto.name})", f"{default:.1f}", " ".join(f"{r:.0f}" for r in rates["synthgen default"]), f"{default / plain:.2f}x"],
        ],
    )
    achieved = flops * steps_per_s
    print_table(
        "achieved FLOP/s of the default step (torch.utils.flop_counter)",
        ["quantity", "value"],
        [
            ["FLOPs per step", f"{flops / 1e9:.1f} G"],
            ["achieved", f"{achieved / 1e9:.1f} GFLOP/s"],
            ["measured fp32 matmul 1024^2", f"{fp32_peak / 1e9:.1f} GFLOP/s ({achieved / fp32_peak:.0%} achieved)"],
            ["measured bf16 matmul 512^2", f"{bf16_peak / 1e9:.1f} GFLOP/s ({achieved / bf16_peak:.0%} achieved)"],
        ],
    )
    print_table("memory", ["run", "peak RSS"], [[f"training loop, {images} images at 32 px, {RSS_STEPS} steps with grids and checkpoints", f"{rss} MB"]])
    write_json(
        "bench_train",
        {
            "data": source,
            "precision_auto": auto.name,
            "native_bf16": cpu_has_native_bf16(),
            "img_per_s": {"plain_fp32_eager": rates["plain fp32 eager"], "default": rates["synthgen default"]},
            "median_img_per_s": {"plain_fp32_eager": plain, "default": default},
            "speedup": default / plain,
            "flops_per_step": flops,
            "achieved_flop_per_s": achieved,
            "matmul_flop_per_s": {"fp32": fp32_peak, "bf16": bf16_peak},
            "share_of_bf16_matmul": achieved / bf16_peak,
            "share_of_fp32_matmul": achieved / fp32_peak,
            "peak_rss_mb": float(rss),
            "rss_images": int(images),
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss-child"]:
        rss_child(sys.argv[2])
    else:
        main()
