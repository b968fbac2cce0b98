"""The translation networks match the reference implementations and run at any multiple of their stride."""

from __future__ import annotations

import pytest
import torch

from synthgen.models.patchgan import build_patch_discriminator
from synthgen.models.registry import build_translator
from synthgen.models.resnet_translator import upsampling
from synthgen.models.unet import unet_depth
from synthgen.recipe import validate


def model_cfg(**keys):
    return validate({"method": "pix2pix", "loss": {"type": "lsgan"}, "model": keys}).model


def millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 3)


def test_parameter_counts_equal_the_papers_code():
    """The counts pytorch-CycleGAN-and-pix2pix prints: unet_256 54.414 M, basic D 2.769 M (pix2pix, batch norm);
    resnet_9blocks 11.378 M, basic D 2.765 M (CycleGAN, instance norm)."""
    pix2pix = model_cfg(norm="batch")
    assert millions(build_translator(pix2pix, 256, 3, 3)) == 54.414
    assert millions(build_patch_discriminator(pix2pix, 6)) == 2.769
    cyclegan = model_cfg(norm="instance", translator="resnet", n_blocks=9)
    assert millions(build_translator(cyclegan, 256, 3, 3)) == 11.378
    assert millions(build_patch_discriminator(cyclegan, 3)) == 2.765


def test_the_70x70_patchgan_gives_a_30x30_map_at_256_px():
    assert build_patch_discriminator(model_cfg(), 6)(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("translator,size,in_channels,out_channels,upsample", [
    ("unet", 32, 1, 3, "transposed"), ("unet", 96, 3, 1, "transposed"), ("resnet", 28, 3, 3, "transposed"), ("resnet", 28, 1, 1, "resize"), ("resnet", 28, 1, 1, "bilinear"),
])
def test_translators_keep_the_size_at_any_multiple_of_their_stride(translator, size, in_channels, out_channels, upsample):
    cfg = model_cfg(translator=translator, g_channels=8, n_blocks=2, g_upsample=upsample)
    G = build_translator(cfg, size, in_channels, out_channels).eval()
    for height, width in ((size, size), (G.stride * 3, G.stride * 5)):
        y = G(torch.randn(2, in_channels, height, width))
        assert y.shape == (2, out_channels, height, width) and y.abs().max() <= 1


def test_recipes_refuse_what_the_translators_cannot_do(tmp_path):
    from synthgen.errors import SynthgenError
    from synthgen.recipe import load_recipe

    with pytest.raises(SynthgenError, match="data.image_size: the unet translator .* multiple of 8 \\(got 28\\)"):
        load_recipe("pix2pix", ["data.image_size=28"])
    with pytest.raises(SynthgenError, match="loss.type: cyclegan uses lsgan or ns \\(got hinge\\)"):
        load_recipe("cyclegan", ["loss.type=hinge"])
    with pytest.raises(SynthgenError, match="train.batch_size: cgan needs at least 2"):
        load_recipe("acgan", ["train.batch_size=1"])
    assert load_recipe("cyclegan", ["data.image_size=28"]).data.image_size == 28  # the resnet translator's stride is 4


def test_unet_depth_follows_the_training_size():
    assert [unet_depth(s) for s in (256, 128, 32, 96, 28)] == [8, 7, 5, 5, 2]
    with pytest.raises(ValueError, match="at least 3 halvings"):
        build_translator(model_cfg(), 28, 1, 1)


@pytest.mark.parametrize("kind, even", [("transposed", False), ("resize", True), ("bilinear", True)])
def test_only_the_resize_upsampling_spreads_a_flat_input_evenly(kind, even):
    """Odena et al. 2016: a 3x3 kernel at stride 2 overlaps unevenly, so even a flat input and flat weights come out as a
    checkerboard (inner pixels summing 4, 2 or 1 taps); a resize then a convolution gives one value everywhere inside."""
    layers = torch.nn.Sequential(*upsampling(1, 1, kind, bias=False))
    for layer in layers:
        if hasattr(layer, "weight"):
            torch.nn.init.ones_(layer.weight)
    with torch.no_grad():
        inner = layers(torch.ones(1, 1, 8, 8))[0, 0, 2:-2, 2:-2]
    assert layers(torch.ones(1, 1, 8, 8)).shape[-2:] == (16, 16)
    assert bool((inner == inner[0, 0]).all()) == even, inner


def test_nearest_resize_copies_pixels_into_blocks_and_bilinear_interpolates():
    """model.g_upsample resize copies each pixel into a 2x2 block, whose edges on a 2-pixel grid are what a G can build
    axis-aligned stripes from; bilinear spreads each step between pixels over two, so its largest step is half as big."""
    from synthgen.models.layers import doubling

    x = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    nearest, bilinear = doubling("resize")(x), doubling("bilinear")(x)
    assert nearest.shape == bilinear.shape == (1, 1, 14, 14)
    assert torch.equal(nearest[..., ::2, ::2], nearest[..., 1::2, 1::2]) and torch.equal(nearest[..., ::2, ::2], x)
    largest_step = lambda y: y.diff(dim=-1).abs().max()  # noqa: E731
    assert largest_step(bilinear) <= 0.5 * largest_step(nearest) + 1e-6
