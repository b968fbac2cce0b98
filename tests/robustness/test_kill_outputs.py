"""SIGKILL during `sample` and `translate`, and writes that fail: re-running completes the output.

After a kill the output folder may be short of files, never wrong: every
file there is whole, and re-running completes it with no missing,
duplicated or truncated file; the manifest lists exactly the files on disk
and the bytes equal an uninterrupted run's. A write that fails (disk full,
read-only folder) stops with one line and leaves everything written before intact.
"""

from __future__ import annotations

import csv
import errno
import os
import random
import signal
from pathlib import Path

import pytest
from PIL import Image

from synthgen import imaging
from synthgen.errors import WriteFailed
from synthgen.manifest import journal_path, read_rows
from synthgen.sample import MANIFEST, TrainedGenerator, sample_dataset
from synthgen.translate import Translator, translate_folder
from tests.robustness import tally
from tests.robustness.conftest import cli, error_line, fork, kill_after, kill_self, timed, wait

PLAN = {"Bag": 150, "Sneaker": 150}
timing: dict[str, float] = {}  # seconds of an uninterrupted run: kills are drawn inside it
reference_manifest: dict[str, bytes] = {}  # manifest.csv of the uninterrupted sample run


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_whole_images(folder: Path) -> None:
    """Every image file below folder decodes completely, and no temporary file is left."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix == ".png":
            imaging.open_image(path)
    assert not list(folder.rglob(".*.tmp-*")), "a temporary file was left"


def manifest_files(out: Path, name: str = MANIFEST) -> list[str]:
    """Every file the manifest and its journal (rows of a run that has not compacted yet) list."""
    listed = []
    for path in (out / name, journal_path(out, name)):
        if path.exists():
            with open(path, newline="") as handle:
                listed += [row["file"] for row in csv.DictReader(handle)]
    return listed


def assert_complete_sample(out: Path, reference: dict[str, bytes]) -> None:
    assert_whole_images(out)
    images = {k: v for k, v in files_of(out).items() if k.endswith(".png")}
    assert images == reference, "files differ from an uninterrupted run (missing, extra or different bytes)"
    assert not journal_path(out, MANIFEST).exists(), "the journal was not compacted into the manifest"
    listed = manifest_files(out)
    assert sorted(listed) == sorted(images) and len(set(listed)) == len(listed), "manifest and disk disagree"
    assert (out / MANIFEST).read_bytes() == reference_manifest["sample"], "the manifest differs from an uninterrupted run's"


@pytest.fixture(scope="module")
def generator(cgan_run) -> TrainedGenerator:
    return TrainedGenerator(cgan_run, device="cpu", checkpoint="latest")


@pytest.fixture(scope="module")
def sample_reference(generator, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("sample-reference")
    _, timing["sample"] = timed(lambda: sample_dataset(generator, PLAN, out, seed=3, batch_size=16))
    reference_manifest["sample"] = (out / MANIFEST).read_bytes()
    return {k: v for k, v in files_of(out).items() if k.endswith(".png")}


@pytest.mark.parametrize("seed", range(6))
def test_sample_killed_at_a_random_moment_then_rerun(generator, sample_reference, tmp_path, seed):
    out = tmp_path / "out"
    pid = fork(lambda: sample_dataset(generator, PLAN, out, seed=3, batch_size=16))
    killed = kill_after(pid, random.Random(seed).uniform(0.05, 0.9) * timing["sample"])
    fault = tally.fault("sample: SIGKILL at a random moment") if killed else None
    if out.exists():
        for path in out.rglob("*.png"):
            imaging.open_image(path)  # whatever is there is whole
    sample_dataset(generator, PLAN, out, seed=3, batch_size=16)
    assert_complete_sample(out, sample_reference)
    if fault:
        fault.survived()


def _kill_before_rename(original, src, dst):
    if Path(dst).suffix == ".png" and Path(dst).name.endswith("_000040.png"):
        kill_self()  # its temporary file is written, the rename never happens
    return original(src, dst)


def _kill_before_compaction(original, src, dst):
    if Path(dst).name == MANIFEST:
        kill_self()  # every image and its journal row are on disk, the sorted manifest is not written yet
    return original(src, dst)


def _kill_before_journal(original, path, data):
    if b"_000032" in data:
        kill_self()  # the batch's images are on disk, the journal does not list them yet
    return original(path, data)


def _kill_before_journal_removed(original, path, missing_ok=False):
    if Path(path).name.endswith(".journal"):
        kill_self()  # the manifest is compacted, the journal still lists the same rows
    return original(path, missing_ok=missing_ok)


@pytest.mark.parametrize("action", [_kill_before_rename, _kill_before_journal, _kill_before_compaction, _kill_before_journal_removed],
                         ids=["image not renamed", "journal not appended", "manifest not compacted", "journal not removed"])
def test_sample_killed_at_chosen_points_then_rerun(generator, sample_reference, tmp_path, action):
    out = tmp_path / "out"

    def work():
        from synthgen import manifest

        if action is _kill_before_journal:
            original = manifest.append_synced
            manifest.append_synced = lambda path, data: action(original, path, data)
        elif action is _kill_before_journal_removed:
            original = Path.unlink
            Path.unlink = lambda path, missing_ok=False: action(original, path, missing_ok)
        else:
            original = os.replace
            os.replace = lambda src, dst: action(original, src, dst)
        sample_dataset(generator, PLAN, out, seed=3, batch_size=16)

    fault = tally.fault(f"sample: SIGKILL, {action.__name__.strip('_').replace('_', ' ')}")
    assert wait(fork(work)) == -signal.SIGKILL
    sample_dataset(generator, PLAN, out, seed=3, batch_size=16)
    assert_complete_sample(out, sample_reference)
    fault.survived()


def test_sample_killed_mid_run_leaves_a_journal_that_the_rerun_continues_and_compacts(generator, sample_reference, tmp_path):
    out = tmp_path / "out"

    def work():
        from synthgen import manifest

        original, appends = manifest.append_synced, [0]

        def append(path, data):
            appends[0] += 1
            if appends[0] == 4:
                kill_self()  # three batches journaled, the fourth's images written but not listed
            return original(path, data)

        manifest.append_synced = append
        sample_dataset(generator, PLAN, out, seed=3, batch_size=16)

    assert wait(fork(work)) == -signal.SIGKILL
    assert not (out / MANIFEST).exists() and journal_path(out, MANIFEST).exists()
    assert len(manifest_files(out)) == 3 * 16  # only rows whose files were whole
    again = sample_dataset(generator, PLAN, out, seed=3, batch_size=16)
    assert again.existing == {"Bag": 48, "Sneaker": 0} and again.written == {"Bag": 102, "Sneaker": 150}
    assert_complete_sample(out, sample_reference)  # compacted: no journal, the manifest byte-equal to an uninterrupted run's


def test_sample_killed_through_the_command_line_in_process_rerun(cgan_run, sample_reference, tmp_path):
    """`synthgen sample` re-run over a folder a killed run left: completes it, exit 0, one manifest."""
    out = tmp_path / "out"
    pid = fork(lambda: sample_dataset(TrainedGenerator(cgan_run, "cpu", "latest"), PLAN, out, seed=3, batch_size=16))
    killed = kill_after(pid, 0.5 * timing["sample"])
    fault = tally.fault("sample: SIGKILL, re-run with the CLI") if killed else None
    code, output = cli("sample", "--weights", cgan_run, "--checkpoint", "latest", "--balanced", "-n", "150", "--seed", "3",
                       "--batch-size", "16", "--no-gate", "--out", out)
    assert code == 0, output
    assert_complete_sample(out, sample_reference)
    if fault:
        fault.survived()


# --- translate --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(pairs, tmp_path_factory) -> Path:
    """60 inputs in two subfolders, some at other sizes (separate batches)."""
    root = tmp_path_factory.mktemp("inputs")
    for i, path in enumerate(sorted((pairs / "A").iterdir())):
        for sub, size in (("x", None), ("y", (40, 36))):
            if sub == "y" and i >= 20:
                continue
            (root / sub).mkdir(exist_ok=True)
            with Image.open(path) as image:
                (image.resize(size) if size else image).save(root / sub / path.name)
    return root


@pytest.fixture(scope="module")
def translator(pix2pix_run) -> Translator:
    return Translator(pix2pix_run, device="cpu")


@pytest.fixture(scope="module")
def translate_reference(translator, inputs, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("translate-reference")
    _, timing["translate"] = timed(lambda: translate_folder(translator, inputs, out, batch_size=4))
    return files_of(out)


@pytest.mark.parametrize("seed", range(5))
def test_translate_killed_at_a_random_moment_then_rerun(translator, inputs, translate_reference, tmp_path, seed):
    out = tmp_path / "out"
    killed = kill_after(fork(lambda: translate_folder(translator, inputs, out, batch_size=4)), random.Random(seed).uniform(0.05, 0.9) * timing["translate"])
    fault = tally.fault("translate: SIGKILL at a random moment") if killed else None
    if out.exists():
        for path in out.rglob("*.png"):
            imaging.open_image(path)
    result = translate_folder(translator, inputs, out, batch_size=4)
    images = [name for name in translate_reference if name.endswith(".png")]  # beside them: manifest.csv, metadata.jsonl
    assert len(result.translated) + len(result.existing) == len(images) and not result.unreadable
    assert_whole_images(out)
    assert files_of(out) == translate_reference
    if fault:
        fault.survived()


def test_translate_killed_with_a_temporary_file_left_then_rerun(translator, inputs, translate_reference, tmp_path):
    out = tmp_path / "out"

    def work():
        original, calls = os.replace, [0]

        def replace(src, dst):
            calls[0] += 1
            if calls[0] == 9:
                kill_self()
            return original(src, dst)

        os.replace = replace
        translate_folder(translator, inputs, out, batch_size=4)

    fault = tally.fault("translate: SIGKILL, output temporary not renamed")
    assert wait(fork(work)) == -signal.SIGKILL
    assert list(out.rglob(".*.tmp-*")), "the kill point should leave a temporary file"
    translate_folder(translator, inputs, out, batch_size=4)
    assert_whole_images(out)
    assert files_of(out) == translate_reference
    fault.survived()


# --- writes that fail -------------------------------------------------------------------------


def failing_open(after: int, code: int):
    """builtins.open that raises OSError(code) for writes from the `after`-th one on."""
    import builtins

    real, writes = builtins.open, [0]

    def fake(file, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode:
            writes[0] += 1
            if writes[0] >= after:
                raise OSError(code, os.strerror(code), str(file))
        return real(file, mode, *args, **kwargs)

    return fake


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk full", "read-only"])
def test_sample_write_failure_stops_cleanly_and_keeps_what_was_written(generator, sample_reference, tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    fault = tally.fault(f"sample: write fails ({errno.errorcode[code]})")
    monkeypatch.setattr(imaging, "open", failing_open(after=70, code=code), raising=False)
    with pytest.raises(WriteFailed, match="could not write"):
        sample_dataset(generator, PLAN, out, seed=3, batch_size=16)
    monkeypatch.undo()
    assert_whole_images(out)
    written = {k: v for k, v in files_of(out).items() if k.endswith(".png")}
    assert written and all(sample_reference[k] == v for k, v in written.items())
    assert set(manifest_files(out)) <= set(written)  # the manifest never lists a file that is not there
    sample_dataset(generator, PLAN, out, seed=3, batch_size=16)  # space again: the run completes
    assert_complete_sample(out, sample_reference)
    fault.survived()


def test_translate_cli_disk_full_is_one_line_and_exit_1(pix2pix_run, inputs, translate_reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    fault = tally.fault("translate: write fails (ENOSPC)")
    monkeypatch.setattr(imaging, "open", failing_open(after=10, code=errno.ENOSPC), raising=False)
    code, output = cli("translate", inputs, out, "--weights", pix2pix_run)
    monkeypatch.undo()
    assert code == 1, output
    assert "No space left on device" in error_line(output)
    assert_whole_images(out)
    images = {k: v for k, v in files_of(out).items() if k.endswith(".png")}  # the index lists what was written so far
    assert images and all(translate_reference[k] == v for k, v in images.items())
    assert {row["file"] for row in read_rows(out, "manifest.csv")} <= set(images)
    fault.survived()
