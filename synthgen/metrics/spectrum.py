"""High-frequency spectrum ratios: how much more fine pattern a set of images has than real ones, on the axes and off.

GAN generators leave their upsampling's fingerprint in the Fourier spectrum (Durall et al. 2020, "Watch your
up-convolution"; Dzanic et al. 2020): a transposed convolution's checkerboard sits at the diagonal frequencies,
and stripes that run the whole width or height of an image sit on the axes of the spectrum (one of the two
frequencies zero). A mean over all directions of the spectrum (Durall's azimuthal average) hides such stripes, so
this compares the axes with the rest directly.

For each image the magnitude of its 2-D DFT (grey, mean removed) is taken and averaged over the set. At the high
frequencies (|k| >= a quarter of the side, half the Nyquist frequency and above) the ratio images / reference is
averaged on the axes and off them. Real images against other real images of the same kind give about 1 for both;
blurred images give less than 1 for both; whole-length stripes raise the axes' ratio above 1, a checkerboard the
off-axis one. Not a ratio of the two: a blur lowers the off-axis frequencies (further from zero) more than the
axes', so their quotient would call a blur stripes.
"""

from __future__ import annotations

import torch


def mean_spectrum(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float) images [N, C, H, W] -> the mean DFT magnitude of their grey, mean-removed version [H, W]."""
    grey = images.double().mean(dim=1)
    grey = grey - grey.mean(dim=(1, 2), keepdim=True)
    return torch.fft.fft2(grey).abs().mean(dim=0)


def high_frequency_masks(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(on the axes, off the axes) among the frequencies with |k| >= a quarter of the side in the direction(s) that vary."""
    ky, kx = (torch.minimum(torch.arange(n), n - torch.arange(n)) for n in (height, width))
    high_y, high_x = ky[:, None] >= height / 4, kx[None, :] >= width / 4
    axes = (high_y & (kx[None, :] == 0)) | ((ky[:, None] == 0) & high_x)
    return axes, high_y & high_x


def high_frequency_ratios(images: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(on the axes, off the axes): the mean high-frequency spectrum ratio images / reference (1: like the reference)."""
    if images.shape[-2:] != reference.shape[-2:]:
        raise ValueError(f"high_frequency_ratios: images {tuple(images.shape[-2:])} and reference {tuple(reference.shape[-2:])} differ in size")
    ratio = mean_spectrum(images) / mean_spectrum(reference).clamp_min(1e-12)
    axes, off_axes = high_frequency_masks(*images.shape[-2:])
    return float(ratio[axes].mean()), float(ratio[off_axes].mean())
