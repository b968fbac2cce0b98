"""Bad input: images, folders, recipes and checkpoints each give one line naming the file or key, a non-zero exit
and no traceback; unreadable files in a dataset are listed and skipped (refused with --strict / data.strict).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from synthgen import checkpoint as ckpt
from synthgen.errors import SynthgenError
from synthgen.imaging import UnreadableImage, load_image, open_image
from synthgen.recipe import Recipe, describe_keys, load_recipe, recipe_to_yaml
from synthgen.train.loop import train
from tests.robustness import badfiles, tally
from tests.robustness.conftest import cli, error_line, refused, small_recipe


@pytest.fixture(scope="module")
def awkward(two_classes, tmp_path_factory) -> tuple[Path, dict[str, bool]]:
    """Two classes of 12 good images each; Bag also holds every awkward and broken file."""
    root = tmp_path_factory.mktemp("awkward")
    for name in ("Bag", "Sneaker"):
        shutil.copytree(two_classes / name, root / name, ignore=lambda d, names: sorted(names)[12:])
    made = badfiles.make(root / "Bag")
    (root / "Bag" / "folder.png").mkdir()  # a folder with an image's name: not a file, ignored
    (root / "Bag" / "loop.png").symlink_to("loop.png")  # a symlink to itself
    (root / "Sneaker" / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(next((two_classes / "Sneaker").iterdir()), root / "Sneaker" / "nested" / "deeper" / "deep.png")
    (root / "Sneaker" / "nested" / "up").symlink_to("..")  # a symlink loop between folders
    (root / "empty-class").mkdir()  # no images: not a class
    return root, made


# --- images -----------------------------------------------------------------------------------


def test_each_awkward_image_is_read_right_or_refused_with_its_reason(awkward):
    root, made = awkward
    bag = root / "Bag"
    for name, readable in made.items():
        pending = tally.bad_input(f"image: {name}")
        if readable:
            tensor = load_image(bag / name, 3, 28, "crop")
            assert tensor.shape == (3, 28, 28) and str(tensor.dtype) == "torch.uint8"
        else:
            with pytest.raises(UnreadableImage) as caught:
                load_image(bag / name, 3, 28, "crop")
            message = str(caught.value)
            assert message.startswith(str(bag / name)) and badfiles.UNREADABLE_REASONS[name] in message and "\n" not in message
        pending.clean()
    assert open_image(bag / "exif-rotated.jpg").size == (20, 30)  # stored 30x20, displayed rotated
    assert open_image(bag / "animated.gif").convert("RGB").getpixel((5, 5)) == (250, 0, 0)  # the first frame
    sixteen = load_image(bag / "sixteen-bit.png", 1, 20, "stretch")
    assert 0 <= int(sixteen.min()) and int(sixteen.max()) > 200  # scaled from 16 bits, not clipped to white
    cmyk = np.asarray(open_image(bag / "cmyk.jpg").convert("RGB"), dtype=np.int16)
    assert abs(cmyk - np.dstack([badfiles.gradient(30, 20)] * 3)).mean() < 8


def test_training_lists_and_skips_unreadable_files(awkward, tmp_path):
    root, made = awkward
    result = train(small_recipe(root, tmp_path, data={"channels": 3}, train={"steps": 2, "checkpoint_every": 2}))
    unreadable = json.loads((result.run_dir / "run.json").read_text())["unreadable"]
    assert sorted(Path(line.split(":")[0]).name for line in unreadable) == sorted(n for n, ok in made.items() if not ok)
    state = ckpt.latest_checkpoint(result.run_dir).state
    assert state["class_names"] == ["Bag", "Sneaker"]  # empty-class has no images
    assert state["num_images"] == 12 + 12 + sum(made.values()) + 1  # the readable awkward files and deep.png


def test_strict_refuses_a_dataset_with_unreadable_files(awkward, tmp_path):
    root, _ = awkward
    recipe = small_recipe(root, tmp_path, data={"strict": True, "channels": 3})
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe))
    refused("dataset: unreadable files with data.strict", "train", tmp_path / "r.yaml", expect="4 unreadable file(s), refused because data.strict is true")
    code, output = cli("data", "inspect", root)
    assert code == 0 and output.count("Bag/") >= 4
    refused("dataset: unreadable files with inspect --strict", "data", "inspect", root, "--strict", expect="4 unreadable file(s) (--strict)")


def test_translate_skips_unreadable_files_and_keeps_the_rest(awkward, pix2pix_run, tmp_path):
    root, made = awkward
    code, output = cli("translate", root / "Bag", tmp_path / "out", "--weights", pix2pix_run)
    assert code == 0 and "Traceback" not in output, output
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {n for n, ok in made.items() if ok} | {p.name for p in root.glob("Bag/test-*.png")} | {"manifest.csv", "metadata.jsonl"}
    for name, ok in made.items():
        if not ok:
            pending = tally.bad_input(f"translate input: {name}")
            assert sum(f"{root / 'Bag' / name}: " in line for line in output.splitlines()) == 1, output
            pending.clean()
    assert Image.open(tmp_path / "out" / "exif-rotated.jpg").size == (20, 30)
    assert Image.open(tmp_path / "out" / "sixteen-bit.png").mode in ("I;16", "I")
    assert Image.open(tmp_path / "out" / "huge-3000x2000.png").size == (3000, 2000)  # tiled
    assert Image.open(tmp_path / "out" / "tiny-1x1.png").size == (1, 1)
    refused("translate: unreadable file with --strict", "translate", root / "Bag", tmp_path / "strict", "--weights", pix2pix_run, "--strict",
            expect=str(root / "Bag"))


def test_paired_evaluation_names_an_unreadable_file(pairs, pix2pix_run, tmp_path):
    broken = tmp_path / "pairs"
    shutil.copytree(pairs, broken)
    victim = sorted((broken / "B").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:40])
    refused("eval --paired: truncated target image", "eval", "--paired", broken, "--weights", pix2pix_run, expect=f"{victim}:")


# --- folders -----------------------------------------------------------------------------------


def test_folders_that_hold_no_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "only-empty-classes" / "a").mkdir(parents=True)
    (tmp_path / "only-empty-classes" / "b").mkdir()
    (tmp_path / "only-junk").mkdir()
    (tmp_path / "only-junk" / "notes.txt").write_text("x")
    for folder in ("empty", "only-empty-classes", "only-junk"):
        refused(f"folder: {folder}", "data", "inspect", tmp_path / folder, expect="no images found")
        recipe = small_recipe(tmp_path / folder, tmp_path / "runs")
        (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe))
        refused(f"folder: {folder} (train)", "train", tmp_path / "r.yaml", expect="no images found")
    refused("folder: does not exist", "data", "inspect", tmp_path / "nowhere", expect="is not a folder")
    refused("folder: eval of folders that do not exist", "eval", "--real", tmp_path / "nowhere", "--fake", tmp_path / "empty", expect="is not a folder")


def test_a_damaged_data_cache_is_decoded_again(two_classes, tmp_path):
    from synthgen.data.loading import cache_dir, load_labelled

    root = tmp_path / "data"
    shutil.copytree(two_classes / "Bag", root / "Bag", ignore=lambda d, names: sorted(names)[8:])
    before = set(cache_dir().glob("*.safetensors"))
    first = load_labelled(root, 28, 1, "crop")
    (entry,) = set(cache_dir().glob("*.safetensors")) - before
    fault = tally.fault("data cache: damaged entry")
    entry.write_bytes(entry.read_bytes()[:100])
    again = load_labelled(root, 28, 1, "crop")
    assert again.images.equal(first.images) and again.labels.equal(first.labels)
    fault.survived()


def test_class_names_with_spaces_unicode_and_dots_round_trip(two_classes, tmp_path):
    names = ["a b", "ünïcødé 猫", "v1.2..final"]
    root = tmp_path / "data"
    for name, source in zip(names, ("Bag", "Sneaker", "Bag")):
        shutil.copytree(two_classes / source, root / name, ignore=lambda d, files: sorted(files)[10:])
    run = train(small_recipe(root, tmp_path / "runs", train={"steps": 2, "checkpoint_every": 2})).run_dir
    out = tmp_path / "out"
    pending = tally.bad_input("folder: class names with spaces, unicode, dots")
    code, output = cli("sample", "--weights", run, "--balanced", "-n", "3", "--no-gate", "--out", out)
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(names)
    assert all(len(list((out / name).iterdir())) == 3 for name in names)
    pending.clean()


def test_class_names_from_a_checkpoint_cannot_escape_the_output_folder(cgan_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cgan_run, run)
    for evil in ("../../escaped", "/tmp/escaped", "..", "a/b", "a\\b", ""):
        for state_file in (run / "checkpoints").glob("step-*/state.json"):
            state = json.loads(state_file.read_text())
            state["class_names"] = [evil, "Sneaker"]
            state_file.write_text(json.dumps(state))
        refused(f"checkpoint: class name {evil!r}", "sample", "--weights", run, "--checkpoint", "12", "--balanced", "-n", "2", "--no-gate",
                "--out", tmp_path / "out" / "inner", expect="is not a plain folder name")
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists() and not (tmp_path / "out").exists()
    refused("sample: --class with a path", "sample", "--weights", cgan_run, "--class", "../../x", "--no-gate", "--out", tmp_path / "o2",
            expect="unknown class")


def test_a_tampered_manifest_is_ignored_row_by_row(cgan_run, tmp_path):
    out = tmp_path / "out"
    assert cli("sample", "--weights", cgan_run, "--balanced", "-n", "4", "--no-gate", "--out", out)[0] == 0
    with open(out / "manifest.csv", "a") as handle:
        handle.write("../../etc/passwd,Bag,1,x,,0,passed\nBag/Bag_notanumber.png,Bag,1,x,,0,passed\nshort,row\n")
    pending = tally.bad_input("sample: tampered manifest.csv rows")
    code, output = cli("sample", "--weights", cgan_run, "--balanced", "-n", "5", "--no-gate", "--out", out)
    assert code == 0, output
    assert sorted(p.name for p in (out / "Bag").iterdir()) == [f"Bag_{i:06d}.png" for i in range(5)]
    pending.clean()
    (out / "manifest.csv").write_bytes(b"\xff\xfe\x00garbage")
    refused("sample: undecodable manifest.csv", "sample", "--weights", cgan_run, "--balanced", "-n", "5", "--no-gate", "--out", out,
            expect="unreadable manifest")


# --- recipes -----------------------------------------------------------------------------------

RECIPE_ERRORS = {
    # what: (yaml text or override, what the one line must contain)
    "wrong type": (["--set", "train.steps=many"], "train.steps"),
    "negative size": (["--set", "data.image_size=-32"], "data.image_size"),
    "zero size": (["--set", "data.image_size=0"], "data.image_size"),
    "zero batch": (["--set", "train.batch_size=0"], "train.batch_size"),
    "negative z": (["--set", "model.z_dim=-1"], "model.z_dim"),
    "unknown method": (["--set", "method=gan"], "method"),
    "unknown loss": (["--set", "loss.type=wasserstein"], "loss.type"),
    "unknown key": (["--set", "train.step=5"], "did you mean 'train.steps'"),
    "missing data root": (["--set", "data.root=/no/such/folder"], "/no/such/folder"),
    "empty data root": (["--set", "data.root="], "data.root: not set"),
    "override without =": (["--set", "train.steps"], "expected key=value"),
    "override into a value": (["--set", "seed.x=1"], "'seed' is not a section"),
}


@pytest.mark.parametrize("what", list(RECIPE_ERRORS))
def test_bad_recipe_values(two_classes, tmp_path, what):
    args, expect = RECIPE_ERRORS[what]
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(recipe_to_yaml(small_recipe(two_classes, tmp_path)))
    refused(f"recipe: {what}", "train", recipe_file, *args, expect=expect)


RECIPE_FILES = {
    "not YAML": (b"train: {steps: [1, 2\n", "not valid YAML"),
    "not UTF-8": (b"name: \xff\xfe\n", "expected a UTF-8 YAML file"),
    "a list": (b"- 1\n- 2\n", "a recipe must be a mapping"),
    "a section that is a number": (b"train: 5\n", "train"),
}


@pytest.mark.parametrize("what", list(RECIPE_FILES))
def test_bad_recipe_files(tmp_path, what):
    data, expect = RECIPE_FILES[what]
    (tmp_path / "r.yaml").write_bytes(data)
    refused(f"recipe file: {what}", "train", tmp_path / "r.yaml", expect=expect)


def test_debug_shows_the_traceback(tmp_path):
    code, output = cli("--debug", "train", tmp_path / "missing.yaml")
    assert code == 2 and "Traceback" in output and "synthgen.errors.SynthgenError" in output
    code, output = cli("train", tmp_path / "missing.yaml")
    assert code == 2 and "Traceback" not in output and output.count("\n") == 1


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path, monkeypatch):
    from synthgen.data import inspect

    monkeypatch.setattr(inspect, "inspect_folder", lambda folder: 1 / 0)
    code, output = cli("data", "inspect", tmp_path)
    assert code == 1 and "ZeroDivisionError: division by zero (unexpected; `synthgen --debug ...` shows the traceback)" in error_line(output)


def test_a_folder_as_recipe(tmp_path):
    refused("recipe file: a folder", "train", tmp_path, expect="no such recipe file")


def test_resume_refuses_another_recipe_or_another_dataset(two_classes, cgan_run, tmp_path):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(cgan_run, run)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(recipe_to_yaml(small_recipe(two_classes, tmp_path / "runs", train={"steps": 15})))
    refused("resume: other model width", "train", recipe_file, "--resume", "--set", "model.g_channels=16", expect="model.g_channels: 8 in the run, 16 now")
    refused("resume: other seed and loss", "train", recipe_file, "--resume", "--set", "seed=5", "--set", "loss.type=hinge",
            expect="differs from the run's")
    other = tmp_path / "other"
    shutil.copytree(two_classes / "Bag", other / "Trouser")
    shutil.copytree(two_classes / "Sneaker", other / "Sandal")
    refused("resume: other class list", "train", recipe_file, "--resume", "--set", f"data.root={other}", expect="was trained on ['Bag', 'Sneaker']")
    code, output = cli("train", recipe_file, "--resume")  # more steps: allowed
    assert code == 0, output


KEYS = sorted(key for key, _, _ in describe_keys())
LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                 st.sampled_from(["auto", "cgan", "pix2pix", "ns", "hinge", "-1", "0", "1e9"]))
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
SECTION = st.dictionaries(st.sampled_from([k.rsplit(".", 1)[-1] for k in KEYS]) | st.text(max_size=6), VALUE, max_size=4)
DOCUMENT = st.dictionaries(st.sampled_from(sorted({k.split(".")[0] for k in KEYS})) | st.text(max_size=5), SECTION | VALUE, max_size=5) | VALUE


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=DOCUMENT, overrides=st.lists(st.sampled_from(KEYS).map(lambda k: k + "=") | st.text(max_size=12), max_size=2),
       value=st.text(max_size=6))
def test_fuzzed_recipes_load_or_fail_with_one_line(tmp_path_factory, document, overrides, value):
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document))
    pending = tally.bad_input("recipe: fuzzed (hypothesis)")
    try:
        assert isinstance(load_recipe(path, [o + value if o.endswith("=") else o for o in overrides]), Recipe)
    except SynthgenError as exc:
        assert str(exc)  # the CLI prints it as one line (newlines in a quoted value included)
    pending.clean()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_fuzzed_recipe_bytes_load_or_fail_with_one_line(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz-bytes.yaml"
    path.write_bytes(data)
    pending = tally.bad_input("recipe: fuzzed bytes (hypothesis)")
    try:
        load_recipe(path)
    except SynthgenError:
        pass
    pending.clean()


# --- checkpoints --------------------------------------------------------------------------------


def _damage(run: Path, how: str) -> None:
    latest = run / "checkpoints" / "step-0000012"
    weights = latest / "G_ema.safetensors"
    state_file = latest / "state.json"
    state = json.loads(state_file.read_text())
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "one byte of the weights changed":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "truncated weights, hash updated to match":
        weights.write_bytes(weights.read_bytes()[:1000])
        import hashlib

        state["weights_sha256"]["G_ema"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    elif how == "recorded hash edited":
        state["weights_sha256"]["G_ema"] = "0" * 64
    elif how == "another image size":
        state["recipe"]["data"]["image_size"] = 32
    elif how == "another class list":
        state["class_names"] = ["Bag", "Sneaker", "Sandal"]
    elif how == "state.json cut short":
        state_file.write_text(state_file.read_text()[:100])
        return
    elif how == "state.json without the recipe":
        del state["recipe"]
    state_file.write_text(json.dumps(state))


CHECKPOINT_DAMAGE = {
    "truncated weights": "differs from the",
    "one byte of the weights changed": "differs from the",
    "truncated weights, hash updated to match": "unreadable weights",
    "recorded hash edited": "differs from the",
    "another image size": "weights do not fit the recipe's model",
    "another class list": "weights do not fit the recipe's model",
    "state.json cut short": "unreadable checkpoint state",
    "state.json without the recipe": "'recipe' missing",
}


@pytest.mark.parametrize("how", list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoints_are_refused(cgan_run, tmp_path, how):
    run = tmp_path / "run"
    shutil.copytree(cgan_run, run)
    _damage(run, how)
    for which in ("12", "best"):  # by its step, and found as the newest
        refused(f"checkpoint: {how}", "sample", "--weights", run, "--checkpoint", which, "--balanced", "-n", "2", "--no-gate",
                "--out", tmp_path / "out", expect=CHECKPOINT_DAMAGE[how])
    assert not (tmp_path / "out").exists()


def test_a_damaged_checkpoint_is_refused_by_resume_and_translate(cgan_run, pix2pix_run, tmp_path, pairs):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(cgan_run, run)
    weights = run / "checkpoints" / "step-0000012" / "D.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    recipe_file = tmp_path / "r.yaml"
    state = json.loads((run / "checkpoints" / "step-0000012" / "state.json").read_text())
    state["recipe"]["train"]["out_dir"] = str(tmp_path / "runs")
    recipe_file.write_text(yaml.safe_dump(state["recipe"]))
    refused("checkpoint: damaged, --resume", "train", recipe_file, "--resume", "--set", "train.steps=15", expect="D.safetensors: sha256")
    p2p = tmp_path / "p2p"
    shutil.copytree(pix2pix_run, p2p)
    g = next((p2p / "checkpoints").glob("step-*")) / "G.safetensors"
    g.write_bytes(g.read_bytes()[:-7] + b"\0" * 7)
    refused("checkpoint: damaged, translate", "translate", pairs / "A", tmp_path / "t", "--weights", p2p, expect="G.safetensors: sha256")


def test_legacy_pickle_weights_are_refused_unread(tmp_path):
    import torch

    marker = tmp_path / "ran"

    class Payload:  # what a malicious pickle does: run code when loaded
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"weights": Payload()}, tmp_path / "model.pt")
    refused("checkpoint: legacy .pt file", "sample", "--weights", tmp_path / "model.pt", "--balanced", "-n", "1", "--out", tmp_path / "o",
            expect="a PyTorch pickle file; synthgen loads only safetensors")
    (tmp_path / "folder").mkdir()
    shutil.copy(tmp_path / "model.pt", tmp_path / "folder" / "generator.pth")
    refused("checkpoint: folder of .pth files", "translate", tmp_path, tmp_path / "t", "--weights", tmp_path / "folder",
            expect="generator.pth: a PyTorch pickle file")
    assert not marker.exists(), "the pickle was loaded"
