"""Tests for the idx importer and the embedded Fashion-MNIST demo data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthgen.data.idx import CLASS_NAMES, import_idx, read_idx, resolve_class_names
from synthgen.errors import SynthgenError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "fashion-mnist"
SHARED_FASHION = Path(__file__).resolve().parents[2] / "shared/datasets/fashion-mnist"


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write a uint8 array as an idx file (gzipped if path ends in .gz)."""
    if magic is None:
        magic = (0x08 << 8) | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def load_png(path: Path) -> Image.Image:
    """Open a PNG fully and close the file (no ResourceWarning under -W error)."""
    with Image.open(path) as image:
        image.load()
        return image


def make_split(src: Path, prefix: str, n: int, classes: int, gz: bool, seed: int = 0):
    """Write random images/labels for one split; return them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(src / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(src / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


# (a) round trip


def test_round_trip_gz_and_raw(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    names = ["a", "b", "c", "d"]
    train_images, train_labels = make_split(src, "train", 10, classes=3, gz=True, seed=1)
    test_images, _ = make_split(src, "t10k", 7, classes=3, gz=False, seed=2)

    counts = import_idx(src, out, names)

    assert counts == {
        "train": {"a": 4, "b": 3, "c": 3, "d": 0},
        "test": {"a": 3, "b": 2, "c": 2, "d": 0},
    }
    assert sorted(p.name for p in out.iterdir()) == ["test", "train"]
    # Every class gets a folder, even one with no images.
    assert sorted(p.name for p in (out / "train").iterdir()) == names
    assert list((out / "train" / "d").iterdir()) == []
    assert sorted(p.name for p in (out / "train" / "b").iterdir()) == [
        "train-00001.png", "train-00004.png", "train-00007.png",
    ]
    # No temp files left behind.
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]

    png = load_png(out / "train" / names[train_labels[4]] / "train-00004.png")
    assert png.mode == "L"
    np.testing.assert_array_equal(np.array(png), train_images[4])
    np.testing.assert_array_equal(np.array(load_png(out / "test" / "a" / "test-00006.png")), test_images[6])


def test_reimport_is_idempotent_and_fills_gaps(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    make_split(src, "t10k", 6, classes=2, gz=True)
    first = import_idx(src, out, ["x", "y"])
    kept = out / "test" / "x" / "test-00000.png"
    stamp = kept.stat().st_mtime_ns
    (out / "test" / "y" / "test-00003.png").unlink()
    (out / "test" / "y" / ".test-00005.png.tmp999").write_bytes(b"half")  # an interrupted run

    assert import_idx(src, out, ["x", "y"]) == first
    assert kept.stat().st_mtime_ns == stamp  # existing files are not rewritten
    assert sorted(p.name for p in (out / "test" / "y").iterdir()) == [
        "test-00001.png", "test-00003.png", "test-00005.png",
    ]


def test_read_idx_shapes(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)
    np.testing.assert_array_equal(read_idx(str(write_idx(tmp_path / "a", array))), array)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    result = read_idx(write_idx(tmp_path / "l", labels))
    assert result.shape == (3,) and result.dtype == np.uint8


# (b) errors


def test_bad_magic(tmp_path):
    path = write_idx(tmp_path / "bad-idx3-ubyte", np.zeros((2, 2, 2), np.uint8), magic=0x12345678)
    with pytest.raises(SynthgenError, match=r"bad-idx3-ubyte.*0x12345678"):
        read_idx(path)


@pytest.mark.parametrize("name", ["short-idx3-ubyte", "short-idx3-ubyte.gz"])
def test_truncated_data(tmp_path, name):
    full = tmp_path / "full"
    data = write_idx(full, np.zeros((3, 4, 4), np.uint8)).read_bytes()[:-5]
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(SynthgenError, match=rf"{name}: truncated"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "cut.gz", np.zeros((50, 8, 8), np.uint8))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(SynthgenError, match="cut.gz"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "hdr"
    path.write_bytes(struct.pack(">I", 0x803) + b"\x00\x00")
    with pytest.raises(SynthgenError, match="hdr: truncated"):
        read_idx(path)


def test_label_out_of_range(tmp_path):
    make_split(tmp_path, "t10k", 5, classes=3, gz=False)
    with pytest.raises(SynthgenError, match=r"t10k-labels-idx1-ubyte: label 2 is out of range"):
        import_idx(tmp_path, tmp_path / "out", ["a", "b"])
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_count_mismatch(tmp_path):
    make_split(tmp_path, "t10k", 5, classes=2, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(SynthgenError, match=r"t10k-labels-idx1-ubyte: has 4 labels .* 5 images"):
        import_idx(tmp_path, tmp_path / "out", ["a", "b"])


def test_images_without_labels(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(SynthgenError, match=r"train-images-idx3-ubyte.gz.*train-labels-idx1-ubyte"):
        import_idx(tmp_path, tmp_path / "out", ["a"])


def test_no_split_files(tmp_path):
    with pytest.raises(SynthgenError, match=r"no idx split files.*t10k-images-idx3-ubyte") as info:
        import_idx(tmp_path, tmp_path / "out", ["a"])
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


# (c) class names


def test_presets():
    assert resolve_class_names("fashion-mnist") == CLASS_NAMES["fashion-mnist"]
    assert resolve_class_names("mnist") == [str(d) for d in range(10)]
    assert len(CLASS_NAMES["fashion-mnist"]) == 10
    # The caller gets a copy, so editing it cannot corrupt the preset.
    resolve_class_names("mnist").append("x")
    assert len(CLASS_NAMES["mnist"]) == 10


def test_comma_list():
    assert resolve_class_names(" cat, dog ,bird") == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    "bad",
    ["", "a,,b", "a,b,", "a,a", "Bag,bag", "a,b/c", "a,b\\c", "a,.hidden", "a,..", "fashion_mnist"],
)
def test_bad_lists(bad):
    with pytest.raises(SynthgenError):
        resolve_class_names(bad)


# (d) embedded demo data


def test_demo_import(tmp_path):
    counts = import_idx(DEMO, tmp_path, resolve_class_names("fashion-mnist"))
    assert list(counts) == ["test"]
    assert counts["test"] == {name: 1000 for name in CLASS_NAMES["fashion-mnist"]}
    assert not (tmp_path / "train").exists()
    sneakers = list((tmp_path / "test" / "Sneaker").glob("test-*.png"))
    assert len(sneakers) == 1000
    assert load_png(sneakers[0]).size == (28, 28)


def test_demo_is_documented():
    assert {p.name for p in DEMO.iterdir()} >= {
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "LICENSE", "README.md",
    }
    assert "Zalando" in (DEMO / "LICENSE").read_text(encoding="utf-8")


# (e) full Fashion-MNIST, where the shared copy exists


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason=f"full Fashion-MNIST not present at {SHARED_FASHION}")
def test_shared_train_labels():
    labels = read_idx(SHARED_FASHION / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,)
    assert np.bincount(labels, minlength=10).tolist() == [6000] * 10
