"""Pieces shared by the image-to-image models (U-Net, ResNet translator, PatchGAN)."""

from __future__ import annotations

from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """instance: each image normalised alone (no running statistics, the same output in any batch); batch: BN."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels)


def conv_bias(kind: str) -> bool:
    # Batch norm has its own shift; instance norm without affine needs the convolution's bias (as in pix2pix).
    return kind == "instance"


def init_weights(module: nn.Module) -> nn.Module:
    """pix2pix / CycleGAN init: conv weights N(0, 0.02), norm gains N(1, 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
    return module
