"""ProGAN: its layers against their definitions, the fade-in (alpha 0 = the upsampled lower stage, 1 = the new
stage) in G and in D's input path, the stage/alpha schedule, an exact resume mid-fade, sampling at any stage,
a tiny 28 px run that grows 7 -> 14 -> 28 and draws recognisable classes, and the one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from synthgen.checkpoint import latest_checkpoint
from synthgen.cli import app
from synthgen.data.loading import load_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import to_model
from synthgen.models.progan import EqualConv2d, EqualLinear, ProGANGenerator, ProGANTrunk, pixel_norm
from synthgen.models.stylegan import GrowingStyleGANGenerator, StyleGANGenerator
from synthgen.recipe import validate
from synthgen.sample import TrainedGenerator
from synthgen.train.loop import train
from synthgen.train.progan import fade_reals, growth_at, images_per_stage_for
from tests.conftest import tiny_recipe
from tests.test_end_to_end import train_judge
from tests.test_train import assert_same_tensors, final_tensors

PROGAN = {"backbone": "progan", "spectral_norm": False, "g_channels": 16, "d_channels": 16, "z_dim": 32, "max_channels": 64, "minibatch_std": True}
STYLEGAN_GROWING = {**PROGAN, "backbone": "stylegan-growing", "mapping_layers": 2}


def progan_recipe(root, out_dir, images_per_stage: int | str, fade_fraction: float = 0.5, model: dict = PROGAN, grow: dict | None = None, **sections):
    train_keys = {"lr_g": 0.001, "lr_d": 0.001, "beta1": 0.0, "beta2": 0.99, **sections.pop("train", {})}
    return tiny_recipe(
        root, out_dir, method="progan", model=model, conditioning={"type": "projection"}, train=train_keys,
        options={"grow": {"images_per_stage": images_per_stage, "fade_fraction": fade_fraction, **(grow or {})}}, **sections,
    )


# --- definitions -------------------------------------------------------------------------------------


def test_pixel_norm_and_equalised_layers_follow_their_definitions():
    x = torch.randn(3, 5, 4, 4)
    assert torch.allclose(pixel_norm(x), x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8))
    assert torch.allclose(pixel_norm(x).pow(2).mean(dim=1), torch.ones(3, 4, 4), atol=1e-5)
    conv, linear = EqualConv2d(5, 7, 3), EqualLinear(20, 6, gain=1.0)
    # Stored N(0, 1); used times gain / sqrt(fan_in) (He's constant), so Adam's steps are alike in every layer.
    assert abs(conv.weight.std().item() - 1) < 0.15 and abs(linear.weight.std().item() - 1) < 0.2
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * math.sqrt(2) / math.sqrt(5 * 9), conv.bias, padding=1), atol=1e-6)
    v = torch.randn(4, 20)
    assert torch.allclose(linear(v), v @ (linear.weight / math.sqrt(20)).T + linear.bias, atol=1e-6)


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    cfg = validate({"method": "progan", "data": {"image_size": 28, "channels": 1}, "model": PROGAN}).model
    return ProGANGenerator(cfg, 28, 1, 4).eval(), ProGANTrunk(cfg, 28, 1).eval()


def test_generator_fade_in_is_the_upsampled_lower_stage_at_0_and_the_new_stage_at_1(networks):
    G, _ = networks
    z, y = torch.randn(6, 32), torch.arange(6) % 4
    for stage in (1, 2):
        G.set_growth(stage - 1, 1.0)
        lower, lower_image = G(z, y), G.stage_image(z, y)
        G.set_growth(stage, 1.0)
        new, new_image = G(z, y), G.stage_image(z, y)
        G.set_growth(stage, 0.0)
        assert torch.equal(G(z, y), lower)  # exactly what the smaller G drew, at the full 28 px
        G.set_growth(stage, 0.25)
        expected = 0.75 * F.interpolate(lower_image, scale_factor=2.0, mode="nearest") + 0.25 * new_image
        assert torch.allclose(G.stage_image(z, y), expected, atol=1e-5)
        assert not torch.allclose(new, lower, atol=1e-3)
        # Every stage's images are 28 px, blocks of 2^(2 - stage) pixels.
        assert new.shape == (6, 1, 28, 28) and torch.equal(F.avg_pool2d(new, 2 ** (2 - stage)).repeat_interleave(2 ** (2 - stage), 2).repeat_interleave(2 ** (2 - stage), 3), new)
        with torch.no_grad():  # alpha 1: the old to_rgb no longer matters
            G.to_rgb[stage - 1].weight.add_(1.0)
            G.set_growth(stage, 1.0)
            assert torch.equal(G(z, y), new)
            G.to_rgb[stage - 1].weight.sub_(1.0)


def test_discriminator_fade_in_is_the_lower_stage_at_0_and_the_new_stage_at_1(networks):
    _, D = networks
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    for stage in (1, 2):
        D.set_growth(stage - 1, 1.0)
        lower = D(x)
        D.set_growth(stage, 0.0)
        assert torch.equal(D(x), lower)  # the new from_rgb and block carry no weight yet
        D.set_growth(stage, 1.0)
        new = D(x)
        with torch.no_grad():
            D.from_rgb[stage - 1].weight.add_(1.0)
            assert torch.equal(D(x), new)  # alpha 1: the old from_rgb no longer matters
            D.from_rgb[stage - 1].weight.sub_(1.0)
        D.set_growth(stage, 0.5)
        halfway = D(x)
        assert not torch.allclose(halfway, lower, atol=1e-4) and not torch.allclose(halfway, new, atol=1e-4)
    # The reals D sees while a stage fades in: alpha 0 = their lower resolution, alpha 1 = themselves.
    low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2.0, mode="nearest")  # 28 px fading in: 14 px reals
    assert torch.allclose(fade_reals(x, 2, 0.0, 2), low) and torch.equal(fade_reals(x, 2, 1.0, 2), x)
    assert torch.allclose(fade_reals(x, 2, 0.25, 2), 0.75 * low + 0.25 * x, atol=1e-6)


def test_growing_stylegan_fades_like_progan_and_is_stylegan_at_full_size():
    """StyleGAN v1's setting: at the last stage with alpha 1 the growing G is the skip G, weights and outputs alike;
    alpha 0 is the smaller G's image (nearest-upsampled, as the faded reals); in between, the lerp of the two."""
    torch.manual_seed(0)
    cfg = validate({"method": "progan", "data": {"image_size": 28, "channels": 1}, "model": STYLEGAN_GROWING}).model
    G = GrowingStyleGANGenerator(cfg, 28, 1, 4).eval()
    plain = StyleGANGenerator(cfg, 28, 1, 4).eval()
    plain.load_state_dict({k: v for k, v in G.state_dict().items() if not k.startswith("growth.")})
    z, y = torch.randn(6, 32), torch.arange(6) % 4
    assert torch.equal(G(z, y), plain(z, y))
    up = lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest")  # noqa: E731
    for stage in (1, 2):
        G.set_growth(stage - 1, 1.0)
        lower = G(z, y)
        G.set_growth(stage, 0.0)
        assert torch.equal(G(z, y), lower) and lower.shape == (6, 1, 28, 28)
        G.set_growth(stage, 1.0)
        new = G(z, y)
        assert not torch.allclose(new, lower, atol=1e-3)
        G.set_growth(stage, 0.25)
        image, below = G._skip_images(G.styles(z, y), stage)
        expected = torch.tanh(0.75 * up(below) + 0.25 * image)
        assert torch.allclose(G(z, y), F.interpolate(expected, scale_factor=2.0 ** (2 - stage), mode="nearest"), atol=1e-5)


def test_stage_and_alpha_follow_the_images_seen():
    schedule = lambda images, start=0, fade=0.5: growth_at(images, start, 2, 100, fade)  # noqa: E731
    assert [schedule(i) for i in (0, 99, 100, 125, 149, 150, 199, 200, 240, 300, 10**6)] == [
        (0, 1.0), (0, 1.0), (1, 0.0), (1, 0.5), (1, 0.98), (1, 1.0), (1, 1.0), (2, 0.0), (2, 0.8), (2, 1.0), (2, 1.0)]
    assert schedule(100, fade=0.0) == (1, 1.0) and schedule(150, fade=1.0) == (1, 0.5)
    assert [schedule(i, start=1) for i in (0, 100, 150, 200)] == [(1, 1.0), (2, 0.0), (2, 1.0), (2, 1.0)]


def test_auto_images_per_stage_fades_the_last_stage_in_at_the_time_asked():
    """N (1/r_7 + 1/r_14 + fade / r_28) = seconds, with r the real images per second at each stage."""
    rates, seconds = [400.0, 200.0, 50.0], 60.0
    n = images_per_stage_for(seconds, rates, 0.5)
    assert n / 400 + n / 200 + 0.5 * n / 50 == pytest.approx(seconds, abs=0.02)
    assert images_per_stage_for(seconds, rates, 0.0) == int(seconds / (1 / 400 + 1 / 200))  # no fade: when the last stage starts


# --- training through the one loop --------------------------------------------------------------------


def test_auto_schedule_reaches_the_full_size_within_a_short_budget(four_classes, tmp_path):
    """images_per_stage auto with a 10 s budget: measured here, recorded, and the run ends at 28 px (the recipe's
    120,000 images per stage would still be at 7 px; the paper's 1,600,000 too)."""
    result = train(progan_recipe(four_classes, tmp_path, "auto", train={"steps": 10**6, "budget": "10s", "log_every": 10, "checkpoint_every": 10**6, "sample_every": 10**6}))
    run = json.loads((result.run_dir / "run.json").read_text())
    planned = run["schedule"]["images_per_stage"]
    assert set(run["schedule"]["real_images_per_s"]) == {"7", "14", "28"} and run["schedule"]["full_size_by_s"] == 5.0
    growth = latest_checkpoint(result.run_dir).state["method_state"]["growth"]
    # Planned to have faded in by 5 s; the 28 px stage itself is asserted, not alpha 1, as a machine busy with
    # other jobs after the probe trains slower than it measured.
    assert growth["images_per_stage"] == planned and growth["resolution"] == 28, (growth, result.step)
    assert growth_at(result.step * 16, 0, 2, 120_000, 0.5)[0] == 0


def test_planning_the_schedule_leaves_the_run_as_a_fixed_schedule_would_train_it(four_classes, tmp_path):
    """The probe runs on a fresh copy in a forked RNG: an auto run equals, bit for bit, the run given its planned count."""
    short = {"steps": 12, "checkpoint_every": 6, "sample_every": 6, "log_every": 3}
    # A long budget (the steps end the run, not the clock) with the full size due after 0.7 s: the route grows within 12 steps.
    soon = {"grow": {"full_size_at": 0.0002}}
    auto = train(progan_recipe(four_classes, tmp_path / "a", "auto", **soon, train={**short, "budget": "1h"}))
    planned = latest_checkpoint(auto.run_dir).state["method_state"]["growth"]["images_per_stage"]
    fixed = train(progan_recipe(four_classes, tmp_path / "b", planned, train=short))
    assert_same_tensors(final_tensors(auto.run_dir), final_tensors(fixed.run_dir))
    # --resume keeps the planned count (no second probe): a longer resumed run continues the same route.
    resumed = train(progan_recipe(four_classes, tmp_path / "a", "auto", **soon, train={**short, "steps": 18, "budget": "1h"}), resume=True)
    assert latest_checkpoint(resumed.run_dir).state["method_state"]["growth"]["images_per_stage"] == planned
    assert json.loads((resumed.run_dir / "run.json").read_text())["schedule"]["images_per_stage"] == planned


@pytest.mark.parametrize("model", [PROGAN, STYLEGAN_GROWING], ids=["progan", "stylegan-growing"])
def test_resume_mid_fade_is_bit_exact_and_samples_at_any_stage(four_classes, tmp_path, model):
    """16 images a step, 48 per stage: steps 3-4 (0-based) fade 14 px in (alpha 0, 2/3), 6-7 fade 28 px in; stopped after step 4."""
    whole = train(progan_recipe(four_classes, tmp_path / "a", 48, model=model, train={"steps": 8}))
    train(progan_recipe(four_classes, tmp_path / "b", 48, model=model, train={"steps": 5}))
    stopped = latest_checkpoint(tmp_path / "b" / "tiny")
    assert stopped.step == 5 and stopped.state["method_state"]["growth"] == {"stage": 1, "alpha": pytest.approx(2 / 3), "resolution": 14, "images_per_stage": 48}
    # `synthgen sample` mid-fade: the checkpoint's weights carry their route; images are 28 px.
    generator = TrainedGenerator(tmp_path / "b" / "tiny", device="cpu", checkpoint="latest")
    assert (generator.generator.growth.current, float(generator.generator.growth.alpha)) == (1, pytest.approx(2 / 3))
    result = CliRunner().invoke(app, ["sample", "--weights", str(tmp_path / "b" / "tiny"), "--class", "Bag", "-n", "3", "--no-gate", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert load_labelled(tmp_path / "s", 28, 1, "crop").images.shape == (3, 1, 28, 28)

    resumed = train(progan_recipe(four_classes, tmp_path / "b", 48, model=model, train={"steps": 8}), resume=True)
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))
    assert latest_checkpoint(resumed.run_dir).state["method_state"]["growth"] == {"stage": 2, "alpha": pytest.approx(2 / 3), "resolution": 28, "images_per_stage": 48}


@pytest.fixture(scope="module")
def grown_run(four_classes, tmp_path_factory) -> Path:
    """150 steps of 16 images (ns loss: WGAN-GP's penalty doubles the step's cost): 7 px for 50 steps, 14 px faded in
    over 25 and trained 25, then 28 px likewise. (Measured on four classes: mean class accuracy 0.84 by the judge.)"""
    return train(progan_recipe(
        four_classes, tmp_path_factory.mktemp("progan"), 800,
        train={"steps": 150, "batch_size": 16, "log_every": 20, "sample_every": 150, "checkpoint_every": 150, "ema_halflife_kimg": 1.0},
    )).run_dir


def test_a_tiny_run_grows_7_14_28_and_draws_recognisable_classes(grown_run, four_classes):
    log = [json.loads(line) for line in (grown_run / "log.jsonl").read_text().splitlines()]
    resolution = {line["step"]: line["resolution"] for line in log if "resolution" in line}
    assert (resolution[40], resolution[80], resolution[140]) == (7, 14, 28)  # averages over each 20-step log interval
    real = load_labelled(four_classes, 28, 1, "crop")
    judge = train_judge(real.images, real.labels, 4)
    generator = TrainedGenerator(grown_run, device="cpu")
    hits = []
    for k in range(4):
        images = generator.generate(k, list(range(50)), truncation=None)
        assert images.shape == (50, 1, 28, 28)
        blocks = F.interpolate(F.avg_pool2d(images.float(), 2), scale_factor=2.0, mode="nearest")
        assert (images.float() - blocks).abs().mean() > 2, "the 28 px layers add detail finer than 2x2 blocks"
        with torch.no_grad():
            hits.append((judge(to_model(images)).argmax(1) == k).float().mean().item())
    print(f"generated-class accuracy per class {hits} (chance 0.25)")
    assert sum(hits) / 4 > 0.6 and min(hits) > 0.25, hits


# --- one-line errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"options": {"grow": {"start": 10}}}, "options.grow.start: 10 px is not a resolution of 28 px images; use one of 7, 14, 28"),
    ({"options": {"grow": {"images_per_stage": 0}}}, "options.grow.images_per_stage"),
    ({"options": {"grow": {"fade_fraction": 2}}}, "options.grow.fade_fraction"),
    ({"options": {"grow": {"images_per_stage": "auto"}}}, "options.grow.images_per_stage: auto spreads the stages over train.budget; set train.budget"),
    ({"options": {"grow": {"fade": 0.5}}}, "options.grow.fade"),
    ({"model": {"backbone": "dcgan"}}, "model.backbone: method progan grows G and D a resolution at a time; use a growing backbone (progan, stylegan-growing), got dcgan"),
    ({"model": {"spectral_norm": True}}, "model.spectral_norm: the progan backbone scales its weights by the equalised learning rate"),
])
def test_bad_options_are_one_line_errors(four_classes, tmp_path, change, message):
    raw = progan_recipe(four_classes, tmp_path, 100).model_dump(mode="json")
    for section, values in change.items():
        raw[section] = {**raw[section], **values} if section != "options" else values
    with pytest.raises(SynthgenError) as info:
        validate(raw)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
