"""Gate and feature benchmarks: what the gate costs during sampling, and feature-extraction throughput.

Every figure is measured side by side in this run (these machines are noisy):
- sampling to PNG with the gate on vs off: the gate's share of sampling time
  (target: at most a third, with domain features), plus its one-time set-up
  (domain classifier training and calibration);
- feature extraction img/s: domain fp32 vs bf16, Inception fp32 vs bf16, and
  the FID drift that bf16 causes (FID between fp32 and bf16 features of the
  same images, beside the real-vs-real FID at the same N for scale).

    python benchmarks/bench_gate.py            # writes out/bench/gate.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthgen.data.idx import import_idx, resolve_class_names  # noqa: E402
from synthgen.data.loading import load_labelled  # noqa: E402
from synthgen.errors import SynthgenError  # noqa: E402
from synthgen.metrics.domain import train_domain_classifier  # noqa: E402
from synthgen.metrics.fid import fid  # noqa: E402
from synthgen.metrics.gate import Gate  # noqa: E402
from synthgen.recipe import GateConfig  # noqa: E402
from synthgen.sample import TrainedGenerator, accept_all, plan_balanced, sample_dataset  # noqa: E402
from synthgen.train.loop import train  # noqa: E402

CLASSES = ["Trouser", "Sneaker", "Bag", "T-shirt-top"]
PER_CLASS = 256
BATCH = 64


def native_bf16() -> bool:
    """bf16 autocast only pays on CPUs with bf16 instructions (AVX512-BF16 / AMX); elsewhere it is emulated and slow."""
    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def demo_data(work: Path) -> Path:
    import_idx(REPO / "demo" / "fashion-mnist", work / "fm", resolve_class_names("fashion-mnist"))
    root = work / "fm4"
    root.mkdir()
    for name in CLASSES:
        (root / name).symlink_to(work / "fm" / "test" / name)
    return root


def tiny_run(root: Path, work: Path) -> Path:
    from synthgen.recipe import validate

    recipe = validate({
        "name": "bench", "data": {"root": str(root), "image_size": 28, "channels": 1},
        "model": {"backbone": "dcgan", "g_channels": 32, "d_channels": 32, "z_dim": 64}, "conditioning": {"type": "acgan"},
        "loss": {"type": "ns"}, "gate": {"eval_during_training": False},
        "train": {"steps": 150, "batch_size": 32, "log_every": 50, "sample_every": 1000, "checkpoint_every": 1000, "out_dir": str(work / "runs")},
    })
    return train(recipe).run_dir


class TimedCheck:
    """Times the gate's verdicts and accepts every batch, so both runs write the same number of images."""

    def __init__(self, gate: Gate):
        self.gate, self.seconds = gate, 0.0

    def __call__(self, name, images):
        start = time.perf_counter()
        self.gate(name, images)
        self.seconds += time.perf_counter() - start
        return accept_all(name, images)


def sampling_rows(run: Path, root: Path, work: Path) -> dict:
    generator = TrainedGenerator(run)
    data = load_labelled(root, 28, 1, "crop")
    start = time.perf_counter()
    classifier = train_domain_classifier(data.images, data.labels, data.class_names, steps=GateConfig().domain_steps)
    domain_training = time.perf_counter() - start
    start = time.perf_counter()
    gate = Gate(classifier, data.images, data.labels, BATCH, GateConfig())
    calibration = time.perf_counter() - start
    plan = plan_balanced(generator, PER_CLASS)
    timings = {"off": [], "on": []}
    for repeat in range(2):  # interleaved
        for mode in ("off", "on"):
            check = TimedCheck(gate) if mode == "on" else accept_all
            start = time.perf_counter()
            sample_dataset(generator, plan, work / f"s-{mode}-{repeat}", batch_size=BATCH, check=check)
            timings[mode].append(time.perf_counter() - start)
            if mode == "on":
                gate_seconds = check.seconds
    images = PER_CLASS * len(CLASSES)
    off, on = min(timings["off"]), min(timings["on"])
    return {
        "sampling_img_per_s_gate_off": images / off,
        "sampling_img_per_s_gate_on": images / on,
        "gate_share_of_sampling_time": (on - off) / on,
        "gate_check_seconds_per_batch": gate_seconds / (images / BATCH),
        "domain_classifier_training_s": domain_training,
        "gate_calibration_s": calibration,
        "classifier": classifier,
        "data": data,
    }


def throughput(extract, images: torch.Tensor, repeats: int = 2) -> tuple[float, torch.Tensor]:
    best, features = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        features = extract(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best, features


def feature_rows(classifier, data) -> dict:
    rows = {}
    images = data.images[torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))[:2000]]
    rate, fp32 = throughput(lambda x: classifier.features_and_logits(x)[0], images)
    rows["domain_fp32_img_per_s"] = rate
    rows["domain_real_vs_real_fid_n1000"] = fid(fp32[0::2], fp32[1::2])  # interleaved halves: the same class mix
    if native_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rate, bf16 = throughput(lambda x: classifier.features_and_logits(x)[0], images)
        rows["domain_bf16_img_per_s"] = rate
        rows["domain_bf16_fid_drift"] = fid(fp32, bf16.float())
    else:
        rows["domain_bf16"] = "skipped: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 is many times slower"
    try:
        from synthgen.metrics.inception import InceptionFeatures

        inception = InceptionFeatures(precision="fp32")
        few = data.images[:64]
        rate, inc32 = throughput(inception, few, repeats=1)
        rows["inception_fp32_img_per_s"] = rate
        if native_bf16():
            rate, inc16 = throughput(InceptionFeatures(precision="bf16"), few, repeats=1)
            rows["inception_bf16_img_per_s"] = rate
            rows["inception_bf16_max_abs_feature_drift"] = float((inc32 - inc16).abs().max())
        else:
            rows["inception_bf16"] = "skipped: no native bf16 on this CPU (measured 0.12 img/s emulated vs ~3 fp32)"
    except SynthgenError as exc:
        rows["inception"] = f"skipped: {exc}"
    return rows


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.setdefault("SYNTHGEN_CACHE", str(work / "cache"))
        root = demo_data(work)
        run = tiny_run(root, work)
        sampling = sampling_rows(run, root, work)
        features = feature_rows(sampling.pop("classifier"), sampling.pop("data"))
    results = {**sampling, **features}
    print(f"{'gate benchmark (4 Fashion-MNIST classes, 28 px, batch 64)':<58}")
    for key, value in results.items():
        print(f"  {key:<46} {value:.4g}" if isinstance(value, float) else f"  {key:<46} {value}")
    out = REPO / "out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(results, indent=1))
    share = results["gate_share_of_sampling_time"]
    print(f"gate share of sampling time: {share:.0%} (target: at most 33%)")


if __name__ == "__main__":
    main()
