"""Sampling speed to PNG files on disk at 32 px: synthgen's writer against a sequential one, side by side.

A 32 px recipes/acgan.yaml generator (one training step: sampling speed does
not depend on how trained it is) writes a balanced dataset with
`synthgen.sample.sample_dataset`. The baseline is the same code with the
images encoded and written one after the other on the main thread under
no_grad (what sampling did before the writer pool). Rounds are interleaved;
every round writes into a fresh folder, and the outputs are checked to be
byte-identical across writers and batch sizes (seeded per image). The
plan is a multiple of every batch size: sample_dataset generates whole
aligned batches, so a batch larger than what a class needs is wasted work.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchlib import REPO, fashion_mnist_32px, interleaved, machine, median, peak_rss_mb, print_table, write_json

import torch  # noqa: E402

import synthgen.sample as sampling  # noqa: E402
from synthgen.imaging import encode, to_uint8, write_atomic  # noqa: E402
from synthgen.recipe import load_recipe  # noqa: E402

CLASSES, PER_CLASS, ROUNDS = 5, 128, 3


def sequential_write(out, relatives, name, images, seeds, fmt, generator, truncation, attempt, verdict) -> list[dict]:
    rows = []
    for image, relative, seed in zip(images, relatives, seeds):
        write_atomic(out / relative, encode(image, fmt))
        rows.append({"file": relative, "class": name, "seed": str(seed), "checkpoint_sha256": generator.checkpoint_sha256,
                     "truncation": "" if truncation is None else str(truncation),
                     "attempt": str(attempt), "gate": "passed" if verdict.figures else verdict.reason})
    return rows


@torch.no_grad()
def no_grad_generate(self, class_index, seeds, truncation):
    z = torch.stack([sampling.latent(seed, self.recipe.model.z_dim, truncation) for seed in seeds]).to(self.device)
    y = torch.full((len(seeds),), class_index, dtype=torch.long, device=self.device)
    return to_uint8(self.generator(z, y))


def trained_run(workdir: Path) -> Path:
    import synthgen.train.cgan as cgan
    import synthgen.train.loop as loop

    data, _ = fashion_mnist_32px()
    cgan.load_labelled = lambda *args, **kwargs: data
    recipe = load_recipe(REPO / "recipes" / "acgan.yaml", ["data.root=unused", "data.image_size=32", "data.channels=1", "train.steps=1", f"train.out_dir={workdir}", "name=bench", "gate.eval_during_training=false"])
    return loop.train(recipe).run_dir


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        generator = sampling.TrainedGenerator(trained_run(workdir))
        plan = sampling.plan_classes(generator, generator.class_names[:CLASSES], PER_CLASS)
        total = sum(plan.values())
        pooled_write, pooled_generate = sampling._write_images, sampling.TrainedGenerator.generate
        variants = {
            "sequential writer, no_grad, batch 64": (sequential_write, no_grad_generate, 64),
            "synthgen default (writer pool, inference mode), batch 64": (pooled_write, pooled_generate, 64),
            "synthgen default, --batch-size 128": (pooled_write, pooled_generate, 128),
        }
        outputs: dict[str, Path] = {}

        def run(name: str) -> float:
            write, generate, batch = variants[name]
            sampling._write_images, sampling.TrainedGenerator.generate = write, generate
            out = workdir / "out" / name.split()[0] / str(batch)
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            sampling.sample_dataset(generator, plan, out, seed=0, batch_size=batch)
            rate = total / (time.perf_counter() - start)
            outputs[name] = out
            return rate

        run(next(iter(variants)))  # warm-up
        rates = interleaved({name: name for name in variants}, run, ROUNDS)
        sampling._write_images, sampling.TrainedGenerator.generate = pooled_write, pooled_generate
        reference = files_of(outputs[next(iter(variants))])
        identical = all(files_of(out) == reference for out in outputs.values())

    base = median(rates[next(iter(variants))])
    rows = [[name, f"{median(r):.0f}", " ".join(f"{x:.0f}" for x in r), f"{median(r) / base:.2f}x"] for name, r in rates.items()]
    print(f"machine: {machine()}")
    print_table(f"sampling to PNG, 32 px, {len(plan)} classes x {PER_CLASS} images ({ROUNDS} interleaved rounds, median)", ["writer", "img/s", "rounds", "vs sequential"], rows)
    print(f"\nbyte-identical files across writers and batch sizes: {identical}; peak RSS {peak_rss_mb():.0f} MB")
    write_json("bench_sample", {"img_per_s": rates, "median_img_per_s": {k: median(v) for k, v in rates.items()}, "byte_identical": identical, "images_per_round": total, "peak_rss_mb": peak_rss_mb()})
    if not identical:
        raise SystemExit("sampling outputs differ between writers or batch sizes")


if __name__ == "__main__":
    main()
