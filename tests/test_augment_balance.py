"""augment and balance on real Fashion-MNIST images: exact counts, DATA untouched, pairs aligned, resumable."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthgen import augment as aug
from synthgen import balance as bal
from synthgen.cli import app
from synthgen.errors import SynthgenError
from synthgen.metrics.gate import Verdict
from synthgen.sample import TrainedGenerator
from tests.conftest import load_imagefolder, read_manifest

COUNTS = {"Trouser": 30, "Sneaker": 24, "Bag": 6, "T-shirt-top": 3}  # a skewed little dataset


def tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` with its content hash: to prove a folder was not modified."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def images_per_class(folder: Path) -> dict[str, int]:
    return {d.name: sum(1 for p in d.rglob("*.png")) for d in sorted(folder.iterdir()) if d.is_dir()}


@pytest.fixture(scope="module")
def skewed(four_classes, tmp_path_factory) -> Path:
    """COUNTS real images per class, copied (not linked) so hard-link checks see real files."""
    root = tmp_path_factory.mktemp("skewed")
    for name, n in COUNTS.items():
        (root / name).mkdir()
        for path in sorted((four_classes / name).iterdir())[:n]:
            shutil.copyfile(path, root / name / path.name)
    return root


# --- augment ------------------------------------------------------------------------------


def test_augment_copies_exact_counts_deterministic_and_resumable(skewed, tmp_path):
    before = tree(skewed)
    sources = aug.labelled_sources(skewed)
    result = aug.augment(aug.plan_copies(sources, 2), tmp_path / "a", aug.policy("heavy"), skewed, seed=7)
    assert images_per_class(tmp_path / "a") == {name: 2 * n for name, n in COUNTS.items()}
    assert result.written == {name: 2 * n for name, n in COUNTS.items()}
    assert tree(skewed) == before

    rows = read_manifest(tmp_path / "a")
    assert sorted(r["file"] for r in rows) == sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png"))
    assert all((skewed / r["source"]).is_file() and r["class"] == r["file"].split("/")[0] for r in rows)
    assert all(isinstance(__import__("json").loads(r["transforms"]), list) and r["transforms"] != "[]" for r in rows)
    hf = load_imagefolder(tmp_path / "a", tmp_path / "hf", data_files="**")  # the sources' names start with "test-"
    assert sorted(zip(hf["class"], hf["source"])) == sorted((r["class"], r["source"]) for r in rows)

    # Another order into another folder: byte-identical files (seeded per image, not per run).
    aug.augment(aug.plan_copies(sources, 2)[::-1], tmp_path / "b", aug.policy("heavy"), skewed, seed=7)
    first = tree(tmp_path / "a")
    assert {k: v for k, v in tree(tmp_path / "b").items() if k.endswith(".png")} == {k: v for k, v in first.items() if k.endswith(".png")}

    # Lose some files: a re-run writes exactly those again, identical.
    lost = sorted((tmp_path / "a").rglob("*.png"))[::5]
    for path in lost:
        path.unlink()
    again = aug.augment(aug.plan_copies(sources, 2), tmp_path / "a", aug.policy("heavy"), skewed, seed=7)
    assert sum(again.written.values()) == len(lost)
    assert tree(tmp_path / "a") == first
    # An augmented image differs from its source (a draw that changed nothing is redrawn).
    row = rows[0]
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / row["file"])), np.asarray(Image.open(skewed / row["source"])))


def test_augment_per_class_fills_every_class_to_n_via_cli(skewed, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["augment", str(skewed), str(tmp_path / "o"), "--per-class", "25", "--policy", "light", "--seed", "1"])
    assert result.exit_code == 0, result.output
    written = images_per_class(tmp_path / "o")
    assert {name: COUNTS[name] + written.get(name, 0) for name in COUNTS} == {"Trouser": 30, "Sneaker": 25, "Bag": 25, "T-shirt-top": 25}
    assert "Trouser" not in written  # already above N: nothing to add
    # T-shirt-top has 3 sources for 22 copies: they take turns (8, 7, 7).
    per_source = {}
    for row in read_manifest(tmp_path / "o"):
        if row["class"] == "T-shirt-top":
            per_source[row["source"]] = per_source.get(row["source"], 0) + 1
    assert sorted(per_source.values()) == [7, 7, 8]
    to_max = runner.invoke(app, ["augment", str(skewed), str(tmp_path / "m"), "--per-class", "max", "--policy", "light"])
    assert to_max.exit_code == 0, to_max.output
    assert {name: COUNTS[name] + images_per_class(tmp_path / "m").get(name, 0) for name in COUNTS} == {name: 30 for name in COUNTS}


def test_pipeline_file_round_trips_and_bad_ones_are_one_line_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(aug.pipeline_yaml(aug.policy("medium")))
    assert aug.pipeline_yaml(aug.load_pipeline(path)) == path.read_text()
    shipped = aug.load_pipeline(Path(__file__).resolve().parents[1] / "recipes" / "augment.yaml")
    assert len(shipped.transforms) >= 3
    for text, expected in [("transform: {__class_fullname__: NoSuchTransform}", "cannot build"), ("[1, 2", "not valid YAML"), ("a: 1", "`transform` key")]:
        path.write_text(text)
        with pytest.raises(SynthgenError, match=expected):
            aug.load_pipeline(path)


def geometric_pipeline(tmp_path: Path) -> Path:
    """Flip, shift, scale, rotate only: geometry commutes with inverting the pixel values."""
    import albumentations as A
    import cv2

    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-30, 30), border_mode=cv2.BORDER_REFLECT_101, p=1.0)])
    path = tmp_path / "geometric.yaml"
    path.write_text(aug.pipeline_yaml(pipeline))
    return path


def test_paired_augmentation_keeps_sides_aligned(four_classes, tmp_path):
    """B = 255 - A. After augmenting, B' must still be 255 - A' (same geometry on both sides), while A' differs from A."""
    pairs = tmp_path / "pairs"
    side_by_side = tmp_path / "sbs"
    for sub in ("A", "B"):
        (pairs / sub).mkdir(parents=True)
    side_by_side.mkdir()
    for i, path in enumerate(sorted((four_classes / "Sneaker").iterdir())[:6]):
        a = np.asarray(Image.open(path).convert("L"))
        Image.fromarray(a).save(pairs / "A" / f"p{i}.png")
        Image.fromarray(255 - a).save(pairs / "B" / f"p{i}.png")
        Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(side_by_side / f"p{i}.png")
    before = tree(pairs)
    runner = CliRunner()
    for src, out in ((pairs, tmp_path / "o1"), (side_by_side, tmp_path / "o2")):
        result = runner.invoke(app, ["augment", str(src), str(out), "--paired", "--copies", "3", "--pipeline", str(geometric_pipeline(tmp_path))])
        assert result.exit_code == 0, result.output
    assert tree(pairs) == before
    outputs = sorted((tmp_path / "o1" / "A").glob("*.png"))
    assert len(outputs) == 18 and len(list((tmp_path / "o2").glob("*.png"))) == 18
    for path in outputs:
        a2 = np.asarray(Image.open(path)).astype(int)
        b2 = np.asarray(Image.open(tmp_path / "o1" / "B" / path.name)).astype(int)
        assert np.abs(a2 + b2 - 255).max() <= 1  # interpolation rounding only
        sbs = np.asarray(Image.open(tmp_path / "o2" / path.name)).astype(int)
        assert np.array_equal(sbs[:, :28], a2) and np.array_equal(sbs[:, 28:], b2)  # both layouts: the same transform
    source = np.asarray(Image.open(pairs / "A" / "p0.png")).astype(int)
    assert any(np.abs(np.asarray(Image.open(p)).astype(int) - source).mean() > 5 for p in outputs if p.name.startswith("p0_"))
    rows = read_manifest(tmp_path / "o1")
    assert all(r["partner"] == r["file"].replace("A/", "B/", 1) for r in rows)


# --- balance ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator(trained_gan, tmp_path_factory) -> TrainedGenerator:
    """The tiny AC-GAN from a private copy of its run (the gate's classifier is saved into the run folder)."""
    run = tmp_path_factory.mktemp("balance-run") / "run"
    shutil.copytree(trained_gan, run)
    return TrainedGenerator(run)


def test_balance_mixed_exact_counts_links_and_manifest(skewed, generator, tmp_path):
    before = tree(skewed)
    result = bal.balance_dataset(skewed, tmp_path / "o", to="max", mix=bal.parse_mix("synthetic=0.5,augment=0.5"),
                                 generator=generator, link=True, seed=3, batch_size=16)
    out = tmp_path / "o"
    assert tree(skewed) == before
    assert images_per_class(out) == {name: 30 for name in COUNTS}  # up to the largest class
    assert result.plan.synthetic == {"Trouser": 0, "Sneaker": 3, "Bag": 12, "T-shirt-top": 14}
    assert result.plan.augmented == {"Trouser": 0, "Sneaker": 3, "Bag": 12, "T-shirt-top": 13}
    rows = read_manifest(out)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.parent != out)
    assert sorted(r["file"] for r in rows) == on_disk
    for row in rows:
        assert row["file"].split("/")[:2] == [row["class"], {"real": "real", "synthetic": "synthetic", "augmented": "augmented"}[row["kind"]]]
        if row["kind"] == "synthetic":
            assert row["checkpoint_sha256"] == generator.checkpoint_sha256 and row["seed"]
        else:
            assert (skewed / row["source"]).is_file()
    real = [r for r in rows if r["kind"] == "real"]
    assert len(real) == sum(COUNTS.values())
    assert all((out / r["file"]).stat().st_ino == (skewed / r["source"]).stat().st_ino for r in real)  # --link
    # As a Hugging Face imagefolder the class comes from the manifest, not from the folder above the file (real/, synthetic/).
    hf = load_imagefolder(out, tmp_path / "hf", data_files="**")
    assert sorted(zip(hf["class"], hf["kind"])) == sorted((r["class"], r["kind"]) for r in rows)

    # A re-run with the same settings has nothing to do; other settings are refused.
    again = bal.balance_dataset(skewed, out, to="max", mix=bal.parse_mix("synthetic=0.5,augment=0.5"), generator=generator, link=True, seed=3, batch_size=16)
    assert again.sample_result.written == {"Sneaker": 0, "Bag": 0, "T-shirt-top": 0} and read_manifest(out) == rows
    with pytest.raises(SynthgenError, match="other settings"):
        bal.balance_dataset(skewed, out, to=40, generator=generator)


def test_balance_refused_class_is_reported_and_the_rest_written(skewed, generator, tmp_path):
    refuse_bag = lambda name, images: Verdict(name != "Bag", "collapsed (test)")  # noqa: E731
    result = bal.balance_dataset(skewed, tmp_path / "o", to=20, generator=generator, check=refuse_bag, retries=1, batch_size=16)
    assert set(result.rejected) == {"Bag"}
    assert result.final == {"Trouser": 30, "Sneaker": 24, "Bag": 6, "T-shirt-top": 20}  # real above the target is kept


def test_balance_cli_gated_and_bad_input(skewed, generator, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["balance", str(skewed), str(tmp_path / "o"), "--weights", str(generator.run_dir), "--to", "32",
                             "--mix", "synthetic=1,augment=1", "--batch-size", "16", "--set", "gate.domain_steps=60"])
    assert ok.exit_code in (0, 3), ok.output
    report = __import__("json").loads((tmp_path / "o" / "gate_report.json").read_text())
    final = images_per_class(tmp_path / "o")
    for name, entry in report["classes"].items():  # every class that needed synthetic images was gated
        assert entry["status"] in ("passed", "rejected", "unchecked")
        assert (final[name] == max(32, COUNTS[name])) == (entry["status"] != "rejected")
    assert (ok.exit_code == 3) == any(e["status"] == "rejected" for e in report["classes"].values())
    for args, message in [
        (["--to", "zero"], "--to zero"), (["--mix", "gan=1"], "unknown part"), (["--mix", "synthetic=1"], "needs --weights"),
    ]:
        bad = runner.invoke(app, ["balance", str(skewed), str(tmp_path / "bad"), *args])
        assert bad.exit_code != 0 and message in str(bad.exception or bad.output)
    inside = runner.invoke(app, ["balance", str(skewed), str(skewed / "x")])
    assert inside.exit_code != 0 and not (skewed / "x").exists()


def test_augment_journals_each_row_once_and_rewrites_the_manifest_once(skewed, tmp_path, monkeypatch):
    """Linear cost: every row is appended once (chunks of aug.CHUNK) and the manifest written once, at the end."""
    from tests.test_sample import DiskRows

    disk = DiskRows(monkeypatch)
    jobs = aug.plan_copies(aug.labelled_sources(skewed), 3)
    assert len(jobs) > 2 * aug.CHUNK  # several chunks: before the journal, each rewrote everything before it
    result = aug.augment(jobs, tmp_path, aug.policy("light"), skewed, seed=1)
    assert sum(result.written.values()) == len(jobs) == disk.appended == disk.rewritten and disk.rewrites == 1
