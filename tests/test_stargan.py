"""StarGAN: one translator into every class of the four-class demo data, `translate --to-class`, balance's translated part.

One short training (module fixture) is shared: its translations must be
classified as the target class far above chance by an independently trained
domain classifier, and its cycle reconstructions must be closer to their own
input than to another image. Resume must be bit-exact; bad input one-line errors.
"""

from __future__ import annotations

import re

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from synthgen.balance import balance_dataset
from synthgen.checkpoint import latest_checkpoint
from synthgen.cli import app
from synthgen.data.loading import load_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import to_model, to_uint8
from synthgen.metrics.domain import train_domain_classifier
from synthgen.models.stargan import StarDiscriminator, StarGenerator, domain_planes
from synthgen.precision import resolve_precision
from synthgen.train.loop import train
from synthgen.train.stargan import StarGAN
from synthgen.train.translation import running_stats_kept
from synthgen.translate import ClassTranslator, open_translator
from tests.conftest import FOUR_CLASSES, load_imagefolder, tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors

STEPS = 150  # enough for the translations to take the target's class on these four classes (asserted below)
DOMAIN_STEPS = 120  # as test_gate.py: the four classes' held-out accuracy is high after this many


def star_recipe(root: Path, out: Path, name: str = "star", steps: int = STEPS, options: dict | None = None, **train_keys):
    return tiny_recipe(
        root, out, name, method="stargan",
        model={"translator": "resnet", "g_channels": 16, "d_channels": 16, "n_blocks": 1, "d_layers": 3, "norm": "batch"},
        loss={"type": "wgan-gp"},
        train={"steps": steps, "batch_size": 16, "n_dis": 1, "lr_g": 0.001, "lr_d": 0.001, "precision": "fp32",
               "log_every": 50, "sample_every": steps, "checkpoint_every": steps, **train_keys},
        # the terms the schema's defaults add (identity and its warm-up, cycle noise and blur) are off unless a test turns them on
        options={"lambda_cls": 3.0, "lambda_rec": 5.0, "lambda_id": 0.0, "identity_warmup": 0, "cycle_noise": 0.0, "cycle_blur": 0.0, **(options or {})},
    )


@pytest.fixture(scope="module")
def star_run(four_classes, tmp_path_factory) -> Path:
    return train(star_recipe(four_classes, tmp_path_factory.mktemp("star"))).run_dir


@pytest.fixture(scope="module")
def data(four_classes):
    return load_labelled(four_classes, 28, 1, "crop")


def _translated(run: Path, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """uint8 images x translated into per-image target classes, with the run's G as `translate` loads it."""
    translator = open_translator(run, to_class="all", device="cpu")
    with torch.no_grad():
        return to_uint8(translator.generator(to_model(x), targets))


def test_domain_planes_and_heads_are_the_papers():
    x = torch.randn(3, 1, 8, 8)
    joined = domain_planes(x, torch.tensor([0, 2, 1]), 3)
    assert torch.equal(joined[:, :1], x)
    assert torch.equal(joined[:, 1:, 4, 4], torch.eye(3)[[0, 2, 1]])  # one plane per domain, 1 on the target's
    src, cls = StarDiscriminator(1, 3, 8, 2, 64)(torch.randn(2, 1, 28, 28))
    assert src.shape == (2, 1, 7, 7) and cls.shape == (2, 3)


def test_the_whole_map_domain_head_reads_where_features_are_and_the_pooled_one_does_not():
    """options.domain_head: the pooled head reads which local features are present, the paper's whole-map kernel
    also where they are; both give [B, K] logits at the training size and at any other (translate's reader)."""
    for size in (28, 30, 64):
        D = StarDiscriminator(1, 3, 8, 3, 64, whole_map=size)
        assert D.trunk(torch.randn(1, 1, size, size)).shape[-1] == D.map_size  # the kernel covers the whole last map
    for whole_map, reads_layout in ((None, False), (28, True)):
        torch.manual_seed(0)
        D = StarDiscriminator(1, 3, 8, 3, 64, whole_map=whole_map)
        assert D(torch.randn(2, 1, 28, 28))[1].shape == (2, 3) and D(torch.randn(2, 1, 44, 36))[1].shape == (2, 3)
        D.trunk = torch.nn.Identity()  # feed the last feature map itself
        features = torch.randn(2, 32, 3, 3)
        moved = features.flatten(2)[:, :, torch.randperm(9)].view_as(features)  # the same features, elsewhere
        assert torch.allclose(D(features)[1], D(moved)[1], atol=1e-5) is not reads_layout


def test_instance_norm_would_hide_the_target_and_batch_norm_does_not():
    """Why stargan refuses model.norm instance: the target planes' contribution is a constant it subtracts."""
    x, one, two = torch.randn(2, 1, 28, 28), torch.tensor([0, 0]), torch.tensor([2, 2])
    for norm, blind in (("instance", True), ("batch", False)):
        torch.manual_seed(0)
        G = StarGenerator(1, 3, 8, 1, norm, 64).eval()
        with torch.no_grad():
            same = torch.allclose(G(x, one), G(x, two), atol=1e-5)
        assert same == blind, norm


def test_the_attention_mask_passes_the_input_where_it_keeps():
    """options.attention: G's image is A * x + (1 - A) * colours; A = 1 returns x, A = 0 the colours alone."""
    x, target = torch.rand(2, 1, 8, 8) * 2 - 1, torch.tensor([0, 2])
    G = StarGenerator(1, 3, 8, 1, "batch", 64, attention=True).eval()
    last = G.translator.net[-2]  # the 7x7 output convolution, before tanh
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([20.0, 0.5]))  # keep-mask channel saturated at 1
        image, keep = G.edit(x, target)
        assert torch.allclose(keep, torch.ones_like(keep)) and torch.allclose(image, x, atol=1e-6)
        last.bias.copy_(torch.tensor([-20.0, 0.5]))  # keep 0: the colour channel, tanh(0.5), everywhere
        assert torch.allclose(G(x, target), torch.full_like(x, float(torch.tanh(torch.tensor(0.5)))), atol=1e-6)
    assert G.translator.net[-2].out_channels == 2 and StarGenerator(1, 3, 8, 1, "batch", 64).edit(x, target)[1] is None


def test_translations_take_the_target_class_and_cycle_back(star_run, data):
    classifier = train_domain_classifier(data.images, data.labels, data.class_names, steps=DOMAIN_STEPS)
    gen = torch.Generator().manual_seed(1)
    pick = torch.randperm(len(data.images), generator=gen)[:200]
    x, source = data.images[pick], data.labels[pick]
    target = (source + torch.randint(1, 4, (200,), generator=gen)) % 4  # always another class
    fake = _translated(star_run, x, target)
    _, logits = classifier.features_and_logits(fake)
    rate = float((logits.argmax(1) == target).float().mean())
    assert rate > 0.5, f"target-class rate {rate:.2f} (chance 0.25)"
    back = _translated(star_run, fake, source)
    distance = lambda a, b: (a.float() - b.float()).abs().mean(dim=(1, 2, 3))  # noqa: E731
    own, other = distance(back, x), distance(back, x.roll(1, 0))
    closer = float((own < other).float().mean())
    assert closer > 0.75 and own.mean() < 0.75 * other.mean(), (closer, float(own.mean()), float(other.mean()))
    # Into its own class an image changes less than into another one (mean over the 200).
    assert distance(_translated(star_run, x, source), x).mean() < distance(fake, x).mean()


def test_to_class_keeps_names_sizes_and_modes(star_run, four_classes, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sneaker = sorted((four_classes / "Bag").iterdir())[0]
    Image.open(sneaker).save(src / "a.png")
    Image.open(sneaker).resize((36, 44)).convert("RGB").save(src / "sub" / "b.jpg", quality=95)
    runner = CliRunner()
    one = runner.invoke(app, ["translate", str(src), str(tmp_path / "one"), "--weights", str(star_run), "--to-class", "Sneaker", "--precision", "fp32"])
    assert one.exit_code == 0, one.output
    a, b = Image.open(tmp_path / "one" / "a.png"), Image.open(tmp_path / "one" / "sub" / "b.jpg")
    assert (a.size, a.mode, b.size, b.mode, b.format) == ((28, 28), "L", (36, 44), "RGB", "JPEG")
    every = runner.invoke(app, ["translate", str(src), str(tmp_path / "all"), "--weights", str(star_run), "--to-class", "all", "--precision", "fp32"])
    assert every.exit_code == 0, every.output
    written = sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.*"))
    assert written == sorted([f"{c}/{f}" for c in FOUR_CLASSES for f in ("a.png", "sub/b.jpg")] + ["manifest.csv", "metadata.jsonl"])
    # One index at the top: each output's class is its target (as a Hugging Face imagefolder, too).
    hf = load_imagefolder(tmp_path / "all", tmp_path / "hf")
    assert sorted(zip(hf["class"], hf["source"])) == sorted((c, f) for c in FOUR_CLASSES for f in ("a.png", "sub/b.jpg"))
    assert Image.open(tmp_path / "all" / "Bag" / "sub" / "b.jpg").size == (36, 44)
    # Each class gets its own translation of the same input.
    outputs = {c: Image.open(tmp_path / "all" / c / "a.png").tobytes() for c in FOUR_CLASSES}
    assert len(set(outputs.values())) == len(FOUR_CLASSES)


def test_wrong_translate_calls_are_one_line_errors(star_run, four_classes, tmp_path):
    cases = [
        (lambda: open_translator(star_run), "add --to-class NAME (one of"),
        (lambda: open_translator(star_run, to_class="Sandal"), "its classes: Bag, Sneaker, T-shirt-top, Trouser"),
    ]
    cgan = train(tiny_recipe(four_classes, tmp_path, train={"steps": 1, "checkpoint_every": 1, "sample_every": 1})).run_dir
    cases.append((lambda: open_translator(cgan, to_class="Bag"), "--to-class needs a stargan run"))
    for call, expected in cases:
        with pytest.raises(SynthgenError, match=re.escape(expected)) as caught:
            call()
        assert "\n" not in str(caught.value)
    refused = CliRunner().invoke(app, ["translate", str(four_classes), str(tmp_path / "o"), "--weights", str(star_run), "--to-class", "Bag", "--gate", str(tmp_path)])
    assert isinstance(refused.exception, SynthgenError) and "one subfolder per target class" in str(refused.exception)
    with pytest.raises(SynthgenError, match="model.translator: stargan"):
        tiny_recipe(four_classes, tmp_path, method="stargan", loss={"type": "wgan-gp"}, model={"norm": "batch"}, data={"image_size": 32})  # the unet default
    with pytest.raises(SynthgenError, match="model.norm: instance norm removes"):
        tiny_recipe(four_classes, tmp_path, method="stargan", loss={"type": "wgan-gp"}, model={"translator": "resnet"})
    with pytest.raises(SynthgenError, match="options.lambda_mask: 0.1 weighs the keep-mask of options.attention, which is off"):
        star_recipe(four_classes, tmp_path, options={"lambda_mask": 0.1})
    with pytest.raises(SynthgenError, match="loss.type: stargan uses wgan-gp"):
        tiny_recipe(four_classes, tmp_path, method="stargan", model={"translator": "resnet", "norm": "batch"}, loss={"type": "rpgan"})


def test_the_identity_term_and_the_attention_mask_keep_more_of_the_input(four_classes, data, tmp_path):
    """options.lambda_id: |x - G(x, c_x)|_1 is trained down; options.attention: G passes the input where its mask
    keeps it. Each keeps more of x than the same short run without it, into x's own class and into another one."""
    x, own = data.images[::40][:64], data.labels[::40][:64]
    other = (own + 1) % 4
    changed = {}
    for name, options in {"plain": {}, "identity": {"lambda_id": 10.0}, "attention": {"attention": True}}.items():
        run = train(star_recipe(four_classes, tmp_path / name, steps=60, options=options)).run_dir
        changed[name] = [float((_translated(run, x, target).float() - x.float()).abs().mean()) for target in (own, other)]
    assert changed["identity"][0] < 0.9 * changed["plain"][0], changed  # measured 27.7 against 35.9 (grey levels)
    assert all(a < 0.9 * p for a, p in zip(changed["attention"], changed["plain"])), changed


# ADA with a fast-moving p (a WGAN critic's r_t is the sign of D(real) - D(fake), which a fresh critic soon makes positive).
ADA = {"diffaugment": ["translation", "cutout"], "ada_target": 0.1, "ada_kimg": 0.05, "ada_interval": 1}


@pytest.mark.parametrize("augment", [{}, ADA], ids=["plain", "ada"])
def test_resume_is_bit_exact(four_classes, tmp_path, augment):
    """A resumed run equals an uninterrupted one, ADA's p (training state in the checkpoint) included."""
    short = {"checkpoint_every": 2, "sample_every": 2, "log_every": 1, "batch_size": 8, **augment}
    whole = train(star_recipe(four_classes, tmp_path / "a", steps=4, **short))
    train(star_recipe(four_classes, tmp_path / "b", steps=2, **short))
    if augment:
        assert 0 < latest_checkpoint(tmp_path / "b" / "star").state["method_state"]["augment"]["p"] <= 1  # p moved
    resumed = train(star_recipe(four_classes, tmp_path / "b", steps=4, **short), resume=True)
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))
    a, b = (latest_checkpoint(r.run_dir).state.get("method_state") for r in (whole, resumed))
    assert a == b


@pytest.mark.parametrize("policies", [[], ["cutout"]])
def test_diffaugment_reaches_d_in_the_d_and_the_g_step(four_classes, data, tmp_path, policies):
    """With train.diffaugment D sees every image through it: the real and translated batches of a D step and the
    translations of a G step. Cutout writes exact zeros (mid-grey), which no real or tanh pixel is."""
    method = StarGAN(star_recipe(four_classes, tmp_path, diffaugment=policies), data, resolve_precision("fp32", torch.device("cpu")))
    seen = []
    method.D.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    method.discriminator_step(0, 0)
    method.generator_step(0)
    real, fake, _mixed, translated = seen  # the gradient penalty's blend of the two is the third
    for batch in (real, fake, translated):
        zeros = (batch == 0).flatten(1).sum(1)
        assert bool((zeros >= 64).all()) if policies else int(zeros.sum()) == 0  # a 15 x 15 square cut at an edge keeps 8 x 8


def test_balance_fills_a_rare_class_with_translations(star_run, four_classes, tmp_path):
    data = tmp_path / "data"
    for name in ("Bag", "Sneaker", "Trouser"):
        (data / name).mkdir(parents=True)
        for path in sorted((four_classes / name).iterdir())[: 3 if name == "Sneaker" else 12]:
            (data / name / path.name).symlink_to(path)
    translator = open_translator(star_run, to_class="all", device="cpu")
    assert isinstance(translator, ClassTranslator)
    result = balance_dataset(data, tmp_path / "out", mix={"translate": 1.0, "augment": 0.0}, translator=translator)
    assert result.final == {"Bag": 12, "Sneaker": 12, "Trouser": 12} and result.plan.translated["Sneaker"] == 9
    with open(tmp_path / "out" / "manifest.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "translated"]
    assert len(rows) == 9 and {row["source_class"] for row in rows} == {"Bag", "Trouser"}  # both other classes in turns
    for row in rows:
        assert row["class"] == "Sneaker" and row["file"].startswith(f"Sneaker/translated/{row['source_class']}/")
        assert row["source"].startswith(row["source_class"] + "/") and (data / row["source"]).exists()
        assert Image.open(tmp_path / "out" / row["file"]).size == (28, 28)
    with pytest.raises(SynthgenError, match="--mix translate needs --weights"):
        balance_dataset(data, tmp_path / "out2", mix={"translate": 1.0})


def test_cycle_noise_is_added_to_what_the_cycle_translates_back(four_classes, data, tmp_path):
    """options.cycle_noise: G's translation gets Gaussian noise of that std before the cycle translates it back; off,
    it goes back untouched. (What the noise buys, a better rate-structure trade-off, is a benchmark figure: README.)"""
    translated = torch.zeros(64, 1, 28, 28)
    for noise in (0.0, 0.3):
        method = StarGAN(star_recipe(four_classes, tmp_path, options={"cycle_noise": noise}), data, resolve_precision("fp32", torch.device("cpu")))
        cycled = method._cycle_input(translated)
        assert float(cycled.std()) == pytest.approx(noise, abs=0.01) and float(cycled.mean()) == pytest.approx(0.0, abs=0.01)


def test_cycle_blur_wipes_out_fine_texture_and_keeps_coarse_structure(four_classes, data, tmp_path):
    """options.cycle_blur: a pixel checkerboard (the finest pattern a code could hide in) is gone from what the cycle
    translates back, while a half-black, half-white image keeps its halves; off, both go back untouched."""
    rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    checker = ((rows + cols) % 2 * 2 - 1).float().expand(4, 1, 28, 28)
    halves = torch.where(cols < 14, -1.0, 1.0).float().expand(4, 1, 28, 28)
    blurred = StarGAN(star_recipe(four_classes, tmp_path, options={"cycle_blur": 1.0}), data, resolve_precision("fp32", torch.device("cpu")))
    assert float(blurred._cycle_input(checker).std()) < 0.05  # from 1.0
    kept = blurred._cycle_input(halves)
    assert float(kept[..., :10].mean()) < -0.95 and float(kept[..., 18:].mean()) > 0.95
    plain = StarGAN(star_recipe(four_classes, tmp_path), data, resolve_precision("fp32", torch.device("cpu")))
    assert torch.equal(plain._cycle_input(checker), checker) and torch.equal(plain._cycle_input(halves), halves)


def test_running_stats_kept_normalises_by_the_batch_and_leaves_the_running_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).train()
    x = torch.randn(8, 1, 6, 6) * 3 + 2
    before = net[1].running_mean.clone()
    with torch.no_grad(), running_stats_kept(net):
        kept = net(x)
    assert torch.equal(net[1].running_mean, before) and net[1].momentum == 0.1
    with torch.no_grad():
        assert torch.allclose(kept, net(x), atol=1e-6)  # the batch's statistics inside the block as outside
    assert not torch.equal(net[1].running_mean, before)  # outside, the running statistics move


def test_only_the_translation_pass_moves_gs_running_statistics(four_classes, data, tmp_path):
    """The cycle and identity passes (G's own images; each image into its own class) leave the statistics that
    `translate` normalises by: after a G step they are what the translation pass alone makes of them."""
    method = StarGAN(star_recipe(four_classes, tmp_path, options={"lambda_id": 0.5, "cycle_noise": 0.3}), data, resolve_precision("fp32", torch.device("cpu")))
    first_norm = next(m for m in method.G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs = []
    first_norm.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().mean((0, 2, 3))))
    before = first_norm.running_mean.clone()
    method.generator_step(0)
    assert len(inputs) == 3  # translation, cycle, identity
    assert torch.allclose(first_norm.running_mean, 0.9 * before + 0.1 * inputs[0], atol=1e-6)


def test_translate_uses_the_averaged_g_with_statistics_of_its_own(star_run, data):
    """With train.ema (the schema's default) the checkpoint holds G_ema beside G, and translate loads G_ema: the
    averaged weights, with batch-norm statistics recalibrated on its own translations, not copied from the live G."""
    checkpoint = latest_checkpoint(star_run)
    assert checkpoint.generator_name == "G_ema"
    live, averaged = checkpoint.weights("G"), checkpoint.weights("G_ema")
    translator = open_translator(star_run, to_class="all", device="cpu")
    loaded = translator.generator.state_dict()
    assert all(torch.equal(loaded[name], averaged[name]) for name in averaged)
    weights = [name for name in averaged if name.endswith("weight")]
    assert any(not torch.equal(live[name], averaged[name]) for name in weights)  # an average, not a copy
    means = [name for name in averaged if name.endswith("running_mean")]
    assert any(not torch.allclose(live[name], averaged[name]) for name in means)  # its own statistics
    x = data.images[:32]
    assert _translated(star_run, x, torch.zeros(32, dtype=torch.long)).shape == x.shape


def test_identity_warmup_starts_at_the_cycle_weight_and_falls_to_lambda_id(four_classes, data, tmp_path, one_thread):
    """options.identity_warmup: the identity weight is lambda_rec at step 0, falls linearly, and is lambda_id from the
    warm-up's end on; without it, lambda_id throughout. Trained, the warm-up gives the input back more closely."""
    precision = resolve_precision("fp32", torch.device("cpu"))
    warm = StarGAN(star_recipe(four_classes, tmp_path, options={"lambda_id": 0.5, "identity_warmup": 100}), data, precision)
    assert [warm.identity_weight(s) for s in (0, 50, 100, 400)] == [5.0, 2.75, 0.5, 0.5]  # lambda_rec is 5 here
    plain = StarGAN(star_recipe(four_classes, tmp_path, options={"lambda_id": 0.5}), data, precision)
    assert [plain.identity_weight(s) for s in (0, 100)] == [0.5, 0.5]

    def identity_error(options: dict, name: str) -> float:
        run = train(star_recipe(four_classes, tmp_path, name=name, steps=80, options=options)).run_dir
        x = data.images[:64]
        return float((_translated(run, x, data.labels[:64]).float() - x.float()).abs().mean())

    # still in the warm-up after 80 steps (weight about 2.75); a warm-up ending at step 80 gave 40.3 against 48.6 grey levels
    # One thread (the fixture), as a `make test` worker has: with two, float sums differ and 80 steps gave 39.4 against 42.7
    # (0.92, still lower but inside the margin), so run alone the test had depended on how pytest was invoked.
    assert identity_error({"lambda_id": 0.5, "identity_warmup": 160}, "warm") < 0.85 * identity_error({"lambda_id": 0.5}, "plain")
