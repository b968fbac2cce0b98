"""pix2pix and CycleGAN on real images: they learn, resume exactly and write grids; the trained pix2pix translates folders."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from synthgen.checkpoint import latest_checkpoint
from synthgen.errors import SynthgenError
from synthgen.manifest import read_rows
from synthgen.train.loop import train
from synthgen.translate import (
    Translator,
    evaluate_paired,
    read_for_model,
    translate_folder,
)
from tests.cli import synthgen
from tests.conftest import load_imagefolder, single_thread, tiny_recipe
from tests.test_train import assert_same_tensors, final_tensors
from tests.translate_helpers import tiny_translation_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_pix2pix(edge_pairs, tmp_path_factory):
    """A tiny pix2pix trained 300 steps on edges -> Fashion-MNIST image (about 15 s on one core)."""
    recipe = tiny_translation_recipe(
        "pix2pix", edge_pairs / "train", tmp_path_factory.mktemp("p2p"), name="edges",
        train={"steps": 300, "batch_size": 8, "lr_g": 1e-3, "lr_d": 1e-3, "log_every": 50, "sample_every": 300, "checkpoint_every": 300},
    )
    with single_thread():  # module-scoped, so the `one_thread` fixture does not reach it
        return train(recipe).run_dir


def test_pix2pix_beats_the_identity_baseline_on_held_out_pairs(trained_pix2pix, edge_pairs):
    scores = evaluate_paired(trained_pix2pix, edge_pairs / "test")
    assert scores.pairs == 100
    print(f"held-out L1 model {scores.model.l1:.4f} vs identity {scores.identity.l1:.4f}; "
          f"PSNR {scores.model.psnr:.2f} vs {scores.identity.psnr:.2f}; SSIM {scores.model.ssim:.3f} vs {scores.identity.ssim:.3f}")
    assert scores.model.l1 < 0.8 * scores.identity.l1
    assert scores.model.psnr > scores.identity.psnr + 2
    assert scores.model.ssim > scores.identity.ssim


def test_pix2pix_grid_is_input_output_target(trained_pix2pix):
    grid = Image.open(trained_pix2pix / "grids" / "step-0000300.png")
    # 6 rows of 3 columns of 32 px with make_grid's 2 px padding.
    assert grid.size == (3 * 34 + 2, 6 * 34 + 2)
    state = latest_checkpoint(trained_pix2pix).state
    assert state["domains"] == {"A": {"images": 500, "channels": 1}, "B": {"images": 500, "channels": 1}}
    assert set(state["weights_sha256"]) == {"G", "D"}


def test_cyclegan_cycle_error_falls(fashion_test_split, tmp_path):
    """Two unpaired domains from the demo data (sneakers, ankle boots): reconstruction A -> B -> A improves."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "trainA").symlink_to(fashion_test_split / "Sneaker")
    (tmp_path / "data" / "trainB").symlink_to(fashion_test_split / "Ankle-boot")
    recipe = tiny_translation_recipe(
        "cyclegan", tmp_path / "data", tmp_path / "runs",
        train={"steps": 60, "batch_size": 4, "log_every": 10, "sample_every": 60, "checkpoint_every": 60, "lr_decay": "linear", "pool_size": 10},
    )
    result = train(recipe)
    lines = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    cycle = [line["cycle"] for line in lines]
    print(f"cycle L1 (in [-1, 1] units) per 10 steps: {cycle}")
    assert cycle[-1] < 0.6 * cycle[0]
    grid = Image.open(result.run_dir / "grids" / "step-0000060.png")
    assert grid.size == (3 * 34 + 2, 12 * 34 + 2)  # 6 rows A -> B -> A, then 6 rows B -> A -> B
    assert {"pool_A", "pool_B"} <= set(latest_checkpoint(result.run_dir).state["weights_sha256"])


@pytest.mark.parametrize("method", ["pix2pix", "cyclegan"])
def test_resumed_translation_run_equals_uninterrupted_run(edge_pairs, tmp_path, method):
    """Weights, optimisers, RNG (dropout), augmentation draws, the history pool and the LR schedule all resume.

    The run is "interrupted" after step 4 by removing its later checkpoint, so the
    resumed run keeps the same train.steps and with it the same LR schedule.
    """
    extra = {"pool_size": 3, "lr_decay": "linear", "batch_size": 2}  # the pool fills at step 2 and swaps after
    recipe = tiny_translation_recipe(method, edge_pairs / "train", tmp_path / "a", train={**extra, "steps": 6})
    whole = train(recipe)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "tiny" / "checkpoints" / "step-0000006")
    resumed = train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"out_dir": str(tmp_path / "b")})}), resume=True)
    assert resumed.step == 6
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))


# --- synthgen translate on a folder of awkward files ----------------------------------------


def make_awkward_folder(root: Path, fashion: Path) -> dict[str, tuple[tuple[int, int], str]]:
    """Real demo images saved in many sizes and modes, plus one corrupt file; returns relative path -> (size, mode)."""
    sources = sorted((fashion / "Bag").glob("*.png"))[:4]
    base = [Image.open(p).convert("L") for p in sources]
    files = {
        "odd/333x517.jpg": base[0].resize((333, 517)).convert("RGB"),
        "gray.png": base[1],
        "nested/deeper/rgba.png": _with_alpha(base[2].resize((45, 61)).convert("RGB")),
        "palette.png": base[3].resize((64, 40)).convert("RGB").quantize(16),
        "gray-alpha.png": _with_alpha(base[0]).convert("LA"),
        "wide.png": base[1].resize((1100, 70)),  # longer than 1024 px: translated in tiles
    }
    for relative, image in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return {relative: (image.size, image.mode) for relative, image in files.items()}


def _with_alpha(image: Image.Image) -> Image.Image:
    alpha = Image.linear_gradient("L").resize(image.size)
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def test_translate_cli_keeps_names_sizes_and_modes_and_reports_a_corrupt_file(trained_pix2pix, fashion_test_split, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    expected = make_awkward_folder(src, fashion_test_split)
    command = ["translate", src, out, "--weights", trained_pix2pix, "--batch-size", "2"]
    done = synthgen(*command)
    assert done.returncode == 0, done.stderr
    assert "broken.png" in done.stderr and "Traceback" not in done.stderr
    assert re.search(r"7\s*│\s*6\s*│\s*0\s*│\s*1", done.stdout), done.stdout  # images, translated, kept, unreadable
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted([*expected, "manifest.csv", "metadata.jsonl"])  # the images and their index
    for relative, (size, mode) in expected.items():
        with Image.open(out / relative) as image:
            assert (image.size, image.mode) == (size, mode), relative
    with Image.open(src / "nested/deeper/rgba.png") as before, Image.open(out / "nested/deeper/rgba.png") as after:
        assert before.getchannel("A").tobytes() == after.getchannel("A").tobytes()  # alpha carried over exactly

    # A second run keeps what is there; --overwrite translates again.
    again = synthgen(*command)
    assert again.returncode == 0 and re.search(r"7\s*│\s*0\s*│\s*6\s*│\s*1", again.stdout), again.stdout


def test_translate_continues_a_folder_and_skips_its_own_output(trained_pix2pix, edge_pairs, tmp_path):
    translator = Translator(trained_pix2pix)
    src = edge_pairs / "test" / "A"
    first = translate_folder(translator, src, tmp_path / "out")
    assert len(first.translated) == 100 and not first.unreadable
    (tmp_path / "out" / first.translated[0]).unlink()  # as if the run had stopped before this file
    second = translate_folder(translator, src, tmp_path / "out")
    assert second.translated == [first.translated[0]] and len(second.existing) == 99
    # An output folder inside the input folder is never read back as input.
    inside = translate_folder(translator, tmp_path / "out", tmp_path / "out" / "again")
    again = translate_folder(translator, tmp_path / "out", tmp_path / "out" / "again")
    assert len(inside.translated) == 100 and len(again.existing) == 100 and not again.translated


def test_translate_indexes_its_outputs_for_imagefolder(trained_pix2pix, edge_pairs, tmp_path):
    """OUT/manifest.csv and metadata.jsonl: one row per output with its source and checkpoint, kept right
    through a continued run, --overwrite, and outputs of a version that wrote no index."""
    translator = Translator(trained_pix2pix)
    src, out = edge_pairs / "test" / "A", tmp_path / "out"
    first = translate_folder(translator, src, out)
    rows = {row["file"]: row for row in read_rows(out, "manifest.csv")}
    assert sorted(rows) == sorted(first.translated) and all(rows[f]["source"] == f for f in rows)
    assert {(row["checkpoint_sha256"], row["step"], row["direction"]) for row in rows.values()} == {(translator.sha256, str(translator.step), "AtoB")}
    hf = load_imagefolder(out, tmp_path / "hf", data_files="**")  # the inputs' names start with "test-"
    assert len(hf) == 100 and set(hf.column_names) == {"image", "source", "direction", "checkpoint_sha256", "step"}
    translate_folder(translator, src, out, overwrite=True)
    assert len(read_rows(out, "manifest.csv")) == 100 and (out / "metadata.jsonl").read_text().count("\n") == 100  # replaced, not doubled
    # Outputs written before there was an index are kept and listed, their checkpoint unknown.
    (out / "manifest.csv").unlink()
    (out / first.translated[0]).unlink()
    translate_folder(translator, src, out)
    rows = {row["file"]: row for row in read_rows(out, "manifest.csv")}
    assert len(rows) == 100 and rows[first.translated[0]]["checkpoint_sha256"] == translator.sha256
    assert sum(row["checkpoint_sha256"] == "" for row in rows.values()) == 99


def test_batched_translation_equals_one_at_a_time(trained_pix2pix, edge_pairs):
    translator = Translator(trained_pix2pix)
    images = [read_for_model(p, 1)[0] for p in sorted((edge_pairs / "test" / "A").rglob("*.png"))[:6]]
    together = translator.translate(images)
    for image, batched in zip(images, together):
        assert torch.equal(translator.translate([image])[0], batched)


def test_translate_refuses_what_it_cannot_do(trained_pix2pix, four_classes, tmp_path):
    with pytest.raises(SynthgenError, match="trained AtoB"):
        Translator(trained_pix2pix, "BtoA")
    cgan = train(tiny_recipe(four_classes, tmp_path, train={"steps": 1}))
    with pytest.raises(SynthgenError, match="cgan run"):
        Translator(cgan.run_dir)


def test_a_pix2pix_trained_b_to_a_maps_b_channels_to_a_channels(tmp_path, fashion_test_split):
    """B (RGB photos) -> A (gray): the translator takes 3 channels and gives 1; gray outputs stay gray files."""
    for i, path in enumerate(sorted((fashion_test_split / "Dress").glob("*.png"))[:4]):
        image = Image.open(path)
        for side, picture in (("A", image), ("B", image.convert("RGB"))):
            (tmp_path / "pairs" / side).mkdir(parents=True, exist_ok=True)
            picture.save(tmp_path / "pairs" / side / f"{i}.png")
    recipe = tiny_translation_recipe("pix2pix", tmp_path / "pairs", tmp_path / "runs", data={"direction": "BtoA"}, train={"steps": 2})
    translator = Translator(train(recipe).run_dir)
    assert (translator.direction, translator.in_channels, translator.out_channels) == ("BtoA", 3, 1)
    result = translate_folder(translator, tmp_path / "pairs" / "B", tmp_path / "out")
    assert len(result.translated) == 4
    assert Image.open(tmp_path / "out" / "0.png").mode == "L"  # the network makes gray images: the colour follows it
    with pytest.raises(SynthgenError, match="must not be the input folder"):
        translate_folder(translator, tmp_path / "out", tmp_path / "out")


def test_translated_outputs_are_closer_to_the_target_domain_than_the_inputs(trained_pix2pix, edge_pairs, tmp_path):
    """`translate --gate`'s figures: KID of outputs vs real target images, beside the edge maps themselves."""
    from synthgen.metrics import evaluate as ev

    translate_folder(Translator(trained_pix2pix), edge_pairs / "test" / "A", tmp_path / "out")
    steps = ["gate.domain_steps=60"]
    outputs = ev.load_folders(edge_pairs / "test" / "B", tmp_path / "out", overrides=steps, pooled=True)
    inputs = ev.load_folders(edge_pairs / "test" / "B", edge_pairs / "test" / "A", overrides=steps, pooled=True)
    classifier = ev.extractor_for(outputs, "domain")
    kid_outputs = ev.evaluate(outputs, classifier).metrics["kid"]
    kid_inputs = ev.evaluate(inputs, classifier).metrics["kid"]
    print(f"KID to target: outputs {kid_outputs['generated']:.4f}, edge inputs {kid_inputs['generated']:.4f}, real {kid_outputs['real']:.4f}")
    assert kid_outputs["generated"] < kid_inputs["generated"]


def test_eval_paired_cli_prints_model_beside_identity(trained_pix2pix, edge_pairs):
    run = lambda *a: synthgen("eval", *a)  # noqa: E731
    done = run("--paired", edge_pairs / "test", "--weights", trained_pix2pix)
    assert done.returncode == 0, done.stderr
    assert "identity (input as output)" in done.stdout and "100 pairs" in done.stdout
    missing = run("--paired", edge_pairs / "test")
    assert missing.returncode == 2 and "--weights" in missing.stderr and "Traceback" not in missing.stderr
