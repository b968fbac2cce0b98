"""R3GAN's pieces and training to a budget: losses and penalties against their definitions,
the r3 backbone, ADA, LeCam, EMA half-life, init_from, train.budget and train.patience."""

from __future__ import annotations

import json
import time
import math

import pytest
import torch

from synthgen.checkpoint import latest_checkpoint
from synthgen.data.batches import BatchDrawer
from synthgen.data.diffaugment import AdaptiveAugment, affine_warp, geometric
from synthgen.data.loading import load_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import to_model
from synthgen.losses import LOSSES, zero_centred_penalty
from synthgen.models.conditioning import build_models
from synthgen.models.r3 import ResidualBlock
from synthgen.precision import resolve_precision
from synthgen.recipe import load_recipe, parse_budget
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.ema import EMA
from synthgen.train.loop import train
from synthgen.train.schedule import lr_factor, penalty_factor
from tests.conftest import tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors

R3 = dict(
    model={"backbone": "r3", "spectral_norm": False, "g_channels": 8, "d_channels": 8, "max_channels": 32, "group_width": 8},
    conditioning={"type": "projection"},
    loss={"type": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1, "r1_every": 2},
)


# --- losses and penalties -----------------------------------------------------------------


def test_rpgan_matches_its_definition_on_hand_made_logits():
    real = torch.tensor([2.0, -1.0, 0.5])
    fake = torch.tensor([1.0, 0.0, 3.0])
    rp = LOSSES["rpgan"]
    # L_D = E softplus(l_fake - l_real) = E log(1 + exp(fake - real)), pair by pair.
    expected_d = sum(math.log(1 + math.exp(f - r)) for r, f in zip(real.tolist(), fake.tolist())) / 3
    expected_g = sum(math.log(1 + math.exp(r - f)) for r, f in zip(real.tolist(), fake.tolist())) / 3
    assert rp.discriminator(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert rp.generator(fake, real).item() == pytest.approx(expected_g, rel=1e-6)
    assert rp.relativistic and not LOSSES["ns"].relativistic
    # Relativistic: shifting every logit by the same amount changes nothing.
    assert torch.allclose(rp.discriminator(real + 5, fake + 5), rp.discriminator(real, fake))


def test_zero_centred_penalty_is_the_squared_gradient_norm():
    """For D(x) = <w, x> + b the gradient is w everywhere: R1 = R2 = ||w||^2."""
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1) + 0.7
    assert zero_centred_penalty(logits, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
    # Quadratic D(x) = ||x||^2 / 2: gradient x, penalty E ||x||^2.
    x2 = torch.randn(6, 2, 3, 3, requires_grad=True)
    assert zero_centred_penalty(0.5 * x2.pow(2).flatten(1).sum(1), x2).item() == pytest.approx(x2.detach().pow(2).flatten(1).sum(1).mean().item(), rel=1e-5)


# --- the r3 backbone ---------------------------------------------------------------------------


def expected_r3_generator_params(widths: list[int], base: int, z: int, classes: int, channels: int, expansion: int, group_width: int, blocks: int) -> int:
    """Counted by hand from the architecture: embedding, basis, per-stage blocks, 1x1 transitions, output conv."""
    def block(c):
        hidden = c * expansion
        groups = hidden // group_width
        return c * hidden + hidden * (hidden // groups) * 9 + hidden * c + 2 * hidden  # 3 convs, the first two with biases

    total = classes * z + widths[0] * base * base + 2 * z * widths[0]  # embed, basis, to_basis (z + class embedding)
    total += sum(blocks * block(w) for w in widths)
    total += sum(a * b for a, b in zip(widths, widths[1:]) if a != b)
    return total + widths[-1] * channels + channels  # output 1x1 conv with bias


@pytest.mark.parametrize("size,base,channels", [(28, 7, 1), (32, 4, 3), (64, 4, 3)])
def test_r3_shapes_and_parameter_counts(tmp_path, size, base, channels):
    recipe = tiny_recipe(tmp_path, tmp_path, **{**R3, "data": {"root": str(tmp_path), "image_size": size, "channels": channels}})
    G, D = build_models(recipe, num_classes=5)
    levels = {28: 2, 32: 3, 64: 4}[size]
    widths = [min(32, 8 * 2**i) for i in range(levels + 1)][::-1]
    z = recipe.model.z_dim
    assert sum(p.numel() for p in G.parameters()) == expected_r3_generator_params(widths, base, z, 5, channels, 2, 8, 1)
    images = G(torch.randn(4, z), torch.tensor([0, 1, 2, 4]))
    assert images.shape == (4, channels, size, size) and images.abs().max() <= 1
    logits, classes = D(images, torch.tensor([0, 1, 2, 4]))
    assert logits.shape == (4,) and classes is None
    assert D.trunk.features == widths[0]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in [*G.modules(), *D.modules()])


def test_r3_residual_blocks_start_as_the_identity():
    """Fix-up: the last conv of every branch is zero, so a new block passes its input through unchanged."""
    block = ResidualBlock(16, expansion=2, group_width=8, total_blocks=4)
    x = torch.randn(3, 16, 7, 7)
    assert torch.equal(block(x), x)
    assert block.spatial.groups == 4  # 32 hidden channels in groups of 8


# --- ADA, LeCam, EMA, schedules ----------------------------------------------------------------


def test_ada_p_rises_on_an_overfitting_d_and_falls_on_an_underfitting_one():
    ada = AdaptiveAugment(["translation", "cutout"], target=0.6, kimg=1.0, interval=2, batch_size=50)
    assert ada.p == 0.0
    for step in range(10):  # D certain every real is real: r_t = 1 > 0.6
        ada.observe(torch.full((50,), 3.0))
        ada.adjust(step)
    assert ada.p == pytest.approx(0.5)  # 5 adjustments of 50 * 2 / 1000
    for step in range(10, 14):  # D unsure: r_t = -1 < 0.6
        ada.observe(torch.full((50,), -1.0))
        ada.adjust(step)
    assert ada.p == pytest.approx(0.3)
    # Beside a loss with no fixed zero the measure is relative: reals above their paired fakes count as overfitting.
    plain, relative = (AdaptiveAugment(["cutout"], target=0.6, kimg=1.0, interval=1, batch_size=50, measure=m) for m in ("signs", "relative"))
    for ada in (plain, relative):
        ada.observe(torch.full((50,), 1.0), torch.full((50,), 2.0))  # every real called real, yet below its fake
    assert (plain.adjust(0), relative.adjust(0)) == (pytest.approx(1.0), pytest.approx(-1.0))
    with pytest.raises(ValueError, match="fakes"):
        relative.observe(torch.ones(50))


@pytest.mark.parametrize("loss, pairs", [("ns", False), ("hinge", False), ("wgan-gp", True), ("rpgan", True)])
def test_ada_reads_real_minus_fake_where_the_losss_logits_have_no_fixed_zero(four_classes, tmp_path, loss, pairs):
    """A WGAN critic's output (and relativistic pairing's) means something only against another's, so its r_t is the
    sign of D(real) - D(fake); a log or hinge loss's logit has a zero, so its r_t is ADA's sign of D(real)."""
    recipe = tiny_recipe(four_classes, tmp_path, loss={"type": loss, **({"r1_gamma": 1.0, "r2_gamma": 1.0} if loss == "rpgan" else {})},
                         conditioning={"type": "projection"}, model={"spectral_norm": False},
                         train={"diffaugment": ["translation"], "ada_target": 0.6})
    method = ConditionalGAN(recipe, load_labelled(four_classes, 28, 1, "crop"), resolve_precision("fp32", torch.device("cpu")))
    observed = []
    method.augment.observe = lambda real, fake, heldout: observed.append((real, fake))
    method.discriminator_step(0, 0)
    real, fake = observed[0]
    expected = (real - fake if pairs else real).detach().sign().mean()
    ada = AdaptiveAugment.from_recipe(recipe)
    ada.observe(real, fake)
    assert LOSSES[loss].offset_free == pairs and ada.measure == ("relative" if pairs else "signs")
    assert ada.sums["signs"] / ada.sums["count"] == pytest.approx(float(expected))


def test_ada_heldout_measure_is_adas_r_v_and_ignores_a_d_that_is_only_ahead_of_g():
    """r_v = (E[D(train)] - E[D(held out)]) / (E[D(train)] - E[D(fake)]), over the interval's D steps that saw held-out
    images: a D far ahead of G that judges unseen reals as it judges its training ones does not raise p (the relative
    r_t would: every real above every fake); one that takes unseen reals for fakes does."""
    ada = AdaptiveAugment(["cutout"], target=0.6, kimg=1.0, interval=2, batch_size=50, measure="heldout")
    relative = AdaptiveAugment(["cutout"], target=0.6, kimg=1.0, interval=2, batch_size=50, measure="relative")
    train_logits, fake_logits = torch.tensor([4.0, 2.0]), torch.tensor([-3.0, -5.0])
    for step in range(2):
        ada.observe(train_logits, fake_logits, torch.tensor([3.0, 2.0]) if step == 0 else None)  # only step 0 saw held-out
        relative.observe(train_logits, fake_logits)
    assert ada.adjust(1) == pytest.approx((3.0 - 2.5) / (3.0 - -4.0))  # the unobserved step left out
    assert (ada.p, relative.adjust(1), relative.p) == (0.0, pytest.approx(1.0), pytest.approx(0.1))
    for step in range(2, 4):  # D has memorised its training images: unseen ones score like fakes
        ada.observe(train_logits, fake_logits, torch.tensor([-4.0, -4.0]))
    assert ada.adjust(3) == pytest.approx(1.0) and ada.p == pytest.approx(0.1)
    for step in range(4, 6):  # a D that does not rank its training images above fakes shows no memorising: p falls
        ada.observe(fake_logits, train_logits, torch.tensor([-4.0, -4.0]))
    assert ada.adjust(5) == 0.0 and ada.p == 0.0
    state = ada.state()
    assert json.loads(json.dumps(state)) == state  # JSON training state, restored by --resume
    restored = AdaptiveAugment(["cutout"], target=0.6, kimg=1.0, interval=2, batch_size=50, measure="heldout")
    restored.load_state(state)
    assert (restored.p, restored.sums) == (ada.p, ada.sums)


def test_heldout_images_are_never_in_ds_batches_and_share_their_labels(four_classes):
    data = load_labelled(four_classes, 28, 1, "crop")
    drawer = BatchDrawer(data, 32, "balanced", False, seed=0, heldout=0.1)
    held = torch.cat(drawer.heldout_members)
    for c, (kept, out) in enumerate(zip(drawer.members, drawer.heldout_members)):
        n = int((data.labels == c).sum())
        assert len(out) == max(1, round(n * 0.1)) and len(kept) + len(out) == n
    trained_on = torch.cat([drawer.real_rows(step, 0, torch.device("cpu"))[2] for step in range(30)])
    assert not torch.isin(trained_on, held).any()
    images, labels = drawer.heldout(3, 0, torch.device("cpu"))
    assert torch.equal(labels, drawer.real(3, 0, torch.device("cpu"))[1]) and images.shape == (32, 1, 28, 28)
    again = BatchDrawer(data, 32, "balanced", False, seed=0, heldout=0.1)  # the split is the seed's: the same after a resume
    assert all(torch.equal(a, b) for a, b in zip(again.heldout_members, drawer.heldout_members))
    plain = BatchDrawer(data, 32, "balanced", False, seed=0)
    assert sum(len(m) for m in plain.heldout_members) == 0 and sum(len(m) for m in plain.members) == len(data)


def test_heldout_images_are_mirrored_as_real_batches_are_under_hflip(four_classes):
    """With data.hflip D's training images are mirrored half the time, so r_v's held-out images are too."""
    data = load_labelled(four_classes, 28, 1, "crop")
    held = torch.cat(BatchDrawer(data, 32, "balanced", False, seed=0, heldout=0.1).heldout_members)
    stored, mirrored = to_model(data.images[held]), to_model(data.images[held]).flip(-1)

    def orientations(hflip: bool) -> tuple[int, int]:
        drawer = BatchDrawer(data, 32, "balanced", hflip, seed=0, heldout=0.1)
        images = torch.cat([drawer.heldout(step, 0, torch.device("cpu"))[0] for step in range(10)])
        as_stored = sum(int((image == stored).flatten(1).all(1).any()) for image in images)
        as_mirrored = sum(int((image == mirrored).flatten(1).all(1).any()) for image in images)
        return as_stored, as_mirrored

    assert orientations(False)[0] == 320  # every one as stored (a mirror-symmetric image would count as both)
    stored_count, mirrored_count = orientations(True)
    assert 100 < stored_count < 240 and 100 < mirrored_count < 240, (stored_count, mirrored_count)


def test_ada_applies_each_transform_to_about_p_of_the_images():
    ada = AdaptiveAugment(["cutout"], target=0.6, kimg=1.0, interval=1, batch_size=1)
    ada.p = 0.25
    torch.manual_seed(0)
    x = torch.ones(4000, 1, 8, 8)
    changed = (ada(x) != x).flatten(1).any(1).float().mean().item()
    assert changed == pytest.approx(0.25, abs=0.03)
    ada.p = 0.0
    assert torch.equal(ada(x), x)


@pytest.mark.parametrize("angle, scale, shift", [(30.0, 1.0, (0.0, 0.0)), (-12.0, 1.3, (0.0, 0.0)), (20.0, 0.8, (0.1, -0.05))])
def test_affine_warp_matches_torchvision_affine(angle, scale, shift):
    """ADA's geometric warp against the reference implementation, on a non-square image (rotation in pixel
    units); only the interior is compared: torchvision fills the border with zeros, the warp reflects."""
    import torchvision.transforms.v2.functional as TF
    x = torch.zeros(1, 1, 40, 60)
    x[..., 15:25, 10:50] = 1
    x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    one = torch.ones(1)
    ours = affine_warp(x, torch.tensor([math.radians(angle)]), scale * one, scale * one, shift[0] * one, shift[1] * one)
    reference = TF.affine(x, angle=angle, translate=[shift[0] * 60, shift[1] * 40], scale=scale, shear=[0.0, 0.0],
                          interpolation=TF.InterpolationMode.BILINEAR)
    assert (ours - reference)[..., 8:-8, 8:-8].abs().max() < 1e-4
    assert (ours - x).abs().max() > 0.5  # it did move the bar


def test_geometric_warps_each_image_differently_without_borders():
    torch.manual_seed(0)
    flat = torch.full((8, 3, 24, 32), 0.3)
    assert torch.allclose(geometric(flat), flat, atol=1e-5)  # reflection padding: no black border to give it away
    x = torch.rand(1, 1, 24, 32).expand(8, 1, 24, 32)
    warped = geometric(x)
    assert warped.shape == x.shape
    assert all((warped[i] - warped[0]).abs().max() > 0.05 for i in range(1, 8))  # one random warp per image
    stretched = affine_warp(torch.eye(32)[None, None], torch.zeros(1), torch.tensor([2.0]), torch.ones(1),
                            torch.zeros(1), torch.zeros(1))
    assert (stretched[0, 0] > 0.25).sum(1)[8:24].float().mean() > 1.5  # anisotropic: the diagonal is twice as wide


def test_ema_half_life_follows_its_definition():
    ema = EMA(torch.nn.Linear(2, 2), decay=0.999, halflife_kimg=10, rampup=0.05, batch_size=100)
    # Early on the half-life is 5% of the images seen: after 1,000 steps of 100, 5,000 images.
    assert ema.beta(999) == pytest.approx(0.5 ** (100 / 5000))
    assert ema.beta(10**6) == pytest.approx(0.5 ** (100 / 10000))  # later the recipe's 10k images
    assert EMA(torch.nn.Linear(2, 2), decay=0.999).beta(10**6) == 0.999


def test_cosine_schedule_decays_rates_and_penalties_then_holds(tmp_path):
    recipe = tiny_recipe(tmp_path, tmp_path, train={"lr_decay": "cosine", "decay_kimg": 1.6, "lr_final_ratio": 0.25, "batch_size": 16})
    assert lr_factor(recipe, 0) == 1.0 and penalty_factor(recipe, 0) == 1.0
    assert lr_factor(recipe, 50) == pytest.approx(0.625)  # half way: 800 of 1,600 images
    assert lr_factor(recipe, 100) == pytest.approx(0.25) and lr_factor(recipe, 500) == pytest.approx(0.25)
    assert penalty_factor(recipe, 100) == pytest.approx(0.1)


# --- through the training loop --------------------------------------------------------------


def test_r3_rpgan_trains_with_ada_and_lecam_and_resumes_bit_exactly(four_classes, tmp_path):
    """ADA's p and LeCam's averages are training state: a resumed run equals an uninterrupted one."""
    sections = {**R3, "loss": {**R3["loss"], "lecam_weight": 0.1}}
    # A fast-learning D separates reals from fakes within a few steps, so ADA's p has to move.
    train_keys = {"diffaugment": ["translation", "cutout"], "ada_target": 0.1, "ada_kimg": 0.2, "ada_interval": 2, "lr_d": 0.01,
                  "ema_halflife_kimg": 0.5, "lr_decay": "cosine", "decay_kimg": 0.2}
    whole = train(tiny_recipe(four_classes, tmp_path / "a", **sections, train={**train_keys, "steps": 8}))
    train(tiny_recipe(four_classes, tmp_path / "b", **sections, train={**train_keys, "steps": 5}))
    state = latest_checkpoint(tmp_path / "b" / "tiny").state["method_state"]
    assert 0 < state["augment"]["p"] <= 1 and state["lecam"]["real_average"] != 0  # p moved; averages were kept
    resumed = train(tiny_recipe(four_classes, tmp_path / "b", **sections, train={**train_keys, "steps": 8}), resume=True)
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))
    a, b = (latest_checkpoint(r.run_dir).state["method_state"] for r in (whole, resumed))
    assert a == b
    log = [json.loads(line) for line in (whole.run_dir / "log.jsonl").read_text().splitlines()]
    assert all("ada_p" in line and math.isfinite(line["d_loss"]) for line in log)


def test_ada_on_heldout_images_trains_and_resumes_bit_exactly(four_classes, tmp_path):
    """train.ada_heldout: r_v is measured every ada_interval steps through the loop, its sums are training state."""
    sections = {"conditioning": {"type": "projection"}, "model": {"spectral_norm": False},
                "loss": {"type": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1}}
    keys = {"diffaugment": ["translation"], "ada_target": 0.05, "ada_kimg": 0.2, "ada_interval": 2, "ada_heldout": 0.1, "lr_d": 0.01,
            "log_every": 1, "checkpoint_every": 3}
    whole = train(tiny_recipe(four_classes, tmp_path / "a", **sections, train={**keys, "steps": 8}))
    train(tiny_recipe(four_classes, tmp_path / "b", **sections, train={**keys, "steps": 5}))
    resumed = train(tiny_recipe(four_classes, tmp_path / "b", **sections, train={**keys, "steps": 8}), resume=True)
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))
    a, b = (latest_checkpoint(r.run_dir).state["method_state"]["augment"] for r in (whole, resumed))
    assert a == b and set(a) == {"p", "train", "train_count", "heldout", "heldout_count", "fake", "fake_count"}
    log = [json.loads(line) for line in (whole.run_dir / "log.jsonl").read_text().splitlines() if "metrics" not in line]
    assert len([line["ada_rv"] for line in log if "ada_rv" in line]) == 4 and not any("ada_rt" in line for line in log)  # r_v, once per interval of 2 steps


def test_ada_heldout_holds_nothing_out_while_augmentation_is_off(four_classes, tmp_path):
    """`--set train.diffaugment=[]` turns ADA off in a recipe that sets ada_heldout: D then trains on every image."""
    data = load_labelled(four_classes, 28, 1, "crop")
    held = {}
    for policies in ([], ["translation"]):
        recipe = tiny_recipe(four_classes, tmp_path, train={"diffaugment": policies, "ada_target": 0.6, "ada_heldout": 0.1})
        method = ConditionalGAN(recipe, data, resolve_precision("fp32", torch.device("cpu")))
        held[bool(policies)] = sum(len(m) for m in method.batches.heldout_members)
    assert held == {False: 0, True: pytest.approx(0.1 * len(data), abs=4)}


@pytest.mark.parametrize("method", ["sgan", "bigan", "lapgan"])
def test_ada_heldout_is_refused_where_the_d_step_has_no_heldout_view(four_classes, tmp_path, method):
    with pytest.raises(SynthgenError, match="ada_heldout"):
        load_recipe(f"recipes/{method}.yaml", [f"data.root={four_classes}", "train.ada_heldout=0.1"])


def test_a_term_reported_on_some_steps_is_logged_at_its_own_mean(four_classes, tmp_path):
    """Lazy R1/R2 (every 4th D step) and ADA's r_t (every 4 steps) are reported on a quarter of the steps: a log line
    over 8 steps shows the mean of the values reported, as a log line per step shows them (not a quarter of it)."""
    sections = {"conditioning": {"type": "projection"}, "model": {"spectral_norm": False},
                "loss": {"type": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1, "r1_every": 4}}
    keys = {"steps": 8, "diffaugment": ["translation"], "ada_target": 0.6, "ada_interval": 4, "checkpoint_every": 8, "sample_every": 8}
    lines = {}
    for every in (1, 8):
        run = train(tiny_recipe(four_classes, tmp_path / str(every), **sections, train={**keys, "log_every": every})).run_dir
        lines[every] = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "metrics" not in line]
    per_step, whole = lines[1], lines[8][-1]
    for key in ("r1", "r2", "ada_rt", "ada_p", "d_loss"):
        reported = [line[key] for line in per_step if key in line]
        assert len(reported) == (8 if key in ("ada_p", "d_loss") else 2), (key, reported)
        assert whole[key] == pytest.approx(sum(reported) / len(reported), rel=1e-3), key  # the log keeps 5 digits


def test_init_from_loads_what_fits_and_reports_the_rest(four_classes, fashion_test_split, tmp_path):
    source = train(tiny_recipe(four_classes, tmp_path, name="source", train={"steps": 3})).run_dir
    # Two classes instead of four: the class-sized tensors cannot be loaded, everything else is.
    two = tmp_path / "two"
    two.mkdir()
    for name in ["Bag", "Sneaker"]:
        (two / name).symlink_to(fashion_test_split / name)
    result = train(tiny_recipe(two, tmp_path, name="child", train={"steps": 1, "init_from": str(source), "lr_g": 1e-12, "lr_d": 1e-12}))
    report = json.loads((result.run_dir / "run.json").read_text())["init_from"]
    assert report["classes"]["now"] == ["Bag", "Sneaker"]
    fresh_d = report["networks"]["D"]["initialised"]
    assert fresh_d and all("classifier" in k for k in fresh_d)  # AC-GAN's class head: 4 outputs there, 2 here
    assert report["networks"]["G"]["loaded"] > 0
    source_d = final_tensors(source)
    child_d = final_tensors(result.run_dir)
    trunk = [k for k in child_d if k.startswith("D/trunk") and k.endswith("weight.original")]  # not the power-iteration vectors
    assert trunk and all(torch.allclose(child_d[k], source_d[k], atol=1e-6) for k in trunk)
    with pytest.raises(SynthgenError, match="init_from.*no checkpoint|init_from.*not a run"):
        train(tiny_recipe(two, tmp_path, name="nothing", train={"steps": 1, "init_from": str(tmp_path / "missing")}))


def test_budget_parses_durations_and_refuses_others():
    assert parse_budget("90s") == 90 and parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400 and parse_budget("1.5h") == 5400
    for bad in ["", "ten minutes", "0s", "5x"]:
        with pytest.raises(ValueError, match="train.budget"):
            parse_budget(bad)


def test_budget_stops_the_run_with_a_checkpoint(four_classes, tmp_path):
    recipe = tiny_recipe(four_classes, tmp_path, train={"steps": 100000, "budget": "4s", "log_every": 5, "checkpoint_every": 100000, "sample_every": 100000, "precision": "fp32", "compile": "off"})
    result = train(recipe)
    checkpoint = latest_checkpoint(result.run_dir)
    assert 0 < result.step < 100000 and checkpoint.step == result.step
    assert 4 <= checkpoint.state["train_seconds"] < 60
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert log[-1] == {"step": result.step, "event": "stopped", "reason": "budget"}
    # The stopping step is logged like a last step (its losses, then the event), off the log interval.
    assert log[-2]["step"] == result.step and "d_loss" in log[-2]


def test_budget_is_training_time_not_the_evaluators_setup(four_classes, tmp_path, monkeypatch):
    """A one-time setup longer than the budget (a domain classifier at 64 px takes minutes) must not leave a 1-step run."""
    import synthgen.train.evaluation as evaluation

    real_init = evaluation.TrainingEvaluator.__init__

    def slow_init(self, *args, **kwargs):  # the real evaluator, made slower than the whole budget
        real_init(self, *args, **kwargs)
        time.sleep(3.0)

    monkeypatch.setattr(evaluation.TrainingEvaluator, "__init__", slow_init)
    recipe = tiny_recipe(
        four_classes, tmp_path,
        train={"steps": 100000, "budget": "2s", "log_every": 5, "checkpoint_every": 100000, "sample_every": 100000, "precision": "fp32", "compile": "off"},
        gate={"eval_during_training": True, "domain_steps": 20, "null_trials": 20},
    )
    result = train(recipe)
    state = latest_checkpoint(result.run_dir).state
    assert result.step > 5  # before: the setup spent the budget and the run stopped after its first step
    assert state["evaluator_setup_seconds"] >= 3.0 and 2.0 <= state["train_seconds"] < state["evaluator_setup_seconds"] + 30


def test_patience_stops_a_plateaued_run(four_classes, tmp_path):
    """With a learning rate of ~0 the KID cannot improve: patience 2 stops after the best plus 2 evaluations."""
    recipe = tiny_recipe(
        four_classes, tmp_path,
        train={"steps": 60, "lr_g": 1e-12, "lr_d": 1e-12, "checkpoint_every": 2, "log_every": 2, "sample_every": 100, "patience": 2, "ema": False},
        gate={"eval_during_training": True, "domain_steps": 20, "null_trials": 20},
    )
    result = train(recipe)
    state = latest_checkpoint(result.run_dir).state
    assert result.step < 60
    assert state["evals_since_best"] == 2 and result.step == state["best"]["step"] + 4
