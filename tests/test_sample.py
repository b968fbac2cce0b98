"""Sampling: class-balanced ImageFolder output, manifest, determinism, continuation, fill-to, the gate's plug."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder

from synthgen.errors import SynthgenError
from synthgen.sample import MANIFEST, TrainedGenerator, Verdict, latent, plan_balanced, plan_classes, plan_fill_to, sample_dataset
from synthgen.train.loop import train
from tests.conftest import REPO, tiny_recipe


@pytest.fixture(scope="module")
def run(four_classes, tmp_path_factory) -> Path:
    return train(tiny_recipe(four_classes, tmp_path_factory.mktemp("runs"), train={"steps": 3})).run_dir


@pytest.fixture(scope="module")
def generator(run) -> TrainedGenerator:
    return TrainedGenerator(run)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest(folder: Path) -> list[dict]:
    with open(folder / MANIFEST, newline="") as handle:
        return list(csv.DictReader(handle))


def test_balanced_output_is_an_imagefolder_with_a_manifest(generator, tmp_path):
    result = sample_dataset(generator, plan_balanced(generator, 7), tmp_path, seed=1, batch_size=4)
    assert result.written == {name: 7 for name in generator.class_names} and not result.rejected
    dataset = ImageFolder(str(tmp_path))
    assert dataset.classes == generator.class_names and len(dataset) == 28
    image, _ = dataset[0]
    assert image.size == (28, 28)
    rows = manifest(tmp_path)
    assert len(rows) == 28 and set(rows[0]) == {"file", "class", "seed", "checkpoint_sha256", "truncation", "attempt", "gate"}
    assert {row["checkpoint_sha256"] for row in rows} == {generator.checkpoint_sha256}
    assert len({row["seed"] for row in rows}) == 28


def test_same_seed_same_bytes_and_continuation_equals_one_go(generator, tmp_path):
    sample_dataset(generator, plan_classes(generator, ["Bag"], 10), tmp_path / "a", seed=5, batch_size=4)
    sample_dataset(generator, plan_classes(generator, ["Bag"], 10), tmp_path / "b", seed=5, batch_size=4)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    # Three runs into one folder (n grows, one file deleted) end byte-identical to one run.
    sample_dataset(generator, plan_classes(generator, ["Bag"], 3), tmp_path / "c", seed=5, batch_size=4)
    sample_dataset(generator, plan_classes(generator, ["Bag"], 7), tmp_path / "c", seed=5, batch_size=4)
    (tmp_path / "c" / "Bag" / "Bag_000001.png").unlink()
    again = sample_dataset(generator, plan_classes(generator, ["Bag"], 10), tmp_path / "c", seed=5, batch_size=4)
    assert again.existing["Bag"] == 6 and again.written["Bag"] == 4
    assert files_of(tmp_path / "c") == files_of(tmp_path / "a")
    other_seed = sample_dataset(generator, plan_classes(generator, ["Bag"], 2), tmp_path / "d", seed=6, batch_size=4)
    assert other_seed.written["Bag"] == 2
    assert (tmp_path / "d" / "Bag" / "Bag_000000.png").read_bytes() != (tmp_path / "a" / "Bag" / "Bag_000000.png").read_bytes()


def test_rerun_into_a_full_folder_writes_nothing(generator, tmp_path):
    sample_dataset(generator, plan_classes(generator, ["Trouser"], 5), tmp_path, seed=0)
    result = sample_dataset(generator, plan_classes(generator, ["Trouser"], 5), tmp_path, seed=0)
    assert result.written == {"Trouser": 0} and len(manifest(tmp_path)) == 5


def test_fill_to_tops_up_a_skewed_dataset(generator, four_classes, tmp_path):
    skewed = tmp_path / "skewed"
    counts = {"Bag": 12, "Sneaker": 3, "Trouser": 0, "T-shirt-top": 20}
    for name, count in counts.items():
        (skewed / name).mkdir(parents=True)
        for source in sorted((four_classes / name).iterdir())[:count]:
            (skewed / name / source.name).write_bytes(source.read_bytes())
    plan = plan_fill_to(generator, skewed, 15)
    assert plan == {"Bag": 3, "Sneaker": 12, "Trouser": 15, "T-shirt-top": 0}
    result = sample_dataset(generator, plan, tmp_path / "synthetic")
    assert result.written == plan


def test_unknown_class_lists_the_known_ones(generator):
    with pytest.raises(SynthgenError, match="unknown class.*Bag, Sneaker"):
        plan_classes(generator, ["Sneakers"], 5)


def test_gate_rejection_stops_the_class_and_writes_nothing(generator, tmp_path):
    def reject_bags(class_name, images):
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        return Verdict(class_name != "Bag", "collapsed")

    result = sample_dataset(generator, plan_classes(generator, ["Bag", "Sneaker"], 4), tmp_path, check=reject_bags)
    assert list(result.rejected) == ["Bag"] and "collapsed" in result.rejected["Bag"]
    assert result.written == {"Bag": 0, "Sneaker": 4}
    assert not (tmp_path / "Bag").exists()


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_other_formats(generator, tmp_path, fmt):
    sample_dataset(generator, plan_classes(generator, ["Bag"], 2), tmp_path, fmt=fmt)
    assert sorted(p.suffix for p in (tmp_path / "Bag").iterdir()) == [f".{fmt}"] * 2


def test_truncation_keeps_every_entry_inside_psi():
    z = latent(3, 4096, truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    assert torch.equal(latent(3, 64, None), latent(3, 64, None))


def test_cli_sample_and_its_errors(run, tmp_path):
    synthgen = str(Path(sys.executable).with_name("synthgen"))
    ok = subprocess.run([synthgen, "sample", "--weights", str(run), "--class", "Bag,Sneaker", "-n", "3", "--out", str(tmp_path / "o"), "--seed", "1", "--no-gate"],
                        cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert len(list((tmp_path / "o" / "Sneaker").iterdir())) == 3
    bad = subprocess.run([synthgen, "sample", "--weights", str(run), "--class", "Cat", "--out", str(tmp_path / "x")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "Bag" in bad.stderr


def test_report_of_a_real_run(run):
    from synthgen.report import render_report

    page = render_report(run).read_text()
    assert "tiny" in page and page.count("data:image/png;base64,") >= 3
