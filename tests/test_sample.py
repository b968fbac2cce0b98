"""Sampling: class-balanced ImageFolder output, manifest, determinism, continuation, fill-to, the gate's plug."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder

from synthgen.errors import SynthgenError
from synthgen.sample import (
    MANIFEST,
    MAX_DRAWS,
    TrainedGenerator,
    Verdict,
    latent,
    plan_balanced,
    plan_classes,
    plan_fill_to,
    sample_dataset,
)
from synthgen.train.loop import train
from tests.cli import synthgen
from tests.conftest import REPO, files_of, load_imagefolder, read_manifest, tiny_recipe


@pytest.fixture(scope="module")
def run(four_classes, tmp_path_factory) -> Path:
    return train(tiny_recipe(four_classes, tmp_path_factory.mktemp("runs"), train={"steps": 3})).run_dir


@pytest.fixture(scope="module")
def generator(run) -> TrainedGenerator:
    return TrainedGenerator(run)


def test_balanced_output_is_an_imagefolder_with_a_manifest(generator, tmp_path):
    result = sample_dataset(generator, plan_balanced(generator, 7), tmp_path, seed=1, batch_size=4)
    assert result.written == {name: 7 for name in generator.class_names} and not result.rejected
    dataset = ImageFolder(str(tmp_path))
    assert dataset.classes == generator.class_names and len(dataset) == 28
    image, _ = dataset[0]
    assert image.size == (28, 28)
    rows = read_manifest(tmp_path)
    assert len(rows) == 28 and set(rows[0]) == {"file", "class", "seed", "checkpoint_sha256", "truncation", "attempt", "gate"}
    assert {row["checkpoint_sha256"] for row in rows} == {generator.checkpoint_sha256}
    assert len({row["seed"] for row in rows}) == 28
    # The same folder as a Hugging Face imagefolder: the manifest's columns are its features.
    hf = load_imagefolder(tmp_path, tmp_path.parent / "hf-cache")
    assert len(hf) == 28 and set(hf.column_names) == {"image"} | set(rows[0]) - {"file"}
    assert sorted(hf["class"]) == sorted(row["class"] for row in rows) and hf[0]["image"].size == (28, 28)


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
    assert result.written == {"Trouser": 0} and len(read_manifest(tmp_path)) == 5


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
    ok = synthgen("sample", "--weights", run, "--class", "Bag,Sneaker", "-n", "3", "--out", tmp_path / "o", "--seed", "1", "--no-gate")
    assert ok.returncode == 0, ok.stderr
    assert len(list((tmp_path / "o" / "Sneaker").iterdir())) == 3
    bad = synthgen("sample", "--weights", run, "--class", "Cat", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "Bag" in bad.stderr
    (tmp_path / "a-file").write_text("not a folder")
    for target in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        onto_file = synthgen("sample", "--weights", run, "--balanced", "-n", "2", "--no-gate", "--out", target)
        assert onto_file.returncode == 2 and "Traceback" not in onto_file.stderr, onto_file.stderr
        assert onto_file.stderr.startswith(f"error: --out {target}: ") and "expected a folder" in onto_file.stderr
        assert len(onto_file.stderr.strip().splitlines()) == 1


def test_cli_sample_continues_a_folder_only_with_the_settings_that_made_its_images(run, generator, tmp_path):
    out = tmp_path / "o"
    first = synthgen("sample", "--weights", run, "--class", "Bag", "-n", "2", "--out", out, "--seed", "1", "--no-gate")
    assert first.returncode == 0, first.stderr
    more = synthgen("sample", "--weights", run, "--class", "Bag,Sneaker", "-n", "3", "--out", out, "--seed", "1", "--no-gate")
    assert more.returncode == 0, more.stderr  # more images and other classes: the same kind of image
    assert len(read_manifest(out)) == 6
    for change in (["--seed", "2", "--no-gate"], ["--seed", "1", "--no-gate", "--truncation", "0.5"], ["--seed", "1"]):
        refused = synthgen("sample", "--weights", run, "--class", "Bag", "-n", "4", "--out", out, *change)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith(f"error: {out}: holds images sampled with other settings") and "write to a new folder" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert len(read_manifest(out)) == 6 and len(list((out / "Bag").iterdir())) == 3
    # The gate's per-image filter decides which images are written: turning it on is another kind of folder.
    from synthgen.sample import continue_only_with_same_images

    continue_only_with_same_images(tmp_path / "g", generator, seed=0, truncation=None, fmt="png", gated=True)
    trained_recipe = generator.recipe  # the module's generator is shared: put its own recipe back afterwards
    generator.override_gate(["gate.recognised_only=true"])
    try:
        with pytest.raises(SynthgenError, match="other settings \\(recognised_only=False\\)"):
            continue_only_with_same_images(tmp_path / "g", generator, seed=0, truncation=None, fmt="png", gated=True)
        # With one class the filter has nothing to tell apart and filters nothing: the same kind of folder.
        all_classes, generator.class_names = generator.class_names, generator.class_names[:1]
        try:
            continue_only_with_same_images(tmp_path / "g", generator, seed=0, truncation=None, fmt="png", gated=True)
        finally:
            generator.class_names = all_classes
    finally:
        generator.recipe = trained_recipe


def test_report_of_a_real_run(run):
    from synthgen.report import render_report

    page = render_report(run).read_text()
    assert "tiny" in page and page.count("data:image/png;base64,") >= 3


# --- the journal: the manifest's cost grows linearly ---------------------------------------


class DiskRows:
    """Counts the manifest rows put on disk: appended to a journal, and rewritten in whole manifests
    (metadata.jsonl, the imagefolder copy of the manifest, counted apart: one line per image, once per run)."""

    def __init__(self, monkeypatch):
        from synthgen import manifest

        self.appended, self.rewritten, self.rewrites, self.metadata_lines = 0, 0, 0, 0
        append, rewrite = manifest.append_synced, manifest.write_atomic

        def counted_append(path, data):
            self.appended += data.count(b"\n") - (not path.exists())  # a new journal starts with its header
            return append(path, data)

        def counted_rewrite(path, data):
            if path.name == manifest.IMAGEFOLDER_METADATA:
                self.metadata_lines += data.count(b"\n")
                return rewrite(path, data)
            self.rewritten += data.count(b"\n") - 1
            self.rewrites += 1
            return rewrite(path, data)

        monkeypatch.setattr(manifest, "append_synced", counted_append)
        monkeypatch.setattr(manifest, "write_atomic", counted_rewrite)


@pytest.mark.parametrize("n", [8, 32])
def test_manifest_rows_written_grow_linearly_with_n(generator, tmp_path, monkeypatch, n):
    """Every row is journaled once and the manifest rewritten once at the end: 2 rows on disk per image, whatever n.

    (Rewriting the sorted manifest after every batch, as before the journal, wrote n²/(2 x batch) rows.)
    """
    disk = DiskRows(monkeypatch)
    result = sample_dataset(generator, plan_classes(generator, ["Bag", "Sneaker"], n), tmp_path, seed=2, batch_size=4)
    images = sum(result.written.values())
    assert images == 2 * n
    assert disk.appended == images and disk.rewrites == 1 and disk.rewritten == images and disk.metadata_lines == images
    assert len(read_manifest(tmp_path)) == images
    more = sample_dataset(generator, plan_classes(generator, ["Bag", "Sneaker"], n + 4), tmp_path, seed=2, batch_size=4)
    assert sum(more.written.values()) == 8 and disk.appended == images + 8 and disk.rewrites == 2  # one more compaction


def test_rerun_after_a_kill_compacts_the_journal_first(generator, tmp_path):
    """A journal left by a killed run (its last line cut short) is compacted when the next run opens the folder."""
    from synthgen.manifest import journal_path

    sample_dataset(generator, plan_classes(generator, ["Bag"], 8), tmp_path / "whole", seed=4, batch_size=4)
    out = tmp_path / "killed"
    sample_dataset(generator, plan_classes(generator, ["Bag"], 8), out, seed=4, batch_size=4)
    rows = (out / MANIFEST).read_text().splitlines()
    (out / MANIFEST).unlink()
    journal_path(out, MANIFEST).write_text("\n".join(rows[:6]) + "\n" + rows[6][:20])  # header, 5 rows, a torn one
    again = sample_dataset(generator, plan_classes(generator, ["Bag"], 8), out, seed=4, batch_size=4)
    assert again.existing == {"Bag": 5} and again.written == {"Bag": 3}
    assert not journal_path(out, MANIFEST).exists()
    assert (out / MANIFEST).read_bytes() == (tmp_path / "whole" / MANIFEST).read_bytes()


def test_a_batch_is_made_durable_before_the_journal_names_it(generator, tmp_path, monkeypatch):
    """Images are written without an fsync each and synced once per batch: every journaled file was synced
    first, and no file handed to the sync is in the journal yet."""
    import synthgen.sample as sampling
    from synthgen.manifest import journal_path

    out, synced = tmp_path / "o", set()

    def sync_then_check(paths):
        journal = journal_path(out, MANIFEST)
        listed = journal.read_text() if journal.exists() else ""
        assert paths and all(path.is_file() and path.relative_to(out).as_posix() not in listed for path in paths)
        synced.update(path.relative_to(out).as_posix() for path in paths)

    monkeypatch.setattr(sampling, "make_durable", sync_then_check)
    sample_dataset(generator, plan_classes(generator, ["Bag", "Trouser"], 10), out, seed=4, batch_size=4)
    assert {row["file"] for row in read_manifest(out)} == synced and len(synced) == 20


# --- small defects ----------------------------------------------------------------------


def test_missing_ema_weights_are_an_incomplete_checkpoint_not_a_silent_raw_g(run, tmp_path):
    from synthgen.checkpoint import latest_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    checkpoint = latest_checkpoint(copy)
    assert "G_ema" in checkpoint.state["weights_sha256"]
    (checkpoint.path / "G_ema.safetensors").unlink()
    with pytest.raises(SynthgenError, match="G_ema.safetensors: missing.*incomplete"):
        TrainedGenerator(copy, checkpoint="latest")


def test_a_dataset_that_cannot_fit_on_the_disk_is_refused_before_anything_is_written(generator, tmp_path):
    from synthgen.sample import estimated_bytes

    with pytest.raises(SynthgenError, match=r"need about [\d,.]+ [GT]B .* has [\d,.]+ [GM]B free; lower -n"):
        sample_dataset(generator, plan_classes(generator, ["Bag"], 10**10), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The estimate is of the right size: within a factor 2 of what real files and their manifest take.
    sample_dataset(generator, plan_classes(generator, ["Bag"], 64), tmp_path / "small")
    used = sum(p.stat().st_blocks * 512 for p in (tmp_path / "small").rglob("*") if p.is_file())
    estimate = estimated_bytes(64, 1, 28, "png", os.statvfs(tmp_path).f_frsize)
    assert used / 2 <= estimate <= used * 2, (estimate, used)


def test_log_lines_are_not_wrapped_when_output_is_not_a_terminal():
    """`synthgen train ... > log`: each progress line and each table row is one line, however long."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"} | {"PYTHONPATH": str(REPO)}
    progress = subprocess.run([sys.executable, "-c", (
        "from synthgen.cli import TrainProgress, err\n"
        "p = TrainProgress(err); p.start(10, 0)\n"
        "p.update(5, {'step': 5, 'time': 0, 'img_per_s': 300.0, **{f'loss_{k}': 1.0 for k in 'abcdefghijklmnop'}})\n"
        "p.note('x' * 300); p.stop()\n")], cwd=REPO, capture_output=True, text=True, env=env)
    lines = progress.stderr.splitlines()
    assert progress.returncode == 0, progress.stderr
    assert any(line.startswith("step 5/10") and line.rstrip().endswith("loss_p 1.000") for line in lines), lines
    assert "x" * 300 in lines
    keys = subprocess.run([sys.executable, "-m", "synthgen", "recipes", "--keys"], cwd=REPO, capture_output=True, text=True, env=env)
    assert any("train.ema_decay" in line and "EMA decay, ramped up from 0 over the first steps (when ema_halflife_kimg is not set)." in line for line in keys.stdout.splitlines())


def test_an_image_filter_that_refuses_a_class_rejects_it_after_max_draws(generator, tmp_path):
    """A slot still refused after MAX_DRAWS draws rejects its batch with the reason; the other class is written."""
    drawn_for = []

    def no_bags(class_name, images):
        drawn_for.append(class_name)
        return torch.full((len(images),), class_name != "Bag")

    result = sample_dataset(generator, plan_classes(generator, ["Bag", "Sneaker"], 4), tmp_path, batch_size=4, keep=no_bags)
    assert list(result.rejected) == ["Bag"] and f"after {MAX_DRAWS} draws" in result.rejected["Bag"]
    assert drawn_for.count("Bag") == MAX_DRAWS and result.drawn == {"Bag": [4 * MAX_DRAWS, 0], "Sneaker": [4, 4]}
    assert result.written == {"Bag": 0, "Sneaker": 4} and not (tmp_path / "Bag").exists()
