"""Sampling speed against the generator's own, and what the manifest costs as a dataset grows.

1. On one 32 px recipes/acgan.yaml checkpoint (one training step: speed does
   not depend on how trained it is), side by side in interleaved rounds:
   G's forward alone (the same batches and seeds, nothing written), sampling
   to PNG without the gate, and sampling with the gate. The gate is the real
   one (domain classifier, calibration on real Fashion-MNIST of the same
   classes); it computes every figure of every batch but its verdict is
   ignored, so every variant writes the same images (an untrained G would
   be rejected and retried, which times something else). Goal: gated
   sampling >= 0.9x the forward-only rate, the gate's share <= 10%.
2. Manifest work as a share of sampling time at three sizes (-n per class x
   10 classes): the journal's work exactly as sample_dataset does it (one
   fsynced append per batch of 64, one sorted compaction at the end), timed
   alone, against the time sampling those images takes at the gated rate
   measured in 1; beside it the per-batch rewrite of the whole manifest that
   sampling did before, measured at the sizes where it finishes quickly.
   Goal: manifest work < 5% at -n 5000 x 10 classes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from bench_gate import TimedCheck  # the real gate on every batch, its time summed, every batch accepted
from benchlib import REPO, fashion_mnist_32px, interleaved, machine, median, peak_rss_mb, print_table, write_json

import torch  # noqa: E402

import synthgen.sample as sampling  # noqa: E402
from synthgen.data.loading import LabelledImages  # noqa: E402
from synthgen.manifest import write_rows  # noqa: E402
from synthgen.metrics.domain import train_domain_classifier  # noqa: E402
from synthgen.metrics.gate import Gate  # noqa: E402
from synthgen.recipe import GateConfig, load_recipe  # noqa: E402

CLASSES, PER_CLASS, BATCH, ROUNDS = 4, 192, 64, 3
REAL_PER_CLASS = 300  # real images per class the gate is calibrated on
MANIFEST_SIZES = (100, 500, 5000)  # -n per class, 10 classes
MANIFEST_CLASSES = 10
OLD_WAY_UP_TO = 500  # the per-batch rewrite is quadratic: measured up to this -n only


def trained_run(workdir: Path, data: LabelledImages) -> Path:
    import synthgen.train.cgan as cgan
    import synthgen.train.loop as loop

    cgan.load_labelled = lambda *args, **kwargs: data
    recipe = load_recipe(REPO / "recipes" / "acgan.yaml", ["data.root=unused", "data.image_size=32", "data.channels=1", "train.steps=1",
                                                         f"train.out_dir={workdir}", "name=bench", "gate.eval_during_training=false"])
    return loop.train(recipe).run_dir


def real_subset(data: LabelledImages) -> LabelledImages:
    keep = torch.cat([(data.labels == c).nonzero().flatten()[:REAL_PER_CLASS] for c in range(len(data.class_names))])
    return LabelledImages(data.images[keep], data.labels[keep], data.class_names)


def speed_rows(workdir: Path, data: LabelledImages, source: str) -> dict:
    real = real_subset(data)
    generator = sampling.TrainedGenerator(trained_run(workdir, real))
    classifier = train_domain_classifier(real.images, real.labels, real.class_names, steps=50)
    gate = Gate(classifier, real.images, real.labels, BATCH, GateConfig())
    timed_gate = TimedCheck(gate)
    plan = sampling.plan_classes(generator, generator.class_names[:CLASSES], PER_CLASS)
    total = sum(plan.values())

    def forward_only() -> float:
        start = time.perf_counter()
        for name, n in plan.items():
            for first in range(0, n, BATCH):
                generator.generate(generator.class_index(name), [sampling.image_seed(0, name, i) for i in range(first, first + BATCH)], None)
        return total / (time.perf_counter() - start)

    def to_png(check, gate_thread=sampling._GATE) -> float:
        out = workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        timed_gate.seconds, default_thread, sampling._GATE = 0.0, sampling._GATE, gate_thread
        start = time.perf_counter()
        try:
            sampling.sample_dataset(generator, plan, out, seed=0, batch_size=BATCH, check=check)
        finally:
            sampling._GATE = default_thread
        seconds = time.perf_counter() - start
        if check is timed_gate:
            gate_seconds.setdefault("inline" if gate_thread is INLINE else "thread", []).append(timed_gate.seconds / (total / BATCH))
        return total / seconds

    gate_seconds: dict[str, list[float]] = {}
    variants = {"G forward only (nothing written)": forward_only,
                "sample to PNG, --no-gate": lambda: to_png(sampling.accept_all),
                "sample to PNG, gated (default: gate beside G)": lambda: to_png(timed_gate),
                "sample to PNG, gated, gate inline (no overlap)": lambda: to_png(timed_gate, INLINE)}
    forward_only()  # warm-up

    def run(variant) -> float:
        rate = variant()
        print(f"  {next(k for k, v in variants.items() if v is variant)}: {rate:.0f} img/s", flush=True)
        return rate

    rates = interleaved(variants, run, ROUNDS)
    return {"rates": rates, "gate_seconds_per_batch": gate_seconds, "images_per_round": total, "data": source,
            "gate_real_images": len(real.labels)}


class _Inline:
    """An executor that runs the check at once on the calling thread: the gate without overlap."""

    @staticmethod
    def submit(function, *args) -> Future:
        future = Future()
        future.set_result(function(*args))
        return future


INLINE = _Inline()


def _rows_of(n: int) -> list[dict]:
    """The manifest rows of -n n over 10 classes, in the order sample_dataset journals them."""
    names = [f"class{c}" for c in range(MANIFEST_CLASSES)]
    return [{"file": sampling.image_path(name, i, "png"), "class": name, "seed": str(sampling.image_seed(0, name, i)),
             "checkpoint_sha256": "0" * 64, "truncation": "", "attempt": "0", "gate": "passed"} for name in names for i in range(n)]


def journal_seconds(folder: Path, rows: list[dict]) -> float:
    """What sample_dataset's manifest does for these rows: open, one append per batch, one compaction."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    with sampling.open_manifest(folder) as manifest:
        for first in range(0, len(rows), BATCH):
            manifest.append(rows[first:first + BATCH])
    return time.perf_counter() - start


def rewrite_seconds(folder: Path, rows: list[dict]) -> float:
    """What sampling did before the journal: the whole manifest rewritten, sorted, after every batch."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    for first in range(0, len(rows), BATCH):
        write_rows(folder, sampling.MANIFEST, rows[:first + BATCH], sampling.MANIFEST_COLUMNS, order=lambda row: (row["class"], row["file"]))
    return time.perf_counter() - start


def manifest_rows(workdir: Path, gated_rate: float) -> list[dict]:
    results = []
    for n in MANIFEST_SIZES:
        rows = _rows_of(n)
        sampling_s = len(rows) / gated_rate
        journal = journal_seconds(workdir / "manifest", rows)
        old = rewrite_seconds(workdir / "manifest", rows) if n <= OLD_WAY_UP_TO else None
        print(f"  manifest, -n {n} x {MANIFEST_CLASSES}: journal {journal:.2f} s, per-batch rewrite {old} s", flush=True)
        results.append({"n_per_class": n, "images": len(rows), "sampling_s_at_gated_rate": sampling_s, "journal_s": journal,
                        "journal_share": journal / (sampling_s + journal), "rewrite_per_batch_s": old,
                        "rewrite_per_batch_share": None if old is None else old / (sampling_s + old)})
    return results


PNG_IMAGES = 600  # real images per dataset in the PNG level comparison
FLOWERS = REPO.parent / "shared" / "datasets" / "flowers5"


def png_levels(fashion: torch.Tensor) -> list[dict]:
    """ms per image and mean bytes of PNG encoding at zlib level 6 (Pillow's default) and at synthgen's PNG_LEVEL,
    through the encoder that `sample` writes with."""
    from synthgen.imaging import PNG_LEVEL, encode, load_image

    sets = {"Fashion-MNIST 32 px grey": fashion[:PNG_IMAGES]}
    if FLOWERS.is_dir():
        files = sorted(FLOWERS.glob("*/*"))[:PNG_IMAGES]
        sets["flowers5 64 px RGB"] = torch.stack([load_image(f, 3, 64, "crop") for f in files])
    levels = {"level 6 (Pillow's default)": 6, f"level {PNG_LEVEL} (synthgen)": PNG_LEVEL}
    rows = []
    for name, images in sets.items():
        sizes = {}

        def encode_all(level: int) -> float:
            start = time.perf_counter()
            sizes[level] = sum(len(encode(image, "png", level)) for image in images) / len(images)
            return len(images) / (time.perf_counter() - start)  # images per second, for `interleaved`

        rates = interleaved(levels, encode_all, rounds=5)
        for label, level in levels.items():
            rows.append({"images": name, "level": label, "ms_per_image": 1000 / median(rates[label]), "bytes": sizes[level]})
    return rows


def main() -> None:
    data, source = fashion_mnist_32px()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        speed = speed_rows(workdir, data, source)
        rates = speed["rates"]
        forward = median(rates["G forward only (nothing written)"])
        gated = median(rates["sample to PNG, gated (default: gate beside G)"])
        ungated = median(rates["sample to PNG, --no-gate"])
        manifest = manifest_rows(workdir, gated)
    png = png_levels(data.images)

    print(f"machine: {machine()}")
    rows = [[name, f"{median(r):.0f}", " ".join(f"{x:.0f}" for x in r), f"{median(r) / forward:.2f}x"] for name, r in rates.items()]
    print_table(f"sampling, 32 px acgan.yaml, {CLASSES} classes x {PER_CLASS}, batch {BATCH} ({ROUNDS} interleaved rounds, median)",
                ["variant", "img/s", "rounds", "vs forward"], rows)
    share = 1 - gated / ungated  # the time the gate adds, as a share of gated sampling time
    per_batch = {k: f"{median(v) * 1000:.0f} ms" for k, v in speed["gate_seconds_per_batch"].items()}
    print(f"  gate share of gated sampling time: {share:.1%} (goal <= 10%); gated / forward-only: {gated / forward:.2f}x (goal >= 0.9x)")
    print(f"  the gate's own time per batch of {BATCH}: {per_batch}")
    table = [[f"-n {m['n_per_class']} x {MANIFEST_CLASSES}", f"{m['images']:,}", f"{m['sampling_s_at_gated_rate']:.1f}", f"{m['journal_s']:.2f}",
              f"{m['journal_share']:.2%}", "-" if m["rewrite_per_batch_s"] is None else f"{m['rewrite_per_batch_s']:.2f}",
              "-" if m["rewrite_per_batch_share"] is None else f"{m['rewrite_per_batch_share']:.1%}"] for m in manifest]
    print_table("manifest work as a share of sampling time (sampling time = images / the gated rate above)",
                ["size", "images", "sampling s", "journal s", "journal share", "rewrite/batch s (before)", "share (before)"], table)
    print(f"  goal: journal share < 5% at -n 5000 x 10; peak RSS {peak_rss_mb():.0f} MB")
    print_table(f"PNG encoding, {PNG_IMAGES} real images per dataset (5 interleaved rounds, median)", ["images", "zlib level", "ms/image", "bytes"],
                [[r["images"], r["level"], f"{r['ms_per_image']:.3f}", f"{r['bytes']:,.0f}"] for r in png])
    write_json("bench_sample", {"png_levels": png, "img_per_s": rates, "median_img_per_s": {k: median(v) for k, v in rates.items()},
                                "gated_vs_forward": gated / forward, "gate_share": share, "gate_seconds_per_batch": speed["gate_seconds_per_batch"],
                                "images_per_round": speed["images_per_round"], "data": speed["data"],
                                "gate_real_images": speed["gate_real_images"], "manifest": manifest, "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
