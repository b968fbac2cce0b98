"""What BiGAN's and VAE-GAN's encoders learn, on Fashion-MNIST, against a randomly initialised encoder.

    make bench-encoders       (or: .venv/bin/python benchmarks/encoders_fashion.py [--steps N] [--quick] [--fresh])

1. data: `synthgen data import idx` of ../shared/datasets/fashion-mnist; the
   60,000 training images linked into one folder, so both methods train
   unconditionally (the BiGAN paper's setting: E(x) must carry the class by itself).
2. `synthgen train recipes/bigan.yaml` and `recipes/vaegan.yaml` on it, with only
   data.root, name, train.out_dir and train.steps set; the same data, the same steps.
3. `synthgen encode` of --probe-train training images and of the 10,000 test
   images; a linear probe (softmax regression on standardised E(x), L-BFGS) is
   fitted on the first and scored on the second (the BiGAN paper's use of E).
4. reconstructions G(E(x)) of --recon test images: the share the domain
   classifier (synthgen/metrics/domain.py, trained on the labelled training set)
   puts in the source's class, and L1 / SSIM to the source.
5. sample quality: domain-feature FID and KID of --samples samples G(z) against
   as many test images, beside two halves of the test set.
Every encoder figure is shown beside the same architecture freshly initialised
(its BN statistics those of initialisation): what training the encoder bought.
--quick trains at most 300 steps of narrow networks on 6,000 images and scores on
1,000 test images (a smoke run): its figures say the pipeline works, not how good
the methods are.
Output: out/bench/encoders_fashion.json; intermediate folders out/bench/encoders_fashion/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, SHARED_FM, machine, print_table, synthgen, write_json  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from synthgen.data.loading import load_labelled  # noqa: E402
from synthgen.encode import TrainedEncoder  # noqa: E402
from synthgen.metrics.features import domain_classifier  # noqa: E402
from synthgen.metrics.fid import fid  # noqa: E402
from synthgen.metrics.kid import mmd2_unbiased  # noqa: E402
from synthgen.metrics.msssim import ssim  # noqa: E402

WORK = OUT / "encoders_fashion"
RECIPES = {"bigan": "recipes/bigan.yaml", "vaegan": "recipes/vaegan.yaml"}
QUICK = ["--set", "model.g_channels=16", "--set", "model.d_channels=16", "--set", "options.e_channels=16", "--set", "train.checkpoint_every=100000",
         "--set", "gate.eval_during_training=false", "--set", "train.sample_every=100000"]


def prepare_data(quick: bool) -> tuple[Path, Path]:
    """(the labelled import, a one-class folder of links to its training images: all, or every 10th with --quick)."""
    data = WORK / "fm"
    if not (data / "test").is_dir():
        if not (SHARED_FM / "train-images-idx3-ubyte.gz").exists():
            sys.exit(f"needs the Fashion-MNIST idx files in {SHARED_FM}")
        synthgen("data", "import", "idx", SHARED_FM, data, "--names", "fashion-mnist")
    pooled = WORK / ("pooled-quick" if quick else "pooled")
    if not pooled.is_dir():
        tmp = pooled.with_name(pooled.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = sorted((data / "train").rglob("*.png"))[:: 10 if quick else 1]
        for path in files:
            (tmp / f"{path.parent.name}_{path.name}").symlink_to(path.resolve())
        tmp.rename(pooled)
    return data, pooled


def train_run(method: str, pooled: Path, steps: int, quick: bool) -> Path:
    run = WORK / ("weights-quick" if quick else "weights") / method
    if not (run / "checkpoints").is_dir():
        shutil.rmtree(run, ignore_errors=True)
        synthgen("train", RECIPES[method], "--set", f"name={method}", "--set", f"data.root={pooled}", "--set", f"train.out_dir={run.parent}",
                 "--set", f"train.steps={steps}", *(QUICK if quick else []))
    return run


def subset(folder: Path, every: int, dest: Path) -> Path:
    """A labelled folder of links to every `every`-th image of each class (a class-stratified subset)."""
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for class_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
            (tmp / class_dir.name).mkdir(parents=True)
            for path in sorted(class_dir.iterdir())[::every]:
                (tmp / class_dir.name / path.name).symlink_to(path.resolve())
        tmp.rename(dest)
    return dest


def encoded(run: Path, folder: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(E(x) of every image of `folder` through `synthgen encode`, its true class from the class folder)."""
    out = run / f"{name}.safetensors"
    if not out.exists():
        synthgen("encode", folder, "--weights", run, "--out", out)
    with safe_open(out, "pt") as handle:
        latents, files = handle.get_tensor("latents"), json.loads(handle.metadata()["files"])
    names = sorted({f.split("/")[0] for f in files})
    return latents, torch.tensor([names.index(f.split("/")[0]) for f in files])


def linear_probe(train_x, train_y, test_x, test_y, steps: int = 200) -> float:
    """Test accuracy of softmax regression on standardised features (full-batch L-BFGS, a little weight decay)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    layer = torch.nn.Linear(a.shape[1], int(train_y.max()) + 1)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(a), train_y) + 1e-4 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((layer(b).argmax(1) == test_y).float().mean())


def random_encoder(encoder: TrainedEncoder, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return encoder.method.encoder_network(encoder.recipe, len(encoder.class_names)).eval()


@torch.inference_mode()
def latents_of(network, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    from synthgen.imaging import to_model

    return torch.cat([network(to_model(images[i : i + batch]), torch.zeros(len(images[i : i + batch]), dtype=torch.long))[0] for i in range(0, len(images), batch)])


def reconstruction_figures(encoder: TrainedEncoder, network, images, labels, classifier) -> dict:
    z = latents_of(network, images)
    recon = torch.cat([encoder.decode(z[i : i + 500], torch.zeros(len(z[i : i + 500]), dtype=torch.long)) for i in range(0, len(z), 500)])
    _, logits = classifier.features_and_logits(recon)
    return {"class_kept": float((logits.argmax(1) == labels).float().mean()),
            "l1": float((recon.float() - images.float()).abs().mean() / 255), "ssim": float(ssim(recon, images).mean())}


def sample_quality(encoder: TrainedEncoder, classifier, test, n: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, encoder.z_dim, generator=gen)
    samples = torch.cat([encoder.decode(z[i : i + 500], torch.zeros(len(z[i : i + 500]), dtype=torch.long)) for i in range(0, n, 500)])
    fake = classifier(samples)
    order = torch.randperm(len(test), generator=gen)
    half_a, half_b = classifier(test[order[:n]]), classifier(test[order[n : 2 * n]])
    return {"fid": fid(fake, half_a), "kid": mmd2_unbiased(fake, half_a), "fid_real_halves": fid(half_b, half_a), "kid_real_halves": mmd2_unbiased(half_b, half_a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000, help="training steps of each method (batch 64)")
    parser.add_argument("--quick", action="store_true", help="smoke setting: at most 300 steps (--steps), widths 16, 6,000 training and 1,000 test images")
    parser.add_argument("--probe-train", type=int, default=10000, help="training images the linear probe is fitted on")
    parser.add_argument("--recon", type=int, default=2000, help="test images reconstructed")
    parser.add_argument("--samples", type=int, default=2000, help="samples for FID/KID (at most 5,000: two halves of the test set)")
    parser.add_argument("--fresh", action="store_true", help="delete the intermediate folders and start over")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.probe_train, args.recon, args.samples = min(args.steps, 300), 2000, 500, 400
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}", flush=True)
    started = time.perf_counter()
    data, pooled = prepare_data(args.quick)
    probe_train = subset(data / "train", max(1, 60000 // args.probe_train), WORK / f"probe-train-{args.probe_train}")
    # --quick: the classifier learns from the probe's images and everything is scored on every 10th test image.
    test_dir = subset(data / "test", 10, WORK / "test-quick") if args.quick else data / "test"
    labelled_train = load_labelled(probe_train if args.quick else data / "train", 28, 1, "crop")
    test = load_labelled(test_dir, 28, 1, "crop")
    classifier = domain_classifier(labelled_train, WORK / ("domain-quick" if args.quick else "domain"), 200 if args.quick else 600)
    picks = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[: args.recon]
    results, timings = {}, {}
    for method in RECIPES:
        t0 = time.perf_counter()
        run = train_run(method, pooled, args.steps, args.quick)
        timings[f"train {method}"] = round(time.perf_counter() - t0, 1)
        encoder = TrainedEncoder(run, device="cpu")
        (train_z, train_y), (test_z, test_y) = encoded(run, probe_train, "probe-train"), encoded(run, test_dir, "test")
        untrained = random_encoder(encoder)
        results[method] = {
            "probe": linear_probe(train_z, train_y, test_z, test_y),
            "probe_random_encoder": linear_probe(latents_of(untrained, load_labelled(probe_train, 28, 1, "crop").images), train_y,
                                                 latents_of(untrained, test.images), test.labels),
            "reconstruction": reconstruction_figures(encoder, encoder.encoder, test.images[picks], test.labels[picks], classifier),
            "reconstruction_random_encoder": reconstruction_figures(encoder, untrained, test.images[picks], test.labels[picks], classifier),
            "samples": sample_quality(encoder, classifier, test.images, min(args.samples, 5000)),
            "steps": encoder.step,
        }
        timings[f"evaluate {method}"] = round(time.perf_counter() - t0 - timings[f"train {method}"], 1)
    rows = []
    for method, r in results.items():
        rec, base = r["reconstruction"], r["reconstruction_random_encoder"]
        rows.append([method, r["steps"], f"{r['probe']:.4f} / {r['probe_random_encoder']:.4f}", f"{rec['class_kept']:.4f} / {base['class_kept']:.4f}",
                     f"{rec['l1']:.4f} / {base['l1']:.4f}", f"{rec['ssim']:.4f} / {base['ssim']:.4f}",
                     f"{r['samples']['fid']:.3f} ({r['samples']['fid_real_halves']:.3f})", f"{r['samples']['kid']:.4f} ({r['samples']['kid_real_halves']:.4f})"])
    print_table(f"Fashion-MNIST, unconditional, {'QUICK smoke setting' if args.quick else 'full setting'}; trained / random encoder; samples: generated (real halves)",
                ["method", "steps", "linear probe acc", "recon class kept", "recon L1", "recon SSIM", "sample FID", "sample KID"], rows)
    classifier_accuracy = sum(classifier.real_accuracy) / len(classifier.real_accuracy)
    print(f"domain classifier held-out accuracy on real images: {classifier_accuracy:.4f}; total {time.perf_counter() - started:.0f} s")
    write_json("encoders_fashion", {"settings": vars(args), "results": results, "timings_s": timings, "domain_classifier_accuracy": classifier_accuracy})


if __name__ == "__main__":
    main()
