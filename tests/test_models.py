"""Every backbone and conditioning builds and runs at every supported size, 1 or 3 channels."""

from __future__ import annotations

import pytest
import torch

from synthgen.losses import LOSSES, gradient_penalty
from synthgen.models.conditioning import build_models
from synthgen.models.dcgan import upsampling
from synthgen.models.layers import resolution_plan
from synthgen.recipe import validate


@pytest.mark.parametrize("size", [28, 32, 48, 64, 128])
@pytest.mark.parametrize("backbone,upsample", [("dcgan", "transposed"), ("dcgan", "resize"), ("dcgan", "bilinear"), ("resnet", "transposed")])
@pytest.mark.parametrize("channels,conditioning", [(1, "acgan"), (3, "projection"), (3, "concat")])
def test_generator_and_discriminator_shapes(size, backbone, upsample, channels, conditioning):
    recipe = validate({
        "data": {"image_size": size, "channels": channels},
        "model": {"backbone": backbone, "g_upsample": upsample, "g_channels": 8, "d_channels": 8, "z_dim": 16, "pack": 2, "minibatch_std": True},
        "conditioning": {"type": conditioning},
    })
    generator, discriminator = build_models(recipe, num_classes=3)
    y = torch.tensor([0, 1, 2, 1])
    images = generator(torch.randn(4, 16), y)
    assert images.shape == (4, channels, size, size) and images.abs().max() <= 1
    logits, classes = discriminator(images, y)
    assert logits.shape == (2,)  # packed in pairs
    assert (classes is not None) == (conditioning == "acgan")
    if classes is not None:
        assert classes.shape == (2, 2, 3)


def test_resize_upsampling_lays_no_checkerboard_on_a_flat_input():
    """Odena et al. 2016: a stride-2 transposed convolution reads different kernel taps at even and odd output
    pixels, so even a flat input comes out with a period-2 pattern; resize-then-convolve cannot do that."""
    torch.manual_seed(0)
    flat = torch.ones(1, 4, 8, 8)
    for kind, patterned in (("transposed", True), ("resize", False), ("bilinear", False)):
        out = upsampling(4, 4, kind, sn=False)(flat)[..., 2:-2, 2:-2]  # the interior: borders are padding's business
        spread = (out - out.mean(dim=(2, 3), keepdim=True)).abs().max().item()
        assert (spread > 1e-3) == patterned, (kind, spread)


def test_unsupported_sizes_name_the_rule():
    assert resolution_plan(28) == (7, 2) and resolution_plan(128) == (4, 5) and resolution_plan(96) == (6, 4)
    for bad in (30, 36, 100):
        with pytest.raises(ValueError, match="base"):
            resolution_plan(bad)


def test_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    minimax_d = -(torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    assert torch.allclose(LOSSES["minimax"].discriminator(real, fake), minimax_d)
    assert torch.allclose(LOSSES["minimax"].generator(fake), torch.log(1 - sig(fake)).mean())
    assert torch.allclose(LOSSES["ns"].generator(fake), -torch.log(sig(fake)).mean())
    assert torch.allclose(LOSSES["hinge"].discriminator(real, fake), torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    assert torch.allclose(LOSSES["lsgan"].discriminator(real, fake), 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean())
    assert torch.allclose(LOSSES["wgan-gp"].discriminator(real, fake), fake.mean() - real.mean())
    assert LOSSES["wgan-gp"].default_gp_weight == 10 and LOSSES["hinge"].default_gp_weight == 0


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    critic = lambda x: x.flatten(1).sum(1) / x[0].numel() ** 0.5  # noqa: E731 - gradient norm exactly 1
    real, fake = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 5, 5)
    assert gradient_penalty(critic, real, fake).item() < 1e-10
    steeper = lambda x: 3 * critic(x)  # noqa: E731
    assert abs(gradient_penalty(steeper, real, fake).item() - 4.0) < 1e-5
