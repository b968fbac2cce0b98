"""SIGKILL during `augment` and `balance`: re-running completes the output.

As for sample and translate (test_kill_outputs.py): whatever a killed run left
is whole, and re-running gives exactly the files and manifest of an
uninterrupted run, byte for byte; the manifest lists the files on disk.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from synthgen import augment as aug
from synthgen.balance import balance_dataset
from synthgen.sample import TrainedGenerator
from tests.robustness import tally
from tests.robustness.conftest import fork, kill_after, kill_self, timed, wait
from tests.robustness.test_kill_outputs import assert_whole_images, files_of, manifest_files


@pytest.fixture(scope="module")
def skewed(two_classes, tmp_path_factory) -> Path:
    """Bag 30 images, Sneaker 8: something to augment and to balance."""
    root = tmp_path_factory.mktemp("skewed")
    for name, keep in (("Bag", 30), ("Sneaker", 8)):
        shutil.copytree(two_classes / name, root / name, ignore=lambda d, names, keep=keep: sorted(names)[keep:])
    return root


timing: dict[str, float] = {}  # seconds of an uninterrupted run: kills are drawn inside it


def image_files(out: Path) -> list[str]:
    return sorted(k for k in files_of(out) if k.endswith(".png"))


def run_augment(skewed: Path, out: Path):
    return aug.augment_folder(skewed, out, aug.policy("medium"), copies=4, seed=2)


@pytest.fixture(scope="module")
def augment_reference(skewed, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("augment-reference")
    _, timing["augment"] = timed(lambda: run_augment(skewed, out))
    return files_of(out)


def assert_complete(out: Path, reference: dict[str, bytes]) -> None:
    """Whole files, byte-identical to an uninterrupted run's, and a manifest listing each image on disk once."""
    assert_whole_images(out)
    assert files_of(out) == reference, "files differ from an uninterrupted run (missing, extra or different bytes)"
    assert not list(out.glob(".*.journal")), "a journal was not compacted into its manifest"
    listed = manifest_files(out, "manifest.csv")
    assert sorted(listed) == image_files(out), "the manifest does not list exactly the images on disk"


@pytest.mark.parametrize("seed", range(4))
def test_augment_killed_at_a_random_moment_then_rerun(skewed, augment_reference, tmp_path, seed):
    out = tmp_path / "out"
    killed = kill_after(fork(lambda: run_augment(skewed, out)), random.Random(seed).uniform(0.05, 0.9) * timing["augment"])
    fault = tally.fault("augment: SIGKILL at a random moment") if killed else None
    run_augment(skewed, out)
    assert_complete(out, augment_reference)
    if fault:
        fault.survived()


def test_augment_killed_before_its_manifest_then_rerun(skewed, augment_reference, tmp_path):
    out = tmp_path / "out"

    def work():
        original = os.replace
        os.replace = lambda src, dst: kill_self() if Path(dst).name == "manifest.csv" else original(src, dst)
        run_augment(skewed, out)

    fault = tally.fault("augment: SIGKILL, images written, manifest not")
    assert wait(fork(work)) == -signal.SIGKILL
    run_augment(skewed, out)
    assert_complete(out, augment_reference)
    fault.survived()


def run_balance(skewed: Path, out: Path, generator):
    return balance_dataset(skewed, out, to=80, mix={"synthetic": 0.5, "augment": 0.5}, generator=generator, seed=4, batch_size=8)


@pytest.fixture(scope="module")
def generator(cgan_run) -> TrainedGenerator:
    return TrainedGenerator(cgan_run, device="cpu", checkpoint="latest")


@pytest.fixture(scope="module")
def balance_reference(skewed, generator, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("balance-reference")
    _, timing["balance"] = timed(lambda: run_balance(skewed, out, generator))
    return files_of(out)


@pytest.mark.parametrize("seed", range(4))
def test_balance_killed_at_a_random_moment_then_rerun(skewed, generator, balance_reference, tmp_path, seed):
    out = tmp_path / "out"
    killed = kill_after(fork(lambda: run_balance(skewed, out, generator)), random.Random(seed).uniform(0.05, 0.9) * timing["balance"])
    fault = tally.fault("balance: SIGKILL at a random moment") if killed else None
    run_balance(skewed, out, generator)
    assert_complete(out, balance_reference)
    if fault:
        fault.survived()


def test_augment_disk_full_stops_cleanly_then_completes(skewed, augment_reference, tmp_path, monkeypatch):
    import errno

    from synthgen import imaging
    from synthgen.errors import WriteFailed
    from tests.robustness.test_kill_outputs import failing_open

    out = tmp_path / "out"
    fault = tally.fault("augment: write fails (ENOSPC)")
    monkeypatch.setattr(imaging, "open", failing_open(after=90, code=errno.ENOSPC), raising=False)
    with pytest.raises(WriteFailed, match="No space left on device"):
        run_augment(skewed, out)
    monkeypatch.undo()
    assert_whole_images(out)
    assert set(manifest_files(out, "manifest.csv")) <= set(image_files(out))
    assert all(augment_reference[k] == v for k, v in files_of(out).items() if k.endswith(".png"))
    run_augment(skewed, out)
    assert_complete(out, augment_reference)
    fault.survived()
