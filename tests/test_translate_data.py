"""Translation data and helpers: pair discovery and its errors, aligned augmentation, padding, modes, SSIM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthgen.data.pairs import discover_paired, discover_unpaired
from synthgen.data.translation import TranslationBatches, load_paired, load_unpaired
from synthgen.errors import SynthgenError
from synthgen.recipe import validate
from synthgen.translate import Original, image_scores, output_mode, pad_to_multiple, to_original_mode


def images(fashion: Path, n: int, cls: str = "Coat") -> list[Image.Image]:
    return [Image.open(p).convert("L") for p in sorted((fashion / cls).glob("*.png"))[:n]]


def data_cfg(root: Path, **keys):
    return validate({"method": "pix2pix", "loss": {"type": "lsgan"}, "data": {"root": str(root), "image_size": 32, **keys}}).data


# --- discovery -------------------------------------------------------------------------


def test_paired_folders_match_by_name_across_extensions_and_subfolders(tmp_path, fashion_test_split):
    pictures = images(fashion_test_split, 3)
    for i, image in enumerate(pictures):
        (tmp_path / "A" / "sub").mkdir(parents=True, exist_ok=True), (tmp_path / "B" / "sub").mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "A" / "sub" / f"{i}.png")
        image.convert("RGB").save(tmp_path / "B" / "sub" / f"{i}.jpg")
    found = discover_paired(tmp_path)
    assert [p.name for p in found.pairs] == ["sub/0", "sub/1", "sub/2"]
    assert all(p.b.suffix == ".jpg" for p in found.pairs)
    data = load_paired(data_cfg(tmp_path))
    assert data.channels == {"A": 1, "B": 3}  # channels decided per side
    assert data.a.shape == (3, 1, 36, 36)  # loaded at 32 * jitter 1.117, cropped to 32 per step


def test_partners_missing_on_both_sides_are_listed_in_one_error_or_skipped(tmp_path, fashion_test_split):
    pictures = images(fashion_test_split, 4)
    for name, image in zip("wxy", pictures):
        (tmp_path / "A").mkdir(exist_ok=True), image.save(tmp_path / "A" / f"{name}.png")
    for name, image in zip("wxz", pictures):
        (tmp_path / "B").mkdir(exist_ok=True), image.save(tmp_path / "B" / f"{name}.png")
    with pytest.raises(SynthgenError) as info:
        discover_paired(tmp_path)
    message = str(info.value)
    assert "2 files without a partner" in message and "A/y.png (no B/y.*)" in message and "B/z.png (no A/z.*)" in message
    assert "data.on_mismatch: skip" in message and "\n" not in message
    found = discover_paired(tmp_path, on_mismatch="skip")
    assert [p.name for p in found.pairs] == ["w", "x"] and len(found.skipped) == 2


def test_two_files_with_one_name_are_an_error(tmp_path, fashion_test_split):
    image = images(fashion_test_split, 1)[0]
    for side in "AB":
        (tmp_path / side).mkdir()
        image.save(tmp_path / side / "x.png")
    image.save(tmp_path / "A" / "x.jpg")
    with pytest.raises(SynthgenError, match="x.jpg and x.png have the same name|x.png and x.jpg have the same name"):
        discover_paired(tmp_path)


def test_layout_errors_say_what_was_expected(tmp_path):
    (tmp_path / "trainA").mkdir()
    with pytest.raises(SynthgenError, match="unpaired layout.*cyclegan"):
        discover_paired(tmp_path)
    with pytest.raises(SynthgenError, match="no images in trainA/"):
        discover_unpaired(tmp_path)
    with pytest.raises(SynthgenError, match="no pairs found"):
        discover_paired(tmp_path / "trainA")
    with pytest.raises(SynthgenError, match="data.root: not set"):
        discover_paired("")


def test_isbi_membrane_labels_and_images_pair_up_with_named_side_folders():
    root = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "isbi2012-membrane" / "train"
    if not root.is_dir():
        pytest.skip(f"{root} absent (the shared datasets are not on this machine)")
    data = load_paired(data_cfg(root, dir_a="label", dir_b="image", image_size=64, jitter=1.0))
    assert len(data.a) == 30 and data.channels == {"A": 1, "B": 1}
    assert set(data.a.unique().tolist()) - {0, 255} and data.a.float().std() > data.b.float().std()  # resized masks vs EM
    with pytest.raises(SynthgenError, match=r"no pairs found; expected A/ and B/.*found image/, label/: name the sides with data.dir_a"):
        discover_paired(root)  # without the folder names: not mistaken for side-by-side pairs


def test_side_by_side_images_split_into_a_and_b(tmp_path, fashion_test_split):
    left, right = images(fashion_test_split, 2)
    joined = Image.new("L", (56, 28))
    joined.paste(left, (0, 0)), joined.paste(right, (28, 0))
    joined.save(tmp_path / "ab.png")
    data = load_paired(data_cfg(tmp_path, jitter=1.0, resize="stretch"))
    expected = [torch.from_numpy(np.array(im.resize((32, 32), Image.Resampling.LANCZOS))) for im in (left, right)]
    assert torch.equal(data.a[0, 0], expected[0]) and torch.equal(data.b[0, 0], expected[1])


def test_unpaired_domains_with_test_images(tmp_path, fashion_test_split):
    for folder, cls in (("trainA", "Sneaker"), ("trainB", "Sandal"), ("testA", "Sneaker")):
        (tmp_path / folder).mkdir()
        for i, image in enumerate(images(fashion_test_split, 5, cls)):
            image.save(tmp_path / folder / f"{i}.png")
    data = load_unpaired(data_cfg(tmp_path))
    assert (len(data.a), len(data.b), len(data.test_a)) == (5, 5, 5)
    assert data.test_a.shape[-1] == 32 and len(data.test_b) == 5  # no testB/: training images stand in


# --- augmentation ---------------------------------------------------------------------------


def test_both_sides_of_a_pair_get_the_same_crop_and_flip(tmp_path, fashion_test_split):
    """B is A in RGB: after random resize-crop jitter and flips they must still be the same picture."""
    for i, image in enumerate(images(fashion_test_split, 8)):
        for side in "AB":
            (tmp_path / side).mkdir(exist_ok=True)
        image.save(tmp_path / "A" / f"{i}.png")
        image.convert("RGB").save(tmp_path / "B" / f"{i}.png")
    data = load_paired(data_cfg(tmp_path, jitter=1.5, hflip=True))
    batches = TranslationBatches(data, batch_size=16, hflip=True, seed=0)
    a, b = batches.pairs(step=3, device=torch.device("cpu"))
    assert a.shape == (16, 1, 32, 32) and b.shape == (16, 3, 32, 32)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1 / 127.5)  # L and R of a gray image: equal within rounding
    centre = data.a[:, 0, 8:40, 8:40].float() / 127.5 - 1
    assert not all(any(torch.equal(x, c) for c in centre) for x in a[:, 0]), "no crop ever moved"
    again, _ = batches.pairs(step=3, device=torch.device("cpu"))
    assert torch.equal(a, again)  # a function of (seed, step): a resumed run draws the same


# --- sizes and modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(333, 517), (5, 300), (1, 7), (64, 64)])
def test_padding_reaches_the_stride_by_reflection(h, w):
    x = torch.randn(1, 3, h, w)
    padded = pad_to_multiple(x, 32)
    assert padded.shape[-2] % 32 == 0 and padded.shape[-1] % 32 == 0
    assert torch.equal(padded[..., :h, :w], x)  # the image itself is untouched at the top left


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "I;16"])
def test_outputs_come_back_in_the_original_mode(mode):
    alpha = Image.linear_gradient("L").resize((20, 10))
    original = Original(mode, alpha if "A" in mode else None)
    output = torch.randint(0, 256, (1, 10, 20), dtype=torch.uint8)
    image = to_original_mode(output, original, in_channels=1, out_channels=1)
    assert (image.mode, image.size) == (mode, (20, 10))
    if "A" in mode:
        assert image.getchannel("A").tobytes() == alpha.tobytes()


def test_a_network_that_adds_colour_decides_the_colour():
    assert output_mode("L", gray=False) == "RGB"  # edges (gray) -> photo (RGB): the photo keeps its colour
    assert output_mode("LA", gray=False) == "RGBA"
    assert output_mode("RGBA", gray=True) == "LA"
    assert output_mode("P", gray=False) == "P"


# --- scores ------------------------------------------------------------------------------------


def test_image_scores_ssim_matches_scikit_image(fashion_test_split):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a, b = (torch.from_numpy(np.asarray(image))[None] for image in images(fashion_test_split, 2))
    noisy = (a.double() + 25 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).clamp(0, 255).round().byte()
    for other in (noisy, b, a):
        expected = skimage_metrics.structural_similarity(
            a[0].double().numpy(), other[0].double().numpy(), data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert image_scores(other, a).ssim == pytest.approx(expected, abs=1e-6)


def test_images_smaller_than_the_window_are_scored_with_a_smaller_one():
    image = torch.randint(0, 256, (1, 6, 9), dtype=torch.uint8)
    other = torch.randint(0, 256, (1, 6, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert image_scores(image, image).ssim == pytest.approx(1.0) and image_scores(other, image).ssim < 0.5


def test_identical_images_score_perfectly():
    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    scores = image_scores(image, image)
    assert scores.l1 == 0 and scores.ssim == pytest.approx(1.0) and scores.psnr >= 99


