"""BiGAN/ALI and VAE-GAN: their losses against the definitions, reconstructions of real images beating random
samples, `encode` and `vary` (counts, provenance, continuation, --to-class, the gate's plug), `balance --mix vary`,
bit-exact resume and the one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open
from torchvision.datasets import ImageFolder

from synthgen import balance as bal
from synthgen.encode import (
    TrainedEncoder,
    encode_folder,
    encoding_methods,
    image_sources,
    vary_folder,
)
from synthgen.errors import SynthgenError
from synthgen.imaging import load_image
from synthgen.metrics.gate import Verdict
from synthgen.train.loop import train
from synthgen.train.vaegan import feature_reconstruction_loss, kl_divergence
from tests.cli import synthgen
from tests.conftest import files_of, load_imagefolder, read_manifest, tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors

TINY = dict(model={"g_channels": 16, "d_channels": 16, "z_dim": 16}, conditioning={"type": "projection"}, options={"e_channels": 16})
TRAINED_STEPS = {"bigan": 250, "vaegan": 150}
FAST_LR = {"lr_g": 5e-4, "lr_d": 5e-4}  # tiny models, few steps: a faster start than the recipes' 2e-4


def recipe_for(method: str, root: Path, out: Path, steps: int, **train_keys):
    return tiny_recipe(root, out, name=method, method=method, **TINY,
                       train={"steps": steps, "batch_size": 32, "log_every": 50, "sample_every": steps, "checkpoint_every": steps, **FAST_LR, **train_keys})


@pytest.fixture(scope="module", params=["bigan", "vaegan"])
def trained(request, four_classes, tmp_path_factory) -> Path:
    """A tiny run of each method on the four Fashion-MNIST classes: the run folder."""
    method = request.param
    return train(recipe_for(method, four_classes, tmp_path_factory.mktemp(method), TRAINED_STEPS[method])).run_dir


@pytest.fixture(scope="module")
def sources(four_classes, tmp_path_factory) -> Path:
    """Three real images each of Bag and Sneaker, in class folders (a Sneaker in a sub-folder)."""
    root = tmp_path_factory.mktemp("sources")
    for name in ["Bag", "Sneaker"]:
        for i, path in enumerate(sorted((four_classes / name).iterdir())[:3]):
            target = root / name / ("deep" if i == 2 and name == "Sneaker" else "") / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return root


# --- the losses against their definitions -----------------------------------------------------


def test_kl_divergence_matches_the_closed_form_and_torch_distributions():
    mean = torch.tensor([[0.0, 1.0], [-2.0, 0.5]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
    # KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2, per dimension.
    by_hand = [[0.0, -math.log(2) + (4 + 1) / 2 - 0.5], [-math.log(0.5) + (0.25 + 4) / 2 - 0.5, 0.125]]
    expected = sum(sum(row) for row in by_hand) / 2  # summed over the latent, averaged over the batch
    assert kl_divergence(mean, logvar).item() == pytest.approx(expected, rel=1e-6)
    normal = torch.distributions.Normal
    reference = torch.distributions.kl_divergence(normal(mean, (0.5 * logvar).exp()), normal(torch.zeros(2, 2), torch.ones(2, 2)))
    assert kl_divergence(mean, logvar).item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-6)
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0  # q = p


def test_feature_reconstruction_loss_is_the_gaussian_negative_log_likelihood_without_its_constant():
    generated = torch.tensor([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 3.0], [3.0, 3.0]]])  # Dis_l of 2 reconstructions, 2x2 features
    real = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[3.0, 3.0], [3.0, 1.0]]])
    # 1/2 ||diff||^2 per image: (4 + 1 + 4) / 2 = 4.5 and 4 / 2 = 2; mean 3.25.
    assert feature_reconstruction_loss(generated, real).item() == pytest.approx(3.25)
    nll = -torch.distributions.Normal(generated.flatten(1), 1.0).log_prob(real.flatten(1)).sum(1).mean()
    assert feature_reconstruction_loss(generated, real).item() == pytest.approx(nll.item() - 4 * 0.5 * math.log(2 * math.pi), rel=1e-6)


# --- what the trained runs do ------------------------------------------------------------------


def real_images_and_latents(trained: Path, folder: Path):
    """All 4,000 real images of the four classes (a figure of the model, not of a draw), their labels, E's latents."""
    encoder = TrainedEncoder(trained, device="cpu")
    chosen = image_sources(folder, encoder)
    images = torch.stack([load_image(s.image, 1, 28, "crop") for s in chosen])
    labels = torch.tensor([encoder.class_index(s.group) for s in chosen])
    return encoder, images, labels, encoder.encode(images, labels)


def reconstruction_against_random(trained: Path, folder: Path) -> tuple[float, float, float]:
    """Mean L1 (of 255) of G(E(x)) to x, of a random sample of x's class to x, and the share of images whose
    reconstruction is the closer of the two."""
    encoder, images, labels, latents = real_images_and_latents(trained, folder)
    reconstructions = encoder.decode(latents, labels).float()
    random = encoder.decode(torch.randn(len(labels), encoder.z_dim, generator=torch.Generator().manual_seed(1)), labels).float()
    distance = lambda a: (a - images.float()).abs().flatten(1).mean(1)  # noqa: E731 - L1 per image
    closer = (distance(reconstructions) < distance(random)).float().mean().item()
    print(f"{folder.name}: mean L1 reconstruction {distance(reconstructions).mean():.1f}, random {distance(random).mean():.1f}, closer for {closer:.0%}")
    return distance(reconstructions).mean().item(), distance(random).mean().item(), closer


@pytest.mark.parametrize("trained", ["vaegan"], indirect=True)
def test_reconstructions_are_closer_to_their_sources_than_random_samples(trained, four_classes):
    reconstruction, random, closer = reconstruction_against_random(trained, four_classes)
    assert reconstruction < 0.97 * random, (reconstruction, random)
    assert closer > 0.55


@pytest.fixture(scope="module")
def unlabelled_four(four_classes, tmp_path_factory) -> Path:
    """The four classes' images in one folder, without class folders: data for an unconditional run."""
    root = tmp_path_factory.mktemp("unlabelled")
    for folder in sorted(four_classes.iterdir()):
        for path in sorted(folder.iterdir()):
            (root / f"{folder.name}_{path.name}").symlink_to(path.resolve())
    return root


def test_unconditional_bigan_reconstructs_closer_than_random_samples(unlabelled_four, tmp_path):
    """The BiGAN paper's setting: no labels, so E(x) must carry everything about x, the class included. After 400
    tiny steps G(E(x)) is closer (L1) to x than a random sample for 77% of the 4,000 images (mean L1 48.8 against
    69.9 of 255, 2 threads; trials with 1 thread: 65% at 300 steps, 75% at 600)."""
    run = train(recipe_for("bigan", unlabelled_four, tmp_path, 400)).run_dir
    assert TrainedEncoder(run, device="cpu").class_names == [unlabelled_four.name]  # one class: nothing conditions G or E
    reconstruction, random, closer = reconstruction_against_random(run, unlabelled_four)
    assert reconstruction < 0.9 * random, (reconstruction, random)
    assert closer > 0.6


@pytest.mark.parametrize("trained", ["bigan"], indirect=True)
def test_bigan_encoder_spreads_its_latents_toward_the_prior(trained, four_classes):
    """BiGAN learns its inversion slowly: after 600 tiny steps reconstructions were still at the noise floor, and
    float rounding decided (L1 40.3 vs 44.3 for random samples, closer for 58%, with 2 threads; 48.4 vs 44.3, 41%, with
    1; z recovered from G(z) with cosine 0.01): `make bench-encoders` shows the inversion. What the game has done by
    the test's 250 steps: E's latents spread from ~0 (std 0.007 after one step) toward the prior
    N(0, I) (0.71 with 1 thread at 250 steps; 0.63 with 2 threads and 0.80 with 1 at 600)."""
    spread = real_images_and_latents(trained, four_classes)[3].std(0).mean().item()
    print(f"bigan: latent std {spread:.3f}")
    assert spread > 0.3, spread


def test_encode_writes_every_latent_with_its_source_file(trained, sources, tmp_path):
    encoder = TrainedEncoder(trained, device="cpu")
    result = encode_folder(encoder, sources, tmp_path / "latents.safetensors", batch_size=4)
    assert result.encoded == 6 and not result.unreadable
    stored = load_file(tmp_path / "latents.safetensors")
    with safe_open(tmp_path / "latents.safetensors", "pt") as handle:
        meta = handle.metadata()
    files = json.loads(meta["files"])
    assert stored["latents"].shape == (6, 16) and sorted(files) == sorted(p.relative_to(sources).as_posix() for p in sources.rglob("*.png"))
    assert [encoder.class_names[i] for i in stored["labels"]] == [f.split("/")[0] for f in files]
    one = encode_folder(encoder, sources / files[4], tmp_path / "one.safetensors", class_name=files[4].split("/")[0])
    assert one.encoded == 1 and torch.allclose(load_file(tmp_path / "one.safetensors")["latents"][0], stored["latents"][4], atol=1e-5)
    with pytest.raises(SynthgenError, match="say which with --class"):
        encode_folder(encoder, sources / files[0], tmp_path / "x.safetensors")


def test_vary_writes_the_counts_with_provenance_and_continues_like_sample(trained, sources, tmp_path):
    encoder = TrainedEncoder(trained, device="cpu")
    result = vary_folder(encoder, sources, tmp_path / "a", n=5, spread=0.3, seed=1, batch_size=4)
    assert result.written == {"Bag": 15, "Sneaker": 15} and not result.rejected
    dataset = ImageFolder(str(tmp_path / "a"))
    assert dataset.classes == ["Bag", "Sneaker"] and len(dataset) == 30
    rows = read_manifest(tmp_path / "a")
    assert len(rows) == 30 and {r["checkpoint_sha256"] for r in rows} == {encoder.checkpoint_sha256}
    for row in rows:
        assert (sources / row["source"]).is_file() and row["source"].startswith(row["class"] + "/") and row["source_class"] == row["class"]
        assert Path(row["file"]).stem == Path(row["source"]).stem + f"_var{int(row['variation']):03d}" and row["spread"] == "0.3"
    assert len({r["seed"] for r in rows}) == 30
    hf = load_imagefolder(tmp_path / "a", tmp_path / "hf", data_files="**")  # the sources' names start with "test-"
    assert sorted(zip(hf["class"], hf["source"], hf["variation"])) == sorted((r["class"], r["source"], r["variation"]) for r in rows)
    # Re-runs: nothing again; a larger n adds; a deleted file comes back; the end equals one run with n=8.
    assert vary_folder(encoder, sources, tmp_path / "a", n=5, spread=0.3, seed=1, batch_size=4).written == {"Bag": 0, "Sneaker": 0}
    assert vary_folder(encoder, sources, tmp_path / "a", n=8, spread=0.3, seed=1, batch_size=4).written == {"Bag": 9, "Sneaker": 9}
    next((tmp_path / "a" / "Bag").glob("*_var002.png")).unlink()
    again = vary_folder(encoder, sources, tmp_path / "a", n=8, spread=0.3, seed=1, batch_size=4)
    assert again.written == {"Bag": 1, "Sneaker": 0} and len(read_manifest(tmp_path / "a")) == 48
    vary_folder(encoder, sources, tmp_path / "b", n=8, spread=0.3, seed=1, batch_size=4)
    assert files_of(tmp_path / "a", "*.png") == files_of(tmp_path / "b", "*.png")
    with pytest.raises(SynthgenError, match="other settings.*spread"):
        vary_folder(encoder, sources, tmp_path / "a", n=8, spread=0.5, seed=1)
    # Spread 0 is the reconstruction itself, the same for every index.
    zero = vary_folder(encoder, sources / "Bag", tmp_path / "zero", n=2, spread=0.0, class_name="Bag")
    assert zero.written == {"Bag": 6} and len(set(files_of(tmp_path / "zero", "*.png").values())) == 3


def test_vary_to_class_decodes_the_same_latent_as_another_class(trained, sources, tmp_path):
    encoder = TrainedEncoder(trained, device="cpu")
    vary_folder(encoder, sources / "Bag", tmp_path / "o", n=2, spread=0.0, class_name="Bag", to_class="Trouser")
    rows = read_manifest(tmp_path / "o")
    assert {r["class"] for r in rows} == {"Trouser"} and {r["source_class"] for r in rows} == {"Bag"}
    assert sorted(p.parent.name for p in (tmp_path / "o").rglob("*.png")) == ["Trouser"] * 6
    vary_folder(encoder, sources / "Bag", tmp_path / "same", n=2, spread=0.0, class_name="Bag")
    assert sorted(files_of(tmp_path / "o", "*.png").values()) != sorted(files_of(tmp_path / "same", "*.png").values())  # another class, other images


def test_a_rejected_source_is_retried_then_reported_and_the_others_complete(trained, sources, tmp_path):
    encoder = TrainedEncoder(trained, device="cpu")
    calls = []

    def refuse_bags(class_name, images):
        calls.append(class_name)
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        return Verdict(class_name != "Bag", "not a bag (test)", {"fidelity": 0.0}, {"fidelity": 0.5}, [] if class_name != "Bag" else ["fidelity"])

    result = vary_folder(encoder, sources, tmp_path, n=3, spread=0.3, batch_size=4, check=refuse_bags, retries=1)
    assert len(result.rejected) == 3 and all("not a bag" in reason for reason in result.rejected.values())
    assert result.written == {"Bag": 0, "Sneaker": 9} and calls.count("Bag") == 6  # 3 sources x 2 attempts
    assert {r["gate"] for r in read_manifest(tmp_path)} == {"passed"}


def test_balance_fills_with_variations_of_real_images(trained, sources, tmp_path):
    encoder = TrainedEncoder(trained, device="cpu")
    skewed = tmp_path / "data"
    shutil.copytree(sources, skewed)
    (skewed / "Sneaker" / "deep").rename(tmp_path / "moved")  # Sneaker: 2 images, Bag: 3
    result = bal.balance_dataset(skewed, tmp_path / "o", to=7, mix=bal.parse_mix("vary=1,augment=1"), encoder=encoder, seed=2, batch_size=4)
    assert result.plan.varied == {"Bag": 2, "Sneaker": 2} and result.final == {"Bag": 7, "Sneaker": 7}  # round(2.5) = 2
    varied = [r for r in read_manifest(tmp_path / "o") if r["kind"] == "varied"]
    assert len(varied) == 4 and all(r["file"].startswith(f"{r['class']}/varied/") and (skewed / r["source"]).is_file() for r in varied)
    assert {r["source"] for r in varied if r["class"] == "Sneaker"} == {p.relative_to(skewed).as_posix() for p in (skewed / "Sneaker").glob("*.png")}
    with pytest.raises(SynthgenError, match="--mix vary needs --weights.*bigan"):
        bal.balance_dataset(skewed, tmp_path / "p", to=7, mix=bal.parse_mix("vary=1"))


# --- training ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,train_keys,options", [
    ("bigan", {"diffaugment": ["translation"]}, {"stochastic_encoder": True}),  # ALI: the encoder's noise is state too
    ("vaegan", {}, {}),
])
def test_resume_equals_an_uninterrupted_run(four_classes, tmp_path, method, train_keys, options):
    keys = dict(model={"g_channels": 8, "d_channels": 8, "z_dim": 8}, conditioning={"type": "acgan"}, options={"e_channels": 8, **options})
    make = lambda out, steps: tiny_recipe(four_classes, out, name=method, method=method, **keys, train={"steps": steps, **train_keys})  # noqa: E731
    whole = train(make(tmp_path / "a", 8))
    train(make(tmp_path / "b", 5))
    resumed = train(make(tmp_path / "b", 8), resume=True)
    tensors = final_tensors(whole.run_dir)
    assert any(k.startswith("E/") for k in tensors)
    assert_same_tensors(tensors, final_tensors(resumed.run_dir))


@pytest.mark.parametrize("method,sections,message", [
    ("bigan", {"loss": {"type": "ns", "r1_gamma": 1.0}}, "loss.r1_gamma: method bigan does not combine"),
    ("bigan", {"model": {"pack": 2}}, "model.pack"),
    ("vaegan", {"train": {"diffaugment": ["cutout"]}}, "train.diffaugment: method vaegan"),
    ("vaegan", {"loss": {"type": "rpgan"}}, "rpgan: method vaegan"),
])
def test_combinations_the_encoder_families_do_not_take_are_one_line_errors(four_classes, tmp_path, method, sections, message):
    """Refused when the recipe is read (check_recipe), before any data is loaded."""
    with pytest.raises(SynthgenError, match=message):
        tiny_recipe(four_classes, tmp_path, method=method, **sections)


def test_cli_vary_encode_and_a_run_without_an_encoder(trained, four_classes, sources, tmp_path):
    plain = train(tiny_recipe(four_classes, tmp_path / "cgan", train={"steps": 1})).run_dir
    run = synthgen
    ok = run("vary", sources / "Bag", "--weights", trained, "--class", "Bag", "-n", "2", "--out", tmp_path / "v", "--set", "gate.domain_steps=40")
    assert ok.returncode in (0, 3), ok.stderr
    report = json.loads((tmp_path / "v" / "gate_report.json").read_text())
    assert (ok.returncode == 3) == bool(report["rejected_sources"]) and report["classes"]["Bag"]["status"] == "checked"
    assert len(list((tmp_path / "v" / "Bag").rglob("*.png"))) == 2 * (3 - len(report["rejected_sources"]))
    assert run("encode", sources, "--weights", trained, "--out", tmp_path / "z.safetensors").returncode == 0
    for command in (["vary", sources, "-n", "2", "--out", tmp_path / "w"], ["encode", sources, "--out", tmp_path / "y.safetensors"]):
        bad = run(command[0], *command[1:], "--weights", plain)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert "has no encoder" in bad.stderr and ", ".join(encoding_methods()) in bad.stderr
