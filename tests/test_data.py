"""Tests for reading labelled image folders: discovery, decoding, the tensor cache, `auto`, inspect."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import synthgen.data.loading as loading
from synthgen.data.folders import discover_labelled
from synthgen.data.inspect import inspect_folder
from synthgen.data.loading import load_labelled, resolve_auto
from synthgen.errors import SynthgenError
from synthgen.imaging import ALPHA_BACKGROUND
from tests.cli import synthgen

REPO = Path(__file__).resolve().parents[1]
SYNTHGEN = Path(sys.executable).with_name("synthgen")
FLOWERS5 = Path(__file__).resolve().parents[2] / "shared/datasets/flowers5"

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own tensor cache (never the user's ~/.cache)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYNTHGEN_CACHE", str(cache))
    return cache


def save(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def solid(color, size=(12, 12), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def three_bands(width=60, height=20) -> Image.Image:
    """A wide image: blue left third, red centre third, green right third."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 3] = BLUE
    array[:, width // 3 : 2 * width // 3] = RED
    array[:, 2 * width // 3 :] = GREEN
    return Image.fromarray(array)


def single(root: Path, size: int, channels: int, resize: str = "crop") -> torch.Tensor:
    """Load a one-image folder and return the image [C, H, W]."""
    data = load_labelled(root, size, channels, resize)
    assert data.images.shape == (1, channels, size, size)
    return data.images[0]


def near(pixel: torch.Tensor, color, tol: int = 12) -> bool:
    return all(abs(int(v) - c) <= tol for v, c in zip(pixel.tolist(), color))


# --- decoding: modes, formats, sizes -----------------------------------------------


def mode_images() -> dict[str, Image.Image]:
    """One image per PIL mode, all of them white (or opaque white) everywhere."""
    p = Image.new("P", (21, 13), 3)
    p.putpalette([0, 0, 0] * 3 + [255, 255, 255] + [0, 0, 0] * 252)
    return {
        "L": solid(255, (21, 13), "L"),
        "LA": solid((255, 255), (21, 13), "LA"),
        "RGB": solid((255, 255, 255), (21, 13)),
        "RGBA": solid((255, 255, 255, 255), (21, 13), "RGBA"),
        "P": p,
        "I;16": Image.fromarray(np.full((13, 21), 65535, np.uint16)),
        "1": solid(1, (21, 13), "1"),
    }


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resize", ["crop", "pad", "stretch"])
def test_every_mode_becomes_uint8_of_the_asked_shape(tmp_path, channels, resize):
    root = tmp_path / "modes"
    for mode, image in mode_images().items():
        assert image.mode == mode
        save(root / f"{mode.replace(';', '_')}.png", image)
    data = load_labelled(root, 16, channels, resize)
    assert data.images.dtype == torch.uint8
    assert data.images.shape == (7, channels, 16, 16)
    assert data.labels.dtype == torch.int64
    assert data.labels.tolist() == [0] * 7
    assert data.unreadable == []
    if resize == "pad":  # 21x13 padded to square: black bands above and below
        assert data.images[:, :, 0, :].max() == 0
        assert data.images[:, :, -1, :].max() == 0
        assert data.images[:, :, 8, 8].min() == 255
    else:  # every image is white all over
        assert data.images.min() >= 250, data.images.amin(dim=(1, 2, 3))


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "webp", "tif"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_format_decodes(tmp_path, ext, mode):
    color = 200 if mode == "L" else (200, 40, 90)
    root = tmp_path / ext
    save(root / f"a.{ext}", solid(color, (33, 17), mode))
    for channels in (1, 3):
        image = single(root, 16, channels, "stretch")
        expected = (200,) * 3 if mode == "L" else (200, 40, 90)
        if channels == 1:
            gray = 200 if mode == "L" else round(0.299 * 200 + 0.587 * 40 + 0.114 * 90)
            assert near(image[:, 8, 8], (gray,), tol=6), image[:, 8, 8]
        else:
            assert near(image[:, 8, 8], expected, tol=6), image[:, 8, 8]


def test_uppercase_extensions_are_images(tmp_path):
    save(tmp_path / "d" / "A.PNG", solid(RED))
    save(tmp_path / "d" / "b.JPEG", solid(RED), format="JPEG")
    assert len(discover_labelled(tmp_path / "d").files) == 2


def test_crop_keeps_the_centre(tmp_path):
    save(tmp_path / "wide" / "a.png", three_bands())
    image = single(tmp_path / "wide", 16, 3, "crop")
    assert near(image[:, 8, 8], RED)
    for y, x in [(0, 0), (0, 15), (15, 0), (15, 15)]:  # only the centre third is left
        assert near(image[:, y, x], RED), (y, x, image[:, y, x])


def test_crop_of_a_tall_image_keeps_the_centre(tmp_path):
    save(tmp_path / "tall" / "a.png", three_bands().transpose(Image.Transpose.ROTATE_90))
    image = single(tmp_path / "tall", 16, 3, "crop")
    assert near(image[:, 0, 8], RED) and near(image[:, 15, 8], RED)


def test_pad_letterboxes_in_black(tmp_path):
    save(tmp_path / "wide" / "a.png", three_bands())
    image = single(tmp_path / "wide", 16, 3, "pad")
    assert image[:, 0, :].max() == 0 and image[:, 15, :].max() == 0  # the short side is padded
    assert near(image[:, 8, 8], RED)
    assert near(image[:, 8, 0], BLUE) and near(image[:, 8, 15], GREEN)  # the long side is kept whole


def test_stretch_keeps_all_content(tmp_path):
    save(tmp_path / "wide" / "a.png", three_bands())
    image = single(tmp_path / "wide", 16, 3, "stretch")
    for y in (0, 8, 15):  # no black bands
        assert near(image[:, y, 0], BLUE) and near(image[:, y, 8], RED) and near(image[:, y, 15], GREEN)


@pytest.mark.parametrize("resize", ["crop", "pad", "stretch"])
def test_odd_sizes_reach_the_asked_size(tmp_path, resize):
    save(tmp_path / "odd" / "a.png", solid(GREEN, (33, 17)))
    save(tmp_path / "odd" / "b.png", solid(GREEN, (17, 33)))
    save(tmp_path / "odd" / "c.png", solid(GREEN, (7, 5)))  # smaller than the target: upscaled
    data = load_labelled(tmp_path / "odd", 28, 3, resize)
    assert data.images.shape == (3, 3, 28, 28)
    assert all(near(data.images[i, :, 14, 14], GREEN) for i in range(3))


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_white_is_255_and_mid_grey_is_half(tmp_path, ext):
    array = np.full((10, 10), 65535, np.uint16)
    array[:, 5:] = 32768
    save(tmp_path / "deep" / f"a.{ext}", Image.fromarray(array))
    image = single(tmp_path / "deep", 10, 1, "stretch")
    assert image[0, 5, 0] == 255
    assert abs(int(image[0, 5, 9]) - 128) <= 2


def test_16_bit_dark_image_stays_dark(tmp_path):
    # A dark 16-bit image must not be read as if it were 8-bit (max 200 of 65535 is black).
    save(tmp_path / "dark" / "a.png", Image.fromarray(np.full((8, 8), 200, np.uint16)))
    assert single(tmp_path / "dark", 8, 1)[0].max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_transparent_pixels_become_the_alpha_background(tmp_path, channels):
    array = np.zeros((12, 12, 4), np.uint8)
    array[:, :, 0] = 255  # red ...
    array[:, 6:, 3] = 255  # ... opaque on the right half only; the left half is transparent (black, alpha 0)
    save(tmp_path / "alpha" / "a.png", Image.fromarray(array, "RGBA"))
    image = single(tmp_path / "alpha", 12, channels, "stretch")
    background = ALPHA_BACKGROUND if channels == 3 else (255,)
    assert tuple(image[:, 6, 0].tolist()) == background
    if channels == 3:
        assert tuple(image[:, 6, 11].tolist()) == RED
    else:
        assert abs(int(image[0, 6, 11]) - 76) <= 2  # red in grayscale (L = 0.299 R)


def test_transparent_gray_and_palette_pixels_become_white(tmp_path):
    la = np.zeros((8, 8, 2), np.uint8)  # black, fully transparent
    save(tmp_path / "a" / "la.png", Image.fromarray(la, "LA"))
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    save(tmp_path / "a" / "p.png", p, transparency=0)
    data = load_labelled(tmp_path / "a", 8, 3, "stretch")
    assert data.images.min() == 255


def test_one_bit_images_are_black_and_white(tmp_path):
    image = Image.new("1", (8, 8), 0)
    for x in range(4, 8):
        for y in range(8):
            image.putpixel((x, y), 1)
    save(tmp_path / "bits" / "a.png", image)
    save(tmp_path / "bits" / "b.bmp", image)
    data = load_labelled(tmp_path / "bits", 8, 1, "stretch")
    assert data.images.shape == (2, 1, 8, 8)
    assert (data.images[:, 0, :, :4] == 0).all()
    assert (data.images[:, 0, :, 4:] == 255).all()


def test_exact_size_images_are_not_resampled(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    save(tmp_path / "exact" / "a.png", Image.fromarray(array))
    image = single(tmp_path / "exact", 16, 3)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), array)


# --- classes -----------------------------------------------------------------------


def make_classes(root: Path, counts: dict[str, int], size=(12, 12), mode="RGB") -> Path:
    colors = [RED, GREEN, BLUE, (255, 255, 0), (0, 255, 255)]
    for i, (name, n) in enumerate(counts.items()):
        for j in range(n):
            color = colors[i % len(colors)] if mode == "RGB" else 40 * (i + 1)
            save(root / name / f"{j:03d}.png", solid(color, size, mode))
    return root


def test_class_names_are_the_sorted_subfolders_and_labels_follow(tmp_path):
    root = make_classes(tmp_path / "set", {"zebra": 2, "ant": 3, "Moth": 1})
    data = load_labelled(root, 8, 3, "crop")
    assert data.class_names == ["Moth", "ant", "zebra"]  # sorted, as on disk
    assert data.class_counts() == [1, 3, 2]
    assert len(data) == 6
    colors = {"zebra": RED, "ant": GREEN, "Moth": BLUE}
    for image, label in zip(data.images, data.labels.tolist()):
        assert near(image[:, 4, 4], colors[data.class_names[label]])


def test_a_class_may_have_nested_folders_and_hidden_things_are_skipped(tmp_path):
    root = tmp_path / "set"
    save(root / "a" / "one.png", solid(RED))
    save(root / "a" / "deeper" / "two.png", solid(RED))
    save(root / "b" / "three.png", solid(BLUE))
    save(root / "b" / ".hidden.png", solid(BLUE))
    save(root / "b" / ".thumbs" / "four.png", solid(BLUE))
    save(root / ".trash" / "five.png", solid(BLUE))
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "empty-class").mkdir()
    found = discover_labelled(root)
    assert found.class_names == ["a", "b"]
    assert [p.name for p in found.files] == ["two.png", "one.png", "three.png"]
    assert found.labels == [0, 0, 1]
    assert found.conditional


def test_a_folder_of_images_is_one_class_named_after_it(tmp_path):
    root = tmp_path / "cats"
    for i in range(3):
        save(root / f"{i}.png", solid(RED))
    data = load_labelled(root, 8, 3, "crop")
    assert data.class_names == ["cats"]
    assert data.labels.tolist() == [0, 0, 0]
    assert not discover_labelled(root).conditional


def test_loose_images_beside_class_folders_are_an_error(tmp_path):
    root = make_classes(tmp_path / "set", {"a": 1, "b": 1})
    save(root / "stray.png", solid(RED))
    with pytest.raises(SynthgenError, match="loose") as info:
        load_labelled(root, 8, 3, "crop")
    assert "stray.png" in str(info.value)
    assert str(root) in str(info.value)


def test_an_empty_folder_is_an_error_naming_it(tmp_path):
    root = tmp_path / "nothing"
    root.mkdir()
    (root / "readme.txt").write_text("no images here")
    with pytest.raises(SynthgenError, match="no images") as info:
        load_labelled(root, 8, 3, "crop")
    assert str(root) in str(info.value)


def test_a_missing_folder_is_an_error_naming_it(tmp_path):
    root = tmp_path / "not-there"
    with pytest.raises(SynthgenError) as info:
        load_labelled(root, 8, 3, "crop")
    assert str(root) in str(info.value)
    with pytest.raises(SynthgenError):
        inspect_folder(root)


def test_a_file_given_as_the_folder_is_an_error(tmp_path):
    path = save(tmp_path / "a.png", solid(RED))
    with pytest.raises(SynthgenError, match="not a folder"):
        discover_labelled(path)


def test_an_empty_root_is_not_the_current_folder(tmp_path, monkeypatch):
    make_classes(tmp_path / "here", {"a": 1})
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(SynthgenError, match="data.root"):
        discover_labelled("")


def test_a_corrupt_file_is_listed_and_skipped(tmp_path):
    root = make_classes(tmp_path / "set", {"a": 2, "b": 2})
    (root / "a" / "x.png").write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    data = load_labelled(root, 8, 3, "crop")
    assert len(data) == 4
    assert data.class_counts() == [2, 2]
    assert len(data.unreadable) == 1
    assert "x.png" in data.unreadable[0]
    # The cached copy remembers which files were unreadable.
    again = load_labelled(root, 8, 3, "crop")
    assert again.unreadable == data.unreadable


def test_a_truncated_file_is_listed_and_skipped(tmp_path):
    root = make_classes(tmp_path / "set", {"a": 2})
    good = save(tmp_path / "big.png", Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    (root / "a" / "cut.png").write_bytes(good.read_bytes()[:400])
    data = load_labelled(root, 8, 3, "crop")
    assert len(data) == 2
    assert [line.split(":")[0].endswith("cut.png") for line in data.unreadable] == [True]


def test_a_folder_of_only_corrupt_files_is_an_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(SynthgenError, match="could be read"):
        load_labelled(root, 8, 3, "crop")


# --- the cache ---------------------------------------------------------------------


class Spy:
    """Stands in for loading.load_image: counts decodes, or fails when told to."""

    def __init__(self):
        self.real = loading.load_image
        self.calls = 0
        self.fail = False

    def __call__(self, *args, **kwargs):
        if self.fail:
            raise RuntimeError("decoded although the cache should have been used")
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch):
    spy = Spy()
    monkeypatch.setattr(loading, "load_image", spy)
    return spy


def test_a_second_load_comes_from_the_cache(tmp_path, spy, private_cache):
    root = make_classes(tmp_path / "set", {"a": 3, "b": 2})
    first = load_labelled(root, 8, 3, "crop")
    assert spy.calls == 5
    assert len(list(private_cache.glob("*.safetensors"))) == 1
    spy.fail = True
    second = load_labelled(root, 8, 3, "crop")
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert second.class_names == first.class_names
    assert second.images.dtype == torch.uint8


def test_touching_a_file_re_decodes(tmp_path, spy):
    root = make_classes(tmp_path / "set", {"a": 2, "b": 2})
    first = load_labelled(root, 8, 3, "crop")
    assert spy.calls == 4
    path = root / "b" / "000.png"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    again = load_labelled(root, 8, 3, "crop")
    assert spy.calls == 8
    assert torch.equal(first.images, again.images)


def test_changing_a_file_re_decodes_with_its_new_content(tmp_path, spy):
    root = make_classes(tmp_path / "set", {"a": 2})
    load_labelled(root, 8, 3, "crop")
    path = root / "a" / "001.png"
    save(path, solid(BLUE))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    data = load_labelled(root, 8, 3, "crop")
    assert near(data.images[1, :, 4, 4], BLUE)


def test_adding_or_removing_a_file_re_decodes(tmp_path, spy):
    root = make_classes(tmp_path / "set", {"a": 2, "b": 1})
    load_labelled(root, 8, 3, "crop")
    save(root / "b" / "new.png", solid(GREEN))
    assert len(load_labelled(root, 8, 3, "crop")) == 4
    (root / "a" / "000.png").unlink()
    assert len(load_labelled(root, 8, 3, "crop")) == 3
    assert spy.calls == 3 + 4 + 3


@pytest.mark.parametrize("change", [(16, 3, "crop"), (8, 1, "crop"), (8, 3, "pad")])
def test_changing_the_settings_re_decodes(tmp_path, spy, change):
    root = make_classes(tmp_path / "set", {"a": 2}, size=(12, 6))
    load_labelled(root, 8, 3, "crop")
    assert spy.calls == 2
    data = load_labelled(root, *change)
    assert spy.calls == 4
    size, channels, _ = change
    assert data.images.shape == (2, channels, size, size)


def test_an_unwritable_cache_only_costs_a_decode(tmp_path, monkeypatch, spy):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("SYNTHGEN_CACHE", str(blocker / "cache"))
    root = make_classes(tmp_path / "set", {"a": 2})
    assert len(load_labelled(root, 8, 3, "crop")) == 2
    assert len(load_labelled(root, 8, 3, "crop")) == 2
    assert spy.calls == 4


# --- auto size and channels --------------------------------------------------------


def test_auto_grayscale_28(tmp_path):
    root = make_classes(tmp_path / "mnist", {"0": 2, "1": 2}, size=(28, 28), mode="L")
    files = discover_labelled(root).files
    assert resolve_auto(files, "auto", "auto") == (28, 1)
    data = load_labelled(root, "auto", "auto", "crop")
    assert data.images.shape == (4, 1, 28, 28)


def test_auto_rgb_100x80_is_capped_at_64(tmp_path):
    root = make_classes(tmp_path / "photos", {"a": 2}, size=(100, 80))
    files = discover_labelled(root).files
    assert resolve_auto(files, "auto", "auto") == (64, 3)
    assert load_labelled(root, "auto", "auto", "crop").images.shape == (2, 3, 64, 64)


@pytest.mark.parametrize("size, expected", [((60, 50), 48), ((50, 40), 32), ((31, 90), 28), ((20, 20), 28), ((64, 64), 64)])
def test_auto_picks_the_largest_allowed_size_up_to_the_short_side(tmp_path, size, expected):
    root = make_classes(tmp_path / "mid", {"a": 1}, size=size)
    assert resolve_auto(discover_labelled(root).files, "auto", "auto") == (expected, 3)


def test_auto_size_follows_the_median_image(tmp_path):
    root = tmp_path / "sizes"
    for i, side in enumerate([30, 70, 70, 70, 100]):
        save(root / f"{i}.png", solid(RED, (side, side)))
    assert resolve_auto(discover_labelled(root).files, "auto", "auto") == (64, 3)


def test_auto_channels_mixed_gray_and_rgb_is_3(tmp_path):
    root = tmp_path / "mixed"
    save(root / "a" / "g1.png", solid(100, (32, 32), "L"))
    save(root / "a" / "g2.png", solid(100, (32, 32), "L"))
    save(root / "b" / "c.png", solid(RED, (32, 32)))
    assert resolve_auto(discover_labelled(root).files, "auto", "auto") == (32, 3)


def test_auto_counts_16_bit_and_1_bit_as_gray(tmp_path):
    root = tmp_path / "gray"
    save(root / "a.png", Image.fromarray(np.full((32, 32), 1000, np.uint16)))
    save(root / "b.png", solid(1, (32, 32), "1"))
    save(root / "c.png", solid((9, 200), (32, 32), "LA"))
    assert resolve_auto(discover_labelled(root).files, "auto", "auto") == (32, 1)


def test_auto_keeps_explicit_values(tmp_path):
    root = make_classes(tmp_path / "set", {"a": 1}, size=(100, 80), mode="L")
    files = discover_labelled(root).files
    assert resolve_auto(files, 96, "auto") == (96, 1)
    assert resolve_auto(files, "auto", 3) == (64, 3)


def test_auto_ignores_unreadable_files(tmp_path):
    root = make_classes(tmp_path / "set", {"a": 2}, size=(28, 28), mode="L")
    (root / "a" / "x.png").write_bytes(b"garbage")
    assert resolve_auto(discover_labelled(root).files, "auto", "auto") == (28, 1)


# --- inspect -----------------------------------------------------------------------


def test_inspect_counts_sizes_modes_and_unreadable(tmp_path):
    root = tmp_path / "set"
    for i in range(6):
        save(root / "big" / f"{i}.png", solid(RED, (40, 30)))
    save(root / "small" / "0.png", solid(100, (20, 20), "L"))
    save(root / "small" / "1.jpg", solid(RED, (40, 30)))
    (root / "small" / "x.png").write_bytes(b"\x89PNG this is not really a png")
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    whole = save(tmp_path / "whole.png", noise)
    (root / "big" / "cut.png").write_bytes(whole.read_bytes()[:2000])  # a valid header, then nothing
    report = inspect_folder(root)
    assert report.class_names == ["big", "small"]
    assert report.counts == [6, 2]
    assert report.imbalance_ratio == pytest.approx(3.0)
    assert report.sizes == {(40, 30): 7, (20, 20): 1}
    assert report.modes == {"RGB": 7, "L": 1}
    assert len(report.unreadable) == 2
    assert report.unreadable[0].startswith(os.path.join("big", "cut.png"))
    assert report.unreadable[1].startswith(os.path.join("small", "x.png"))


def test_inspect_balanced_and_single_class(tmp_path):
    assert inspect_folder(make_classes(tmp_path / "bal", {"a": 2, "b": 2})).imbalance_ratio == 1.0
    one = make_classes(tmp_path / "one", {"a": 3}) / "a"
    report = inspect_folder(one)
    assert report.class_names == ["a"]
    assert report.counts == [3]
    assert report.imbalance_ratio == 1.0


def test_inspect_a_class_with_nothing_readable_is_infinitely_imbalanced(tmp_path):
    root = make_classes(tmp_path / "set", {"a": 2})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"garbage")
    report = inspect_folder(root)
    assert report.counts == [2, 0]
    assert report.imbalance_ratio == float("inf")


def test_cli_data_inspect(tmp_path):
    root = tmp_path / "set"
    make_classes(root, {"roses": 6, "tulips": 2})
    (root / "tulips" / "broken.png").write_bytes(b"garbage")
    result = synthgen("data", "inspect", root)
    assert result.returncode == 0, result.stderr
    assert "roses" in result.stdout and "tulips" in result.stdout
    assert "imbalance" in result.stdout
    assert "3.00" in result.stdout
    assert "broken.png" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_data_inspect_of_a_missing_folder_is_one_error_line(tmp_path):
    result = synthgen("data", "inspect", tmp_path / "nope")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "nope" in lines[0]


@pytest.mark.skipif(not FLOWERS5.is_dir(), reason=f"the flowers5 dataset is not at {FLOWERS5}")
def test_inspect_the_real_flowers5_dataset():
    report = inspect_folder(FLOWERS5)
    assert report.class_names == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    counts = dict(zip(report.class_names, report.counts))
    assert counts["daisy"] == 764
    assert counts["dandelion"] == 1052
    assert report.imbalance_ratio == pytest.approx(1052 / min(report.counts))
    assert report.unreadable == []
