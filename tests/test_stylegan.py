"""The stylegan backbone: modulated convolution against its definition, demodulation, noise inputs,
W truncation, style mixing, and tiny runs through the training loop, resume and sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from synthgen.checkpoint import latest_checkpoint
from synthgen.errors import SynthgenError
from synthgen.models.conditioning import build_models
from synthgen.models.stylegan import modulated_conv2d
from synthgen.recipe import load_recipe, validate
from synthgen.sample import TrainedGenerator, sample_dataset, plan_balanced
from synthgen.train.loop import train
from tests.conftest import tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors

STYLEGAN = dict(
    model={"backbone": "stylegan", "g_channels": 16, "d_channels": 16, "max_channels": 32, "z_dim": 32, "spectral_norm": False},
    conditioning={"type": "projection"},
    loss={"type": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1, "r1_every": 2},
)
FAST = {"lr_g": 0.002, "beta1": 0.0, "beta2": 0.99, "ema_halflife_kimg": 0.2}


def generator(tmp_path, size=28, channels=1, num_classes=4, **model):
    recipe = tiny_recipe(tmp_path, tmp_path, **{**STYLEGAN, "model": {**STYLEGAN["model"], **model},
                                                "data": {"root": str(tmp_path), "image_size": size, "channels": channels}})
    return build_models(recipe, num_classes)[0]


# --- the modulated convolution -----------------------------------------------------------------


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_its_definition(demodulate):
    """StyleGAN2 eq. 1-3, sample by sample: w'_ijk = s_i w_ijk, w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 9, 9), torch.randn(4, 5, 3, 3), torch.rand(3, 5) * 2 + 0.1
    expected = []
    for i in range(3):
        w = weight * styles[i][None, :, None, None]
        if demodulate:
            w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        expected.append(F.conv2d(x[i : i + 1], w, padding=1))
    assert torch.allclose(modulated_conv2d(x, weight, styles, demodulate), torch.cat(expected), atol=1e-5)


def test_demodulation_normalises_the_output_std():
    """Unit-variance input: whatever the weights and styles, a demodulated output has std ~1; not demodulated, not."""
    torch.manual_seed(1)
    x = torch.randn(8, 32, 40, 40)
    weight, styles = torch.randn(16, 32, 3, 3) * 3, torch.rand(8, 32) * 4
    inside = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # zero padding lowers the border's variance
    assert modulated_conv2d(x, weight, styles)[inside].std().item() == pytest.approx(1.0, abs=0.03)
    assert modulated_conv2d(x, weight, styles, demodulate=False)[inside].std().item() > 5


# --- the generator ---------------------------------------------------------------------------


def test_style_mixing_happens_only_in_training_mode(tmp_path):
    G = generator(tmp_path, style_mixing=1.0)
    z, y = torch.randn(6, 32), torch.arange(6) % 4
    w = G.mapping(z, y)[:, None]
    torch.manual_seed(0)
    mixed = G.train().styles(z, y)
    assert torch.allclose(mixed[:, :1], w[:, :1]) and not torch.allclose(mixed[:, -1:], w[:, -1:])  # a crossover then a second w
    assert torch.allclose(G.eval().styles(z, y), w.expand_as(mixed))  # eval: one w everywhere
    unmixed = generator(tmp_path, style_mixing=0.0).train()
    assert torch.allclose(unmixed.styles(z, y), unmixed.mapping(z, y)[:, None].expand_as(mixed))


def test_w_avg_tracks_the_mean_w_per_class_in_training_only(tmp_path):
    G = generator(tmp_path)
    z, y = torch.randn(64, 32), torch.tensor([0, 2] * 32)
    G.eval()(z, y)
    assert not G.w_avg.any()
    G.train()
    for _ in range(3):
        G(z, y)
    w = G.mapping(z, y)
    beta = 0.995**3
    assert torch.allclose(G.w_avg[0], (1 - beta) * w[y == 0].mean(0), atol=1e-5)
    assert torch.allclose(G.w_avg[2], (1 - beta) * w[y == 2].mean(0), atol=1e-5)
    assert not G.w_avg[1].any() and not G.w_avg[3].any()  # classes not in the batch stay put


# --- through the loop: 28 px grayscale (resume) and 32 px RGB (noise, truncation, sample) --------


@pytest.fixture(scope="module")
def rgb_run(four_classes, tmp_path_factory):
    out = tmp_path_factory.mktemp("stylegan-rgb")
    recipe = tiny_recipe(four_classes, out, **{**STYLEGAN, "loss": {"type": "hinge", "r1_gamma": 0.1, "r1_every": 2}},
                         data={"image_size": 32, "channels": 3},
                         train={**FAST, "steps": 10, "checkpoint_every": 10, "sample_every": 10, "log_every": 5})
    return train(recipe).run_dir


def test_stylegan_trains_at_28_px_and_resumes_bit_exactly(four_classes, tmp_path):
    sections = dict(STYLEGAN, train={**FAST, "steps": 4, "checkpoint_every": 2, "sample_every": 4, "diffaugment": ["translation"]})
    whole = train(tiny_recipe(four_classes, tmp_path / "a", **sections))
    train(tiny_recipe(four_classes, tmp_path / "b", **{**sections, "train": {**sections["train"], "steps": 2}}))
    resumed = train(tiny_recipe(four_classes, tmp_path / "b", **sections), resume=True)
    assert resumed.step == 4
    tensors = final_tensors(whole.run_dir)
    assert_same_tensors(tensors, final_tensors(resumed.run_dir))
    assert tensors["G/w_avg"].abs().sum() > 0 and torch.equal(tensors["G/w_avg"], tensors["G_ema/w_avg"])  # saved, and copied to the EMA


def test_rgb_run_saves_the_tracked_mean_and_samples_with_w_truncation(rgb_run, tmp_path):
    checkpoint = latest_checkpoint(rgb_run)
    w_avg = load_file(checkpoint.path / "G_ema.safetensors")["w_avg"]
    assert w_avg.shape == (4, 32) and (w_avg[0] - w_avg[1]).abs().sum() > 0  # one mean per class
    sampler = TrainedGenerator(rgb_run)
    seeds = list(range(8))
    free = sampler.generate(0, seeds, None).float()
    tight = sampler.generate(0, seeds, 0.05).float()
    assert tight.shape == (8, 3, 32, 32)
    assert tight.std(dim=0).mean() < 0.2 * free.std(dim=0).mean()  # close to one image: the class's mean w
    at_1 = sampler.generate(0, seeds, 1.0).int() - sampler.generate(0, seeds, None).int()
    assert at_1.abs().max() <= 1  # psi = 1: w itself (up to float rounding of w_avg + (w - w_avg))
    result = sample_dataset(sampler, plan_balanced(sampler, 3), tmp_path, seed=1, truncation=0.7, batch_size=4)
    assert result.written == {name: 3 for name in sampler.class_names}


def test_truncation_psi_0_is_the_class_mean_image_for_every_z(rgb_run):
    G = TrainedGenerator(rgb_run).generator
    z = torch.randn(5, 32)
    for c in range(4):
        y = torch.full((5,), c)
        G.truncation = 0.0
        images = G(z, y)
        mean_image = G.synthesis(G.w_avg[y][:, None].expand(-1, G.num_ws, -1))
        # 1e-5: the batch's rows go through per-sample (grouped) convolutions whose float32 rounding differs by row
        # on some CPUs (measured 1.3e-6 to 1.8e-6 on an AMD EPYC model 17; under 1e-6 on the Xeon model 207 where it was written).
        assert torch.allclose(images, mean_image, atol=1e-5) and torch.allclose(images, images[:1].expand_as(images), atol=1e-5)
        G.truncation = 1.0
        truncated_at_1 = G(z, y)
        G.truncation = None
        assert torch.allclose(truncated_at_1, G(z, y), atol=1e-5)


def test_noise_changes_detail_not_layout(rgb_run):
    """Two noise draws for the same w: the same layout (4x4 means), different fine detail, unlike another z."""
    G = TrainedGenerator(rgb_run).generator
    for conv in G.convs:  # a moderate strength in every layer: a 10-step run's have barely left 0
        conv.noise_strength.data.fill_(0.1)
    G.noise_mode = "random"
    torch.manual_seed(0)
    z, y = torch.randn(16, 32), torch.arange(16) % 4
    a, b = G(z, y), G(z, y)
    other = G(torch.randn(16, 32), y)  # another z: another layout
    low = lambda x: F.avg_pool2d(x, 8)  # noqa: E731 - the 4x4 layout
    high = lambda x: x - F.interpolate(low(x), scale_factor=8.0, mode="nearest")  # noqa: E731 - the detail
    low_share = (low(a) - low(b)).abs().mean() / (low(a) - low(other)).abs().mean()
    high_share = (high(a) - high(b)).abs().mean() / (high(a) - high(other)).abs().mean()
    assert low_share < 0.25 and high_share > 2 * low_share  # (measured: 0.15 and 0.58)
    assert (high(a) - high(b)).abs().mean() > 0.01 and torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.8
    G.noise_mode = None  # eval: the fixed noise buffers, so an image depends on its seed alone
    assert torch.equal(G(z, y), G(z, y))


def test_bf16_autocast_and_channels_last_forward_and_backward(tmp_path):
    G = generator(tmp_path, size=32, channels=3).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = G(torch.randn(2, 32), torch.tensor([0, 3]))
    images.float().square().mean().backward()
    assert images.shape == (2, 3, 32, 32) and all(p.grad is not None and p.grad.isfinite().all() for p in G.parameters())


# --- the recipe ------------------------------------------------------------------------------


def test_unknown_backbone_is_one_line_listing_the_registry(tmp_path):
    with pytest.raises(SynthgenError, match=r"^recipe: model.backbone: unknown backbone \(known: dcgan, [^)]*stylegan[^)]*\) \(got .stylegn.\)$"):
        validate({"model": {"backbone": "stylegn"}})
    recipe = load_recipe("stylegan", [f"data.root={tmp_path}"])
    assert recipe.model.backbone == "stylegan" and recipe.model.style_mixing == 0.9 and recipe.data.image_size == 64
